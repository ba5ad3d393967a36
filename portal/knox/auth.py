"""Knox authentication (knox-api.md §2).

- Knox Cloud token (legacy, keys.json): sign the Client Identifier into a JWT, exchange it at
  `POST /ams/v1/users/accesstoken` for an access token, sign that into the `x-knox-apitoken` header value.
- OAuth 2.0 client credentials: `POST /ams/v1/oauth2/token`, then `Authorization: Bearer`.
- KDP Gen1: the static `X-WSM-API-TOKEN` key.
- E-FOTA: its own OAuth endpoint, `POST /iam/auth/oauth/v2/token`, one-hour Bearer tokens.

Minted tokens are cached in Django's cache (shared by the web process and every worker) under a key that
includes the account's `credentials_version`, so a credentials change never reuses an old token; each process
also keeps the token it last used for TOKEN_MEMO_SECONDS.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.cache import cache

if TYPE_CHECKING:
    from portal.knox.http import KnoxSession
    from portal.models import KnoxAccount

JWT_AUDIENCE = "KnoxWSM"
JWT_ALGORITHM = "RS512"  # knox-api.md §2.2 DECISION; Samsung's Java jar signs RS256, the server takes both
JWT_LIFETIME_SECONDS = 30 * 60  # Samsung's libraries refuse more than 30 minutes
KNOX_ACCESS_TOKEN_VALIDITY_MINUTES = 30  # knox-api.md §6 q13 (the sandbox refuses more)
# Renew the signed x-knox-apitoken after 25 minutes, well before its 30-minute expiry (knox-api.md §2.2).
KNOX_TOKEN_REFRESH_AFTER_SECONDS = 1500
# Bearer tokens are renewed this long before `expires_in` runs out (knox-api.md §2.3 DECISION).
OAUTH_RENEW_MARGIN_SECONDS = 60
# E-FOTA tokens live one hour; renew after 55 minutes (knox-api.md §5.1 DECISION).
EFOTA_TOKEN_REFRESH_AFTER_SECONDS = 3300
ACCESS_TOKEN_PATH = "/ams/v1/users/accesstoken"  # noqa: S105 - a URL path, not a secret
OAUTH_TOKEN_PATH = "/ams/v1/oauth2/token"  # noqa: S105
EFOTA_TOKEN_PATH = "/iam/auth/oauth/v2/token"  # noqa: S105


class KeysFileError(ValueError):
    """keys.json is unusable; the message says why in words."""


@dataclass(frozen=True)
class KnoxKeys:
    private_b64: str  # base64 DER PKCS#8
    public_b64: str  # base64 DER SubjectPublicKeyInfo
    identifier: str = ""

    def private_key(self) -> rsa.RSAPrivateKey:
        # Decode the DER directly: wrapping it in "BEGIN RSA PRIVATE KEY" (a PKCS#1 label) as some ports do makes
        # `cryptography` fail with "ASN.1 parsing error: unexpected tag" (knox-api.md §2.2 pitfall).
        key = serialization.load_der_private_key(base64.b64decode(self.private_b64), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeysFileError("keys.json Private is not an RSA key")
        return key


def parse_keys_json(data: bytes | str) -> KnoxKeys:
    """Validate a keys.json as downloaded from the Knox API portal; raise KeysFileError with a clear message."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise KeysFileError("keys.json is not a text file; download it again from the Knox API portal") from None
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise KeysFileError(f"keys.json is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(doc, dict):
        raise KeysFileError("keys.json must be a JSON object with Private, Public and Identifier")
    missing = [name for name in ("Private", "Public") if not isinstance(doc.get(name), str) or not doc.get(name)]
    if missing:
        raise KeysFileError(f"keys.json lacks {' and '.join(missing)}; it must hold Private, Public and Identifier")
    private_b64 = "".join(doc["Private"].split())
    public_b64 = "".join(doc["Public"].split())
    if "BEGIN" in private_b64 or "BEGIN" in public_b64:
        raise KeysFileError("keys.json must hold base64 DER keys, not PEM blocks; use the file as downloaded")
    try:
        private_der = base64.b64decode(private_b64, validate=True)
        public_der = base64.b64decode(public_b64, validate=True)
    except (binascii.Error, ValueError):
        raise KeysFileError("keys.json Private or Public is not valid base64") from None
    try:
        private_key = serialization.load_der_private_key(private_der, password=None)
    except (ValueError, TypeError):
        raise KeysFileError("keys.json Private does not load as a PKCS#8 private key") from None
    try:
        public_key = serialization.load_der_public_key(public_der)
    except (ValueError, TypeError):
        raise KeysFileError("keys.json Public does not load as a public key (SubjectPublicKeyInfo)") from None
    if not isinstance(private_key, rsa.RSAPrivateKey) or not isinstance(public_key, rsa.RSAPublicKey):
        raise KeysFileError("keys.json must hold an RSA key pair")
    if private_key.public_key().public_numbers() != public_key.public_numbers():
        raise KeysFileError("keys.json Private and Public do not belong together")
    if private_key.key_size < 2048:
        raise KeysFileError(f"keys.json holds a {private_key.key_size}-bit key; Knox keys are at least 2048 bits")
    identifier = doc.get("Identifier", "")
    return KnoxKeys(private_b64=private_b64, public_b64=public_b64, identifier=str(identifier or ""))


def _new_jti() -> str:
    # Samsung's libraries concatenate two UUIDs (knox-api.md §2.2).
    return uuid.uuid4().hex + uuid.uuid4().hex


def _sign(claims: dict[str, Any], keys: KnoxKeys, now: float | None = None) -> str:
    now = int(time.time() if now is None else now)
    payload = {**claims, "aud": JWT_AUDIENCE, "jti": _new_jti(), "iat": now, "exp": now + JWT_LIFETIME_SECONDS}
    return jwt.encode(payload, keys.private_key(), algorithm=JWT_ALGORITHM)


def sign_client_identifier(keys: KnoxKeys, client_identifier: str, now: float | None = None) -> str:
    """Step 1: the clientIdentifierJwt."""
    return _sign({"clientIdentifier": client_identifier, "publicKey": keys.public_b64}, keys, now)


def sign_access_token(keys: KnoxKeys, access_token: str, now: float | None = None) -> str:
    """Step 3: the x-knox-apitoken value."""
    return _sign({"accessToken": access_token, "publicKey": keys.public_b64}, keys, now)


class Authenticator(Protocol):
    """Adds credentials to a request; `renew()` drops the cached token after Knox refused it."""

    def headers(self, session: KnoxSession) -> dict[str, str]: ...

    def renew(self) -> None: ...


# Each process keeps the token it last used for a few seconds, so a request does not read the shared cache (a
# database row or a Redis key) every time: at Knox Guard's 100 requests/s that read was one statement per request;
# now it is one per process every few seconds. It must stay well under every renewal margin above
# (OAUTH_RENEW_MARGIN_SECONDS is the smallest): a token read from the shared cache just before it is dropped there
# is then still valid at Knox while it is reused. A token Knox refuses is dropped from both at once (renew()).
TOKEN_MEMO_SECONDS = 5.0
_memo: dict[str, tuple[str, float]] = {}  # cache key -> (token, time.monotonic() until which it is reused)


def forget_tokens() -> None:
    """Drop this process's memo of tokens (tests: each test has its own sandbox and keys)."""
    _memo.clear()


class _CachedToken(ABC):
    """A token minted on demand, cached across processes until `lifetime` seconds have passed."""

    scheme = ""

    def __init__(self, account: KnoxAccount) -> None:
        self.account = account

    @property
    def cache_key(self) -> str:
        return f"knox:token:{self.scheme}:{self.account.pk}:{self.account.credentials_version}"

    def token(self, session: KnoxSession) -> str:
        key = self.cache_key
        memo = _memo.get(key)
        if memo is not None and memo[1] > time.monotonic():
            return memo[0]
        cached = cache.get(key)
        if cached:
            _memo[key] = (cached, time.monotonic() + TOKEN_MEMO_SECONDS)
            return cached
        value, lifetime = self.mint(session)
        cache.set(key, value, timeout=max(1, int(lifetime)))
        _memo[key] = (value, time.monotonic() + min(TOKEN_MEMO_SECONDS, lifetime))
        return value

    def renew(self) -> None:
        _memo.pop(self.cache_key, None)
        cache.delete(self.cache_key)

    @abstractmethod
    def mint(self, session: KnoxSession) -> tuple[str, float]:
        """Ask Knox for a new token; return it with how many seconds it may be reused."""


class KnoxCloudToken(_CachedToken):
    """x-knox-apitoken from keys.json + Client Identifier."""

    scheme = "apitoken"

    def mint(self, session: KnoxSession) -> tuple[str, float]:
        from portal.knox.errors import KnoxBadResponse, KnoxNotConfigured

        keys = self.account.keys()
        client_identifier = self.account.secret("client_identifier")
        if keys is None or not client_identifier:
            raise KnoxNotConfigured("The account needs keys.json and a Client Identifier", service="auth")
        body = {
            "base64EncodedStringPublicKey": keys.public_b64,
            "clientIdentifierJwt": sign_client_identifier(keys, client_identifier),
            "validityForAccessTokenInMinutes": KNOX_ACCESS_TOKEN_VALIDITY_MINUTES,
        }
        # Safe to retry: a failed exchange leaves nothing behind, and every attempt signs a new jti.
        response = session.request("auth", "POST", ACCESS_TOKEN_PATH, json=body, authenticate=False, idempotent=True)
        access_token = response.json_object().get("accessToken")
        if not isinstance(access_token, str) or not access_token:
            raise KnoxBadResponse(
                "Knox's access-token answer has no accessToken", service="auth", status=response.status
            )
        return sign_access_token(keys, access_token), KNOX_TOKEN_REFRESH_AFTER_SECONDS

    def headers(self, session: KnoxSession) -> dict[str, str]:
        return {"x-knox-apitoken": self.token(session)}


class OAuthToken(_CachedToken):
    """Bearer token from OAuth 2.0 client credentials (KDP Gen2)."""

    scheme = "oauth"
    path = OAUTH_TOKEN_PATH
    service = "auth"

    def credentials(self) -> tuple[str, str, str]:
        return self.account.oauth_client_id, self.account.secret("oauth_client_secret"), self.account.oauth_scopes

    def mint(self, session: KnoxSession) -> tuple[str, float]:
        from portal.knox.errors import KnoxBadResponse, KnoxNotConfigured

        client_id, client_secret, scope = self.credentials()
        if not client_id or not client_secret:
            raise KnoxNotConfigured("The account needs an OAuth client ID and secret", service=self.service)
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
        if scope:
            form["scope"] = scope
        response = session.request(self.service, "POST", self.path, data=form, authenticate=False, idempotent=True)
        doc = response.json_object()
        token = doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise KnoxBadResponse("The token answer has no access_token", service=self.service, status=response.status)
        try:
            expires_in = float(doc.get("expires_in") or 0)
        except (TypeError, ValueError):
            expires_in = 0
        return token, self.lifetime(expires_in)

    def lifetime(self, expires_in: float) -> float:
        return max(1.0, (expires_in or 599) - OAUTH_RENEW_MARGIN_SECONDS)

    def headers(self, session: KnoxSession) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(session)}"}


