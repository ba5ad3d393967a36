"""Knox Cloud Authentication, OAuth 2.0, the Gen1 key and E-FOTA OAuth against the sandbox."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.server import SandboxServer
from tests.sandbox.client import KG, RP, KnoxClient


def _kdp_bad_request(r) -> None:
    assert r.status_code == 401, r.text
    body = r.json()
    assert body["code"] == 4012250
    assert body["message"] == "ACCESS_TOKEN_BAD_REQUEST"
    assert "data" in body


def test_it_issues_an_access_token(client: KnoxClient) -> None:
    r = client.request_access_token()
    assert r.status_code == 200
    assert set(r.json()) == {"accessToken"}
    assert isinstance(r.json()["accessToken"], str)


def test_it_serves_the_v0_path_without_validity(client: KnoxClient) -> None:
    body = {"base64EncodedStringPublicKey": client.public_key, "clientIdentifierJwt": client.client_identifier_jwt()}
    r = client.call("POST", "/ams/v0/users/accesstoken", json=body)
    assert r.status_code == 200
    assert "accessToken" in r.json()


@pytest.mark.parametrize("algorithm", ["RS256", "RS384", "RS512"])
def test_it_accepts_rs256_rs384_rs512(client: KnoxClient, algorithm: str) -> None:
    jwt_ = client.sign(
        {"clientIdentifier": client.creds["client_identifier"], "publicKey": client.public_key}, algorithm=algorithm
    )
    assert client.request_access_token(jwt_).status_code == 200


def test_it_refuses_a_bad_signature(client: KnoxClient) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwt_ = client.sign(
        {"clientIdentifier": client.creds["client_identifier"], "publicKey": client.public_key}, key=other
    )
    _kdp_bad_request(client.request_access_token(jwt_))


def test_it_refuses_hs256(client: KnoxClient) -> None:
    import jwt

    token = jwt.encode(
        {"clientIdentifier": client.creds["client_identifier"], "aud": "KnoxWSM", "jti": "x", "exp": time.time() + 60},
        "secret-key-for-test-only-32bytes!",
        algorithm="HS256",
    )
    _kdp_bad_request(client.request_access_token(token))


def test_it_refuses_a_wrong_audience(client: KnoxClient) -> None:
    _kdp_bad_request(client.request_access_token(client.client_identifier_jwt(aud="SomethingElse")))


def test_it_refuses_an_expired_jwt(client: KnoxClient) -> None:
    r = client.request_access_token(
        client.client_identifier_jwt(iat=int(time.time()) - 3600, exp=int(time.time()) - 60)
    )
    assert r.status_code == 403
    assert r.json()["code"] == 4030000
    assert r.json()["message"] == "AUTHENTICATION_FAIL"


def test_it_refuses_a_replayed_jti(client: KnoxClient) -> None:
    jwt_ = client.client_identifier_jwt()
    assert client.request_access_token(jwt_).status_code == 200
    r = client.request_access_token(jwt_)
    assert r.status_code == 400
    assert r.json()["code"] == 4002250
    assert r.json()["message"] == "API_KEY_NON_UNIQUE_JWTID"


def test_it_refuses_a_jwt_without_jti(client: KnoxClient) -> None:
    _kdp_bad_request(client.request_access_token(client.client_identifier_jwt(jti=None)))


def test_it_refuses_an_unknown_client_identifier(client: KnoxClient) -> None:
    _kdp_bad_request(client.request_access_token(client.client_identifier_jwt(clientIdentifier="not-a-client")))


def test_it_refuses_a_public_key_claim_that_differs(client: KnoxClient) -> None:
    _kdp_bad_request(client.request_access_token(client.client_identifier_jwt(publicKey="AAAA")))


@pytest.mark.parametrize("validity", ["thirty", "30.0", " 30", "3_0", "", 30.5, True, None, 2**31, str(2**31)])
def test_it_refuses_a_validity_that_is_not_an_int32(client: KnoxClient, validity: object) -> None:
    r = client.request_access_token(validityForAccessTokenInMinutes=validity)
    assert r.status_code == 400
    assert r.json()["code"] == 4002251
    assert r.json()["message"] == "ACCESS_TOKEN_TIMEOUT_VALIDITY_RESOURCE_INVALID_PARAM"


@pytest.mark.parametrize("validity", [30, "30", 1, "1"])
def test_it_takes_the_validity_as_a_number_or_a_string_of_digits(client: KnoxClient, validity: object) -> None:
    """Two public Java clients send "30"; Jackson coerces it, so the sandbox is lenient (knox-api.md section 6)."""
    r = client.request_access_token(validityForAccessTokenInMinutes=validity)
    assert r.status_code == 200, r.text
    token = r.json()["accessToken"]
    headers = {"x-knox-apitoken": client.sign({"accessToken": token, "publicKey": client.public_key})}
    assert client.call("GET", KG + "/authorization", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("validity", "status"), [(1, 200), (30, 200), (31, 400), (0, 400), ("31", 400), ("0", 400), ("-5", 400)]
)
def test_it_bounds_the_validity(client: KnoxClient, validity: object, status: int) -> None:
    r = client.request_access_token(validityForAccessTokenInMinutes=validity)
    assert r.status_code == status
    if status == 400:
        assert r.json()["code"] == 4002251


def test_it_requires_the_apitoken_header(client: KnoxClient) -> None:
    _kdp_bad_request(client.call("GET", RP + "/customers"))
    r = client.call("GET", KG + "/authorization")
    assert r.status_code == 401
    assert r.json() == {
        "result": "FAIL",
        "error": {"code": 4010000, "message": "AUTHORIZATION_FAIL", "reason": r.json()["error"]["reason"]},
    }


def test_it_reuses_one_signed_token_and_ignores_header_case(client: KnoxClient) -> None:
    token = client.api_token()
    for name in ("x-knox-apitoken", "X-KNOX-APITOKEN", "X-Knox-ApiToken"):
        assert client.call("GET", RP + "/customers", headers={name: token}).status_code == 200
        assert client.call("GET", KG + "/authorization", headers={name: token}).status_code == 200


def test_it_refuses_a_badly_signed_apitoken(client: KnoxClient) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = client.sign({"accessToken": client.access_token(), "publicKey": client.public_key}, key=other)
    _kdp_bad_request(client.call("GET", RP + "/customers", headers={"x-knox-apitoken": forged}))
    r = client.call("GET", KG + "/authorization", headers={"x-knox-apitoken": forged})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == 4010000


def test_it_refuses_an_unknown_access_token(client: KnoxClient) -> None:
    token = client.sign({"accessToken": "made-up", "publicKey": client.public_key})
    _kdp_bad_request(client.call("GET", RP + "/customers", headers={"x-knox-apitoken": token}))


def test_it_refuses_an_apitoken_with_a_wrong_audience(client: KnoxClient) -> None:
    token = client.sign({"accessToken": client.access_token(), "publicKey": client.public_key, "aud": "nope"})
    _kdp_bad_request(client.call("GET", RP + "/customers", headers={"x-knox-apitoken": token}))


def test_it_refuses_an_expired_apitoken_jwt(client: KnoxClient) -> None:
    now = int(time.time())
    token = client.sign(
        {"accessToken": client.access_token(), "publicKey": client.public_key, "iat": now - 100, "exp": now - 1}
    )
    r = client.call("GET", RP + "/customers", headers={"x-knox-apitoken": token})
    assert r.status_code == 403
    assert r.json()["code"] == 4030000


def test_it_expires_access_tokens_after_the_ttl(make_sandbox: Callable[..., SandboxServer]) -> None:
    server = make_sandbox(token_ttl=1, rate_limit=0, kdp_rate_limit=0)
    c = KnoxClient(server.url, server.credentials_path)
    token = c.api_token()
    assert c.call("GET", RP + "/customers", headers={"x-knox-apitoken": token}).status_code == 200
    time.sleep(1.1)
    r = c.call("GET", RP + "/customers", headers={"x-knox-apitoken": token})
    assert r.status_code == 403
    assert r.json() == {"code": 4032251, "message": "ACCESS_TOKEN_EXPIRED", "data": r.json()["data"]}
    r = c.call("GET", KG + "/authorization", headers={"x-knox-apitoken": token})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == 4010000
    # A renewed token works again.
    assert c.call("GET", RP + "/customers", headers={"x-knox-apitoken": c.api_token(renew=True)}).status_code == 200


def test_expire_tokens_invalidates_every_token(make_sandbox: Callable[..., SandboxServer]) -> None:
    server = make_sandbox(rate_limit=0, kdp_rate_limit=0)
    c = KnoxClient(server.url, server.credentials_path)
    api = c.api_token()
    bearer = c.oauth_token().json()["access_token"]
    efota = c.efota_token().json()["access_token"]
    r = c.call("POST", "/_sandbox/expire-tokens")
    assert r.json()["expired"] == 3
    assert c.call("GET", RP + "/customers", headers={"x-knox-apitoken": api}).json()["code"] == 4032251
    assert c.call("GET", RP + "/customers", headers={"Authorization": f"Bearer {bearer}"}).json()["code"] == 4032251
    r = c.efota("licenseInfo", "<B2bLicenseInfoVO/>", token=efota)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"


# --- OAuth 2.0 -------------------------------------------------------------------------------------------------------


def test_it_issues_oauth_tokens(client: KnoxClient) -> None:
    r = client.oauth_token()
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 599
    assert body["scope"] == "kdp.devices kdp.profilealias kdp.customers"
    r = client.call("GET", RP + "/customers", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert r.status_code == 200


def test_it_honours_oauth_scopes(client: KnoxClient) -> None:
    token = client.oauth_token("kdp.customers").json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.call("GET", RP + "/customers", headers=headers).status_code == 200
    r = client.call("GET", RP + "/devices", headers=headers)
    assert r.status_code == 403
    assert r.json()["code"] == 40300000


def test_it_refuses_bad_oauth_clients_and_grants(client: KnoxClient) -> None:
    r = client.oauth_token(client_secret="wrong")
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    assert client.oauth_token(grant_type="password").json()["error"] == "unsupported_grant_type"
    assert client.oauth_token("kg").json()["error"] == "invalid_scope"


def test_it_revokes_oauth_tokens(client: KnoxClient) -> None:
    token = client.oauth_token().json()["access_token"]
    form = {
        "client_id": client.creds["oauth"]["client_id"],
        "client_secret": client.creds["oauth"]["client_secret"],
        "token": token,
    }
    assert client.call("POST", "/ams/v1/oauth2/revoke", data=form).status_code == 200
    assert client.call("GET", RP + "/customers", headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_knox_guard_refuses_bearer_tokens(client: KnoxClient) -> None:
    token = client.oauth_token().json()["access_token"]
    r = client.call("GET", KG + "/authorization", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == 4010000


# --- Gen1 / Gen2 separation ------------------------------------------------------------------------------------------


def test_a_gen1_key_cannot_use_gen2(client: KnoxClient) -> None:
    r = client.call("GET", RP + "/customers", headers={"X-WSM-API-TOKEN": client.creds["gen1_api_key"]})
    assert r.status_code == 403
    assert r.json()["code"] == 40300000
    assert r.json()["message"] == "AUTHORIZATION_FAIL"


def test_a_gen2_account_cannot_use_gen1(client: KnoxClient) -> None:
    body = {"resellerId": client.creds["reseller_id"]}
    r = client.call(
        "POST", "/bulkenroll/v1/reseller/customers", json=body, headers={"x-knox-apitoken": client.api_token()}
    )
    assert r.status_code == 403
    assert r.json()["code"] == 40300000


def test_gen1_requires_its_key(client: KnoxClient) -> None:
    r = client.call("POST", "/bulkenroll/v1/reseller/customers", json={"resellerId": client.creds["gen1_reseller_id"]})
    assert r.status_code == 401
    r = client.call(
        "POST",
        "/bulkenroll/v1/reseller/customers",
        json={"resellerId": client.creds["gen1_reseller_id"]},
        headers={"X-WSM-API-TOKEN": "wrong"},
    )
    assert r.status_code == 401


def test_gen2_refuses_the_gen1_reseller_id(client: KnoxClient) -> None:
    body = client.upload_body(["356938035643809"])
    body["resellerId"] = client.creds["gen1_reseller_id"]
    r = client.kdp("PUT", "/devices/upload", json=body)
    assert r.status_code == 403
    assert r.json()["code"] == 40300000


# --- E-FOTA OAuth ----------------------------------------------------------------------------------------------------


def test_it_issues_efota_tokens(client: KnoxClient) -> None:
    r = client.efota_token()
    assert r.status_code == 200
    body = r.json()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", body["access_token"])
    assert body["expires_in"] == 3600
    assert body["token_type"].lower() == "bearer"


def test_it_refuses_bad_efota_clients(client: KnoxClient) -> None:
    r = client.efota_token(client_secret="nope")
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    r = client.efota_token(grant_type="")
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request", "error_description": "Missing grant_type"}
