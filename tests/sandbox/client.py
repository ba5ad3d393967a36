"""A small, independent Knox client for the sandbox tests.

It is written from knox-api.md section 2.2 directly (requests + PyJWT), not from the portal's `portal/knox/`, so
that the sandbox tests exercise the sandbox and nothing else.
"""

from __future__ import annotations

import base64
import json
import random
import string
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

KG = "/kcs/v1.1/kg"
RP = "/kcs/v1/rp"


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def is_luhn_imei(value: str) -> bool:
    return len(value) == 15 and value.isdigit() and luhn_digit(value[:14]) == value[14]


def new_imei(rng: random.Random | None = None) -> str:
    rng = rng or random.Random()
    body = "35" + "".join(rng.choice(string.digits) for _ in range(12))
    return body + luhn_digit(body)


def new_serial(rng: random.Random | None = None) -> str:
    rng = rng or random.Random()
    return "R" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(10))


def bad_imei() -> str:
    """A 15-digit IMEI whose check digit is wrong."""
    good = new_imei()
    return good[:14] + str((int(good[14]) + 1) % 10)


class KnoxClient:
    def __init__(self, base_url: str, credentials_path: str | Path) -> None:
        self.base_url = base_url.rstrip("/")
        self.creds: dict[str, Any] = json.loads(Path(credentials_path).read_text())
        keys = json.loads(Path(self.creds["keys_file"]).read_text())
        self.public_key: str = keys["Public"]
        # keys.json "Private" is PKCS#8 DER: load it as DER (knox-api.md's Python pitfall).
        key = serialization.load_der_private_key(base64.b64decode(keys["Private"]), password=None)
        assert isinstance(key, RSAPrivateKey)
        self.private_key = key
        self.session = requests.Session()
        self._api_token: str | None = None

    # --- signing (knox-api.md section 2.2) ---

    def sign(self, claims: dict[str, Any], *, algorithm: str = "RS512", key: RSAPrivateKey | None = None) -> str:
        now = int(time.time())
        full = {"aud": "KnoxWSM", "jti": uuid.uuid4().hex + uuid.uuid4().hex, "iat": now, "exp": now + 1800}
        full.update(claims)
        return jwt.encode(
            {k: v for k, v in full.items() if v is not None}, key or self.private_key, algorithm=algorithm
        )

    def client_identifier_jwt(self, **overrides: Any) -> str:
        claims = {"clientIdentifier": self.creds["client_identifier"], "publicKey": self.public_key}
        claims.update(overrides)
        return self.sign(claims)

    def request_access_token(self, client_jwt: str | None = None, **body_overrides: Any) -> requests.Response:
        body = {
            "base64EncodedStringPublicKey": self.public_key,
            "clientIdentifierJwt": client_jwt or self.client_identifier_jwt(),
            "validityForAccessTokenInMinutes": 30,
        }
        body.update(body_overrides)
        return self.session.post(self.base_url + "/ams/v1/users/accesstoken", json=body)

    def access_token(self) -> str:
        r = self.request_access_token()
        assert r.status_code == 200, r.text
        return r.json()["accessToken"]

    def api_token(self, *, renew: bool = False) -> str:
        if self._api_token is None or renew:
            self._api_token = self.sign({"accessToken": self.access_token(), "publicKey": self.public_key})
        return self._api_token

    # --- calls ---

    def call(self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
        return self.session.request(method, self.base_url + path, headers=headers, timeout=10, **kw)

    def kdp(self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
        return self.call(method, RP + path, headers={"x-knox-apitoken": self.api_token(), **(headers or {})}, **kw)

    def kg(self, method: str, path: str, *, tx: str | None = None, **kw: Any) -> requests.Response:
        headers = {"x-knox-apitoken": self.api_token()}
        if tx is not None:
            headers["x-knox-transactionId"] = tx
        return self.call(method, KG + path, headers=headers, **kw)

    def gen1(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.call(method, path, headers={"X-WSM-API-TOKEN": self.creds["gen1_api_key"]}, **kw)

    def oauth_token(
        self, scope: str | None = "kdp.devices kdp.profilealias kdp.customers", **extra: str
    ) -> requests.Response:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.creds["oauth"]["client_id"],
            "client_secret": self.creds["oauth"]["client_secret"],
            **extra,
        }
        if scope is not None:
            form["scope"] = scope
        return self.session.post(self.base_url + "/ams/v1/oauth2/token", data=form)

    def efota_token(self, **overrides: str) -> requests.Response:
        form = {
            "client_id": self.creds["efota"]["client_id"],
            "client_secret": self.creds["efota"]["client_secret"],
            "grant_type": "client_credentials",
            **overrides,
        }
        return self.session.post(self.base_url + "/iam/auth/oauth/v2/token", data=form)

    def efota(self, operation: str, xml: str | bytes, *, token: str | None = None, **kw: Any) -> requests.Response:
        if token is None:
            token = self.efota_token().json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/xml", **kw.pop("headers", {})}
        data = xml.encode() if isinstance(xml, str) else xml
        return self.call("POST", f"/b2bfota/v2/{operation}", headers=headers, data=data, **kw)

    # --- KDP helpers ---

    def upload_body(
        self, devices: list[str], *, customer: int = 0, tx: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        return {
            "transactionId": tx or uuid.uuid4().hex,
            "resellerId": self.creds["reseller_id"],
            "customerId": self.creds["customers"][customer]["customerId"],
            "type": "IMEI",
            "devices": devices,
            **extra,
        }

    def status(self, transaction_id: str) -> dict[str, Any]:
        r = self.kdp("GET", "/devices/status", params={"transactionId": transaction_id})
        assert r.status_code == 200, r.text
        return r.json()

    def wait_complete(self, transaction_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The transaction entry of the V2 status, once it is terminal."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.status(transaction_id)
            tx = body["devices"]["transactions"][0]
            if tx["state"] in ("Complete", "Rejected"):
                return tx
            assert time.monotonic() < deadline, f"transaction {transaction_id} still {tx['state']}"
            time.sleep(0.05)

    # --- sandbox ---

    def state(self) -> dict[str, Any]:
        return self.session.get(self.base_url + "/_sandbox/state").json()

    def wait_guard_state(self, uid: str, state: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            dev = self.state()["guard"]["devices"][uid]
            if dev["state"] == state:
                return dev
            assert time.monotonic() < deadline, f"{uid} stuck in {dev['state']}, expected {state}"
            time.sleep(0.05)