class EfotaToken(OAuthToken):
    """Bearer token from E-FOTA's own OAuth endpoint (knox-api.md §5.1)."""

    scheme = "efota"
    path = EFOTA_TOKEN_PATH
    service = "efota"

    def credentials(self) -> tuple[str, str, str]:
        return self.account.efota_client_id, self.account.secret("efota_client_secret"), ""

    def lifetime(self, expires_in: float) -> float:
        # Documented as one hour; trust a shorter expires_in if Knox sends one.
        return min(EFOTA_TOKEN_REFRESH_AFTER_SECONDS, max(1.0, (expires_in or 3600) - 300))


class Gen1Key:
    """The static X-WSM-API-TOKEN of KDP Gen1; it never expires, so there is nothing to renew."""

    def __init__(self, account: KnoxAccount) -> None:
        self.account = account

    def headers(self, session: KnoxSession) -> dict[str, str]:
        from portal.knox.errors import KnoxNotConfigured

        key = self.account.secret("gen1_api_key")
        if not key:
            raise KnoxNotConfigured("The account needs its Gen1 API key", service="kdp_gen1")
        return {"X-WSM-API-TOKEN": key}

    def renew(self) -> None:
        return None


def authenticator_for(account: KnoxAccount, service: str) -> Authenticator:
    """Which credentials each service takes (knox-api.md §2.1; Knox Guard has no OAuth scope, §6 q15)."""
    if service == "kdp_gen1":
        return Gen1Key(account)
    if service == "efota":
        return EfotaToken(account)
    if service == "kdp" and account.auth_mode == account.AuthMode.OAUTH:
        return OAuthToken(account)
    return KnoxCloudToken(account)
