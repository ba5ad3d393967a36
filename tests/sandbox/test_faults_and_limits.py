"""Rate limits, fault knobs and request counters."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from sandbox.server import SandboxServer
from tests.sandbox.client import KG, RP, KnoxClient, new_imei


def test_knox_guard_rate_limit(make_sandbox: Callable[..., SandboxServer]) -> None:
    server = make_sandbox(rate_limit=5, kdp_rate_limit=0)
    c = KnoxClient(server.url, server.credentials_path)
    token = c.api_token()
    codes = [c.call("GET", KG + "/authorization", headers={"x-knox-apitoken": token}).status_code for _ in range(8)]
    assert codes[:5] == [200] * 5
    assert 429 in codes[5:]
    r = c.call("GET", KG + "/authorization", headers={"x-knox-apitoken": token})
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["result"] == "FAIL"
    assert r.json()["error"]["code"] == 4290000
    # KDP has its own budget (off here).
    assert c.call("GET", RP + "/customers", headers={"x-knox-apitoken": token}).status_code == 200
    # Another token has its own budget too.
    other = c.api_token(renew=True)
    assert c.call("GET", KG + "/authorization", headers={"x-knox-apitoken": other}).status_code == 200
    assert c.state()["counters"]["rate_limited"] >= 4
    time.sleep(1.05)
    assert c.call("GET", KG + "/authorization", headers={"x-knox-apitoken": token}).status_code == 200


def test_kdp_rate_limit(make_sandbox: Callable[..., SandboxServer]) -> None:
    server = make_sandbox(rate_limit=0, kdp_rate_limit=3)
    c = KnoxClient(server.url, server.credentials_path)
    token = c.api_token()
    codes = [c.call("GET", RP + "/customers", headers={"x-knox-apitoken": token}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = c.call("GET", RP + "/customers", headers={"x-knox-apitoken": token})
    assert r.status_code == 429
    assert "Retry-After" in r.headers
    assert set(r.json()) == {"errorId", "code", "message", "data"}
    # The Gen1 key and OAuth tokens are counted per key/token as well.
    gen1 = {"resellerId": c.creds["gen1_reseller_id"]}
    codes = [c.gen1("POST", "/bulkenroll/v1/reseller/customers", json=gen1).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    bearer = {"Authorization": "Bearer " + c.oauth_token().json()["access_token"]}
    codes = [c.call("GET", RP + "/customers", headers=bearer).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert c.state()["counters"]["rate_limited"] == 4


def test_the_default_limits_are_the_documented_ones(make_sandbox: Callable[..., SandboxServer]) -> None:
    server = make_sandbox()
    state = requests.get(server.url + "/_sandbox/state", timeout=10).json()
    assert state["config"]["rate_limit"] == 100
    assert state["config"]["kdp_rate_limit"] == 10


def _set_faults(client: KnoxClient, **knobs: float) -> None:
    r = client.call("POST", "/_sandbox/faults", json=knobs)
    assert r.status_code == 200, r.text


def test_error_fault_has_no_effect(client: KnoxClient) -> None:
    client.api_token()  # minted before the faults: token requests are Knox paths too
    _set_faults(client, error=1)
    body = client.upload_body([new_imei()])
    r = client.kdp("PUT", "/devices/upload", json=body)
    assert r.status_code in (500, 503)
    assert r.json()["code"] in (50000000, 50300000)
    r = client.kg("GET", "/authorization")
    assert r.status_code in (500, 503)
    assert r.json()["result"] == "FAIL"
    _set_faults(client)
    assert client.state()["kdp"]["transactions"] == {}
    assert client.state()["counters"]["faults"]["error"] == 2


def test_throttle_fault(client: KnoxClient) -> None:
    _set_faults(client, throttle=1)
    r = client.kg("GET", "/authorization")
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"
    assert r.json()["error"]["code"] == 4290000
    _set_faults(client)
    assert client.state()["counters"]["faults"]["throttle"] == 1


def test_reset_fault_drops_the_connection_without_effect(client: KnoxClient) -> None:
    _set_faults(client, reset=1)
    body = client.upload_body([new_imei()])
    with pytest.raises(requests.ConnectionError):
        client.kdp("PUT", "/devices/upload", json=body)
    _set_faults(client)
    assert client.state()["kdp"]["transactions"] == {}


def test_truncate_fault_applies_the_effect(client: KnoxClient) -> None:
    body = client.upload_body([new_imei()])
    _set_faults(client, truncate=1)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        client.kdp("PUT", "/devices/upload", json=body)
    _set_faults(client)
    # Outcome unknown to the client, but the transaction exists; resending it is idempotent.
    assert len(client.state()["kdp"]["transactions"]) == 1
    assert client.kdp("PUT", "/devices/upload", json=body).status_code == 200
    assert len(client.state()["kdp"]["transactions"]) == 1


def test_garbage_fault_answers_200_with_undocumented_bodies_and_no_effect(client: KnoxClient) -> None:
    client.api_token()
    _set_faults(client, garbage=1)
    seen = set()
    for _ in range(30):
        body = client.upload_body([new_imei()])
        r = client.kdp("PUT", "/devices/upload", json=body)
        assert r.status_code == 200
        kind = r.headers["Content-Type"].split(";")[0]
        seen.add(kind)
        if kind == "text/html":
            assert r.text.startswith("<!DOCTYPE html>")
        elif kind == "application/json":
            with pytest.raises(ValueError):
                r.json()
        else:
            assert b"<!ENTITY lol1" in r.content
    _set_faults(client)
    assert seen == {"text/html", "application/json", "application/xml"}
    state = client.state()
    assert state["kdp"]["transactions"] == {} and state["counters"]["faults"]["garbage"] == 30


def test_latency_fault(client: KnoxClient) -> None:
    """Counted, not timed (tests assert behaviour, never a duration): each delayed answer adds to the counter."""

    def delayed() -> int:
        return client.state()["counters"]["faults"].get("latency", 0)

    _set_faults(client, latency=0.3)
    before = delayed()
    assert client.kg("GET", "/authorization").status_code == 200  # the token request and the call: both delayed
    after = delayed()
    assert after > before
    # The inspection endpoints are never slowed down or faulted.
    _set_faults(client, latency=0.3, error=1, reset=1)
    assert client.call("GET", "/_sandbox/state").status_code == 200
    assert client.call("GET", "/_sandbox/state").json()["counters"]["faults"].get("latency", 0) == after
    _set_faults(client)


def test_faults_endpoint_round_trip(client: KnoxClient) -> None:
    _set_faults(client, error=0.25, latency=0.1)
    assert client.call("GET", "/_sandbox/faults").json() == {
        "error": 0.25,
        "throttle": 0.0,
        "reset": 0.0,
        "truncate": 0.0,
        "garbage": 0.0,
        "latency": 0.1,
    }
    assert client.call("POST", "/_sandbox/faults", json={"bogus": 1}).status_code == 400
    assert client.call("POST", "/_sandbox/faults", json={"error": 2}).status_code == 400
    _set_faults(client)


def test_faults_from_a_spec_string(make_sandbox: Callable[..., SandboxServer]) -> None:
    server = make_sandbox(faults="throttle=1, latency=0")
    r = requests.get(server.url + KG + "/authorization", timeout=10)
    assert r.status_code == 429
    with pytest.raises(ValueError):
        SandboxServer(server.app.state_dir, faults="nonsense")


def test_faults_apply_to_efota_in_its_shape(client: KnoxClient) -> None:
    token = client.efota_token().json()["access_token"]
    _set_faults(client, error=1)
    r = client.efota("licenseInfo", "<B2bLicenseInfoVO/>", token=token)
    assert r.status_code in (500, 503)
    assert b"<code>FUD_9" in r.content
    _set_faults(client)


def test_counters(client: KnoxClient) -> None:
    client.kg("GET", "/authorization")
    client.kg("GET", "/authorization")
    client.kdp("GET", "/customers")
    counters = client.state()["counters"]
    assert counters["by_path"]["/kcs/v1.1/kg/authorization"] == 2
    assert counters["by_path"]["/kcs/v1/rp/customers"] == 1
    assert counters["requests"] == 3
    assert counters["rate_limited"] == 0
    assert counters["duplicate_device_submissions"] == 0
