"""State across restarts, reset, the inspection view and large registries."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from sandbox.server import SandboxServer
from sandbox.testing import running_sandbox
from tests.sandbox.client import KnoxClient, new_imei


def test_first_start_writes_keys_and_credentials(tmp_path: Path) -> None:
    with running_sandbox(tmp_path, process_delay=0.1) as server:
        keys = json.loads((tmp_path / "keys.json").read_text())
        assert set(keys) == {"Private", "Public", "Identifier"}
        assert keys["Public"].startswith("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA")
        creds = json.loads((tmp_path / "credentials.json").read_text())
        assert creds["base_url"] == server.url
        assert Path(creds["keys_file"]) == (tmp_path / "keys.json").resolve()
        for name in (
            "reseller_id",
            "client_identifier",
            "gen1_api_key",
            "gen1_reseller_id",
            "oauth",
            "customers",
            "efota",
            "guard",
            "second_reseller",
        ):
            assert name in creds
        assert len(creds["customers"]) == 5
        assert sum(c["status"] == "Pending" for c in creds["customers"]) == 1
        assert all(2 <= len(c["profileAliases"]) <= 4 for c in creds["customers"])
        assert set(creds["oauth"]) >= {"client_id", "client_secret"}
        assert set(creds["efota"]) >= {
            "client_id",
            "client_secret",
            "mdm_id",
            "customer_id",
            "license",
            "expired_license",
        }
        assert creds["second_reseller"]["device_ids"]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    device = new_imei()
    with running_sandbox(tmp_path, process_delay=0.1, kdp_rate_limit=0) as server:
        c = KnoxClient(server.url, server.credentials_path)
        token = c.api_token()
        body = c.upload_body([device])
        c.kdp("PUT", "/devices/upload", json=body).raise_for_status()
        c.wait_complete(body["transactionId"])
        pending = next(d for d in c.creds["guard"]["devices"] if d["state"] == "Pending")
        c.kg("POST", "/devices/reject", json={"deviceUid": pending["deviceUid"]}).raise_for_status()
        keys_before = (tmp_path / "keys.json").read_text()
    with running_sandbox(tmp_path, process_delay=0.1, kdp_rate_limit=0) as server:
        c = KnoxClient(server.url, server.credentials_path)
        assert (tmp_path / "keys.json").read_text() == keys_before
        state = c.state()
        assert state["kdp"]["devices"][device]["transactionId"] == body["transactionId"]
        assert state["guard"]["devices"][pending["deviceUid"]]["state"] == "Rejected"
        # Tokens are remembered too.
        assert c.call("GET", "/kcs/v1/rp/customers", headers={"x-knox-apitoken": token}).status_code == 200
        assert c.status(body["transactionId"])["devices"]["transactions"][0]["state"] == "Complete"


def test_progress_survives_a_restart(tmp_path: Path) -> None:
    with running_sandbox(tmp_path, process_delay=0.5, kdp_rate_limit=0) as server:
        c = KnoxClient(server.url, server.credentials_path)
        body = c.upload_body([new_imei()])
        c.kdp("PUT", "/devices/upload", json=body).raise_for_status()
    with running_sandbox(tmp_path, process_delay=0.5, kdp_rate_limit=0) as server:
        c = KnoxClient(server.url, server.credentials_path)
        assert c.wait_complete(body["transactionId"])["state"] == "Complete"


def test_state_is_written_while_running(make_sandbox: Callable[..., SandboxServer], tmp_path: Path) -> None:
    server = make_sandbox(tmp_path / "live", kdp_rate_limit=0)
    c = KnoxClient(server.url, server.credentials_path)
    body = c.upload_body([new_imei()])
    c.kdp("PUT", "/devices/upload", json=body).raise_for_status()
    deadline = time.monotonic() + 5
    key = f"{body['resellerId']}/{body['transactionId']}"
    path = tmp_path / "live" / "state.json"
    while True:
        # Written by the persister about once a second, atomically (never seen half-written).
        if path.exists() and key in json.loads(path.read_text())["kdp"]["transactions"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_longer_save_interval_writes_on_stop(make_sandbox: Callable[..., SandboxServer], tmp_path: Path) -> None:
    # The benchmarks' setting (--save-interval 60): nothing rewritten while they run, everything kept at the end.
    server = make_sandbox(tmp_path / "slow", kdp_rate_limit=0, save_interval=60)
    c = KnoxClient(server.url, server.credentials_path)
    body = c.upload_body([new_imei()])
    c.kdp("PUT", "/devices/upload", json=body).raise_for_status()
    key = f"{body['resellerId']}/{body['transactionId']}"
    path = tmp_path / "slow" / "state.json"
    time.sleep(1.5)  # past the default interval
    assert not path.exists() or key not in json.loads(path.read_text())["kdp"]["transactions"]
    server.stop()
    assert key in json.loads(path.read_text())["kdp"]["transactions"]


def test_reset_restores_the_demo_world(client: KnoxClient) -> None:
    before = client.state()
    body = client.upload_body([new_imei()])
    client.kdp("PUT", "/devices/upload", json=body).raise_for_status()
    enrolled = next(d for d in client.creds["guard"]["devices"] if d["state"] == "Enrolled")
    client.kg(
        "POST", "/devices/lock", json={"deviceUid": enrolled["deviceUid"], "message": "m", "tel": "1"}
    ).raise_for_status()
    assert client.call("POST", "/_sandbox/reset").status_code == 200
    after = client.state()
    assert after["kdp"]["devices"] == before["kdp"]["devices"]
    assert after["kdp"]["transactions"] == {}
    assert after["guard"]["devices"][enrolled["deviceUid"]]["state"] == "Enrolled"
    assert after["counters"]["requests"] == 0
    assert client.call("GET", "/_sandbox/credentials").json()["client_identifier"] == client.creds["client_identifier"]
    # The session's token still works after a reset.
    assert client.kdp("GET", "/customers").status_code == 200


def test_the_inspection_view(client: KnoxClient) -> None:
    state = client.state()
    device_id = client.creds["customers"][0]["devices"][0]
    device = state["kdp"]["devices"][device_id]
    assert {"customerId", "resellerId", "type", "profileAliases", "transactionId"} <= set(device)
    guard = state["guard"]["devices"][client.creds["guard"]["devices"][0]["deviceUid"]]
    assert {"state", "approveId", "objectId"} <= set(guard)
    group = state["efota"]["groups"]["DEMOGROUP1"]
    assert {"license", "mdmId", "customerId"} <= set(group)
    assert {"requests", "rate_limited", "by_path", "duplicate_device_submissions"} <= set(state["counters"])
    # No secrets or token values in the inspection view.
    assert "clients" not in state["auth"]
    summary = client.call("GET", "/_sandbox/state", params={"devices": "0"}).json()
    assert summary["kdp"]["devices"] == len(state["kdp"]["devices"])


def test_saving_a_hundred_thousand_devices_stays_fast(make_sandbox: Callable[..., SandboxServer]) -> None:
    server = make_sandbox(kdp_rate_limit=0)
    app = server.app
    template = next(iter(app.state["kdp"]["devices"].values()))
    with app.lock:
        for i in range(100_000):
            device_id = f"99{i:013d}"
            app.state["kdp"]["devices"][device_id] = {**template, "deviceId": device_id}
            app.kdp_by_reseller[template["resellerId"]][device_id] = None
    app.save()  # how fast: bench/sandbox_load.py; here, that it completes and the server keeps answering
    c = KnoxClient(server.url, server.credentials_path)
    body = c.kdp("GET", "/devices", params={"pageNum": 50, "pageSize": 1000}).json()
    assert body["totalCount"] >= 100_000
