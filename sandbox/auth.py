"""The two Knox authentication schemes, the Gen1 static key and the E-FOTA OAuth endpoint.

Token endpoints:
    POST /ams/v1/users/accesstoken (and /ams/v0/...)   clientIdentifier JWT -> accessToken
    POST /ams/v1/oauth2/token, /ams/v1/oauth2/revoke    OAuth 2.0 client credentials (KDP Gen2 only)
    POST /iam/auth/oauth/v2/token                       E-FOTA legacy OAuth

`authenticate_*` return a Principal, or the Response to send instead (401/403/429 in the service's shape).
"""

from __future__ import annotations

import base64
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from sandbox import ids
from sandbox.constants import (
    AMS_ACCESS_TOKEN_BAD_REQUEST,
    AMS_ACCESS_TOKEN_EXPIRED,
    AMS_INVALID_PARAM,
    AMS_NON_UNIQUE_JWT_ID,
    AMS_VALIDITY_INVALID,
    EFOTA_TOKEN_SCOPE,
    EFOTA_TOKEN_TYPE,
    KDP_AUTHORIZATION_FAIL,
    KDP_GEN1_INVALID_KEY,
    KDP_TOO_MANY_REQUESTS,
    KDP_WRONG_GENERATION,
    KG_AUTH_FAILURE_STATUS,
    KG_AUTHORIZATION_FAIL,
    KG_TOO_MANY_REQUESTS,
    KNOX_ACCESS_TOKEN_VALIDITY_MINUTES,
    KNOX_JWT_ALGORITHMS,
    KNOX_JWT_AUDIENCE,
    KNOX_JWT_EXPIRED,
    OAUTH_DEFAULT_EXPIRES_IN,
    OAUTH_KDP_SCOPES,
    OAUTH_MAX_EXPIRES_IN,
)
from sandbox.wire import BadJson, Request, Response, ams_error, json_response, kdp_error, kg_error, oauth_error

if TYPE_CHECKING:
    from sandbox.store import Sandbox

_JWT_CACHE_MAX = 50_000
# A whole number written as JSON text: ASCII digits only (int() alone would also take " 30", "3_0" and "٣٠").
_INT_TEXT = re.compile(r"-?[0-9]{1,11}")


@dataclass(slots=True)
class Principal:
    kind: str  # "apitoken" | "bearer" | "gen1" | "efota"
    token: str  # what rate limits count on: the access token, bearer token or Gen1 key
    reseller_id: str | None = None
    scopes: tuple[str, ...] = ()
    efota_client: dict[str, Any] | None = None


class _Fail(Exception):
    """An authentication failure: kind is 'bad', 'jwt_expired' or 'token_expired'."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


# --- keys ----------------------------------------------------------------------------------------------------------


def load_public_key(app: Sandbox, b64: str) -> RSAPublicKey:
    key = app.public_keys.get(b64)
    if key is None:
        loaded = serialization.load_der_public_key(base64.b64decode(b64, validate=True))
        if not isinstance(loaded, RSAPublicKey):
            raise ValueError("not an RSA public key")
        key = loaded
        if len(app.public_keys) > 1000:
            app.public_keys.clear()
        app.public_keys[b64] = key
    return key


# --- POST /ams/v1/users/accesstoken --------------------------------------------------------------------------------


def access_token(app: Sandbox, req: Request) -> Response:
    """Exchange a signed Client Identifier for an access token (knox-api.md section 2.2, step 2)."""
    try:
        body = req.json()
    except BadJson as exc:
        return ams_error(AMS_INVALID_PARAM, str(exc))
    if not isinstance(body, dict):
        return ams_error(AMS_INVALID_PARAM, "request body must be a JSON object")
    posted_key = body.get("base64EncodedStringPublicKey")
    client_jwt = body.get("clientIdentifierJwt")
    if not isinstance(posted_key, str) or not posted_key:
        return ams_error(AMS_INVALID_PARAM, "base64EncodedStringPublicKey is required")
    if not isinstance(client_jwt, str) or not client_jwt:
        return ams_error(AMS_INVALID_PARAM, "clientIdentifierJwt is required")
    validity = KNOX_ACCESS_TOKEN_VALIDITY_MINUTES
    if req.path.startswith("/ams/v1/") and "validityForAccessTokenInMinutes" in body:
        validity = _int32(body["validityForAccessTokenInMinutes"])
        if validity is None:
            return ams_error(AMS_VALIDITY_INVALID, "validityForAccessTokenInMinutes must be an int32")
        if validity < 1 or validity > KNOX_ACCESS_TOKEN_VALIDITY_MINUTES:
            return ams_error(
                AMS_VALIDITY_INVALID,
                f"validityForAccessTokenInMinutes must be between 1 and {KNOX_ACCESS_TOKEN_VALIDITY_MINUTES}",
            )
    try:
        key = load_public_key(app, posted_key)
    except ValueError:
        return ams_error(AMS_ACCESS_TOKEN_BAD_REQUEST, "base64EncodedStringPublicKey is not an RSA public key")
    try:
        claims = jwt.decode(
            client_jwt,
            key,
            algorithms=list(KNOX_JWT_ALGORITHMS),
            audience=KNOX_JWT_AUDIENCE,
            options={"require": ["exp", "aud", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        return ams_error(KNOX_JWT_EXPIRED, "Failed to parse jwt token: the clientIdentifier JWT has expired")
    except jwt.PyJWTError as exc:
        return ams_error(AMS_ACCESS_TOKEN_BAD_REQUEST, f"clientIdentifierJwt rejected: {exc}")
    client_identifier = claims.get("clientIdentifier")
    clients = app.state["auth"]["clients"]
    client = clients.get(client_identifier) if isinstance(client_identifier, str) else None
    if client is None:
        return ams_error(AMS_ACCESS_TOKEN_BAD_REQUEST, "unknown clientIdentifier")
    if claims.get("publicKey") != posted_key:
        return ams_error(AMS_ACCESS_TOKEN_BAD_REQUEST, "publicKey claim differs from base64EncodedStringPublicKey")
    if posted_key != client["publicKey"]:
        return ams_error(AMS_ACCESS_TOKEN_BAD_REQUEST, "public key is not the one registered for this clientIdentifier")
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti:
        return ams_error(AMS_ACCESS_TOKEN_BAD_REQUEST, "jti must be a non-empty string")
    now = time.time()
    with app.lock:
        jtis = app.state["auth"]["jtis"]
        if jti in jtis:
            return ams_error(AMS_NON_UNIQUE_JWT_ID, "this JWT id (jti) was already used; sign a new JWT")
        # A jti only needs remembering until its JWT expires: after that the JWT is refused anyway.
        jtis[jti] = float(claims["exp"])
        if len(jtis) % 500 == 0:
            for old in [k for k, exp in jtis.items() if exp < now]:
                del jtis[old]
        token = ids.make_opaque_token()
        lifetime = min(validity * 60, app.config.token_ttl)
        tokens = app.state["auth"]["accessTokens"]
        tokens[token] = {"clientIdentifier": client_identifier, "issuedAt": now, "expiresAt": now + lifetime}
        _prune(tokens, now)
        app.mark_dirty()
    return json_response({"accessToken": token})


def _int32(value: object) -> int | None:
    """The int32 a Java (Jackson) server reads from a JSON value, or None when it is not one.

    Knox documents an int32 (4002251), but two public Java clients send the string "30"; Jackson, like most Java
    JSON binders, coerces a string of digits into an int field. The evidence conflicts, so the sandbox accepts both
    forms (knox-api.md section 6) and still refuses fractions, booleans, other strings and values out of range.
    """
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        value = int(value)
    # bool is an int subclass in Python, but `true` is not an int32 in Java.
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**31) <= value < 2**31:
        return None
    return value


def _prune(tokens: dict[str, dict[str, Any]], now: float) -> None:
    # Forget tokens that expired over an hour ago, so the state does not grow without bound.
    if len(tokens) % 200 == 0:
        for old in [k for k, rec in tokens.items() if rec["expiresAt"] < now - 3600]:
            del tokens[old]


# --- POST /ams/v1/oauth2/token, /ams/v1/oauth2/revoke ---------------------------------------------------------------


def oauth_token(app: Sandbox, req: Request) -> Response:
    form = req.form()
    if form.get("grant_type") is None:
        return oauth_error("invalid_request", "Missing grant_type", 400)
    if form["grant_type"] != "client_credentials":
        return oauth_error("unsupported_grant_type", "only client_credentials is supported", 400)
    client = app.state["auth"]["oauthClients"].get(form.get("client_id", ""))
    if client is None or form.get("client_secret") != client["clientSecret"]:
        return oauth_error("invalid_client", "Client authentication failed", 401)
    scope_text = form.get("scope", "").strip()
    scopes = scope_text.split() if scope_text else list(client["scopes"])
    unknown = [s for s in scopes if s not in OAUTH_KDP_SCOPES or s not in client["scopes"]]
    if unknown:
        return oauth_error("invalid_scope", f"unknown or not granted scope: {' '.join(unknown)}", 400)
    expires_in = OAUTH_DEFAULT_EXPIRES_IN
    if "expires_in" in form:
        try:
            expires_in = int(form["expires_in"])
        except ValueError:
            return oauth_error("invalid_request", "expires_in must be a whole number of seconds", 400)
        if not 1 <= expires_in <= OAUTH_MAX_EXPIRES_IN:
            return oauth_error("invalid_request", f"expires_in must be between 1 and {OAUTH_MAX_EXPIRES_IN}", 400)
    lifetime = min(expires_in, app.config.token_ttl)
    now = time.time()
    token = ids.make_opaque_token()
    with app.lock:
        tokens = app.state["auth"]["oauthTokens"]
        tokens[token] = {
            "clientId": form["client_id"],
            "resellerId": client["resellerId"],
            "scopes": scopes,
            "issuedAt": now,
            "expiresAt": now + lifetime,
        }
        _prune(tokens, now)
        app.mark_dirty()
    return json_response(
        {"access_token": token, "scope": " ".join(scopes), "expires_in": math.floor(lifetime), "token_type": "Bearer"}
    )


def oauth_revoke(app: Sandbox, req: Request) -> Response:
    form = req.form()
    client = app.state["auth"]["oauthClients"].get(form.get("client_id", ""))
    if client is None or form.get("client_secret") != client["clientSecret"]:
        return oauth_error("invalid_client", "Client authentication failed", 401)
    with app.lock:
        tokens = app.state["auth"]["oauthTokens"]
        rec = tokens.get(form.get("token", ""))
        if rec is not None and rec["clientId"] == form["client_id"]:
            tokens[form["token"]] = {**rec, "expiresAt": min(rec["expiresAt"], time.time() - 0.001)}
            app.mark_dirty()
    # RFC 7009: revoking an unknown token is not an error.
    return Response(200, b"", None)


# --- POST /iam/auth/oauth/v2/token (E-FOTA) ------------------------------------------------------------------------


def efota_token(app: Sandbox, req: Request) -> Response:
    content_type = (req.header("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return oauth_error("invalid_request", "Validation error", 400)
    form = req.form()
    if not form.get("grant_type"):
        return oauth_error("invalid_request", "Missing grant_type", 400)
    if form["grant_type"] != "client_credentials":
        return oauth_error("unsupported_grant_type", "Unsupported grant_type", 400)
    client = app.state["auth"]["efotaClients"].get(form.get("client_id", ""))
    if client is None or form.get("client_secret") != client["clientSecret"]:
        return oauth_error("invalid_client", "Client authentication failed", 401)
    now = time.time()
    lifetime = app.config.efota_token_ttl
    token = ids.make_efota_token()
    with app.lock:
        tokens = app.state["auth"]["efotaTokens"]
        tokens[token] = {"clientId": form["client_id"], "issuedAt": now, "expiresAt": now + lifetime}
        _prune(tokens, now)
        app.mark_dirty()
    return json_response(
        {
            "access_token": token,
            "token_type": EFOTA_TOKEN_TYPE,
            "expires_in": math.floor(lifetime),
            "scope": EFOTA_TOKEN_SCOPE,
        }
    )


# --- verifying calls -----------------------------------------------------------------------------------------------


def _verify_apitoken(app: Sandbox, raw: str) -> dict[str, Any]:
    """Check an x-knox-apitoken and return its access-token record, or raise _Fail.

    The JWT is verified once and cached by its raw string; the access token it carries is checked on every call
    (tokens can expire, or be expired on purpose by /_sandbox/expire-tokens). jti reuse is allowed here: clients
    sign the access token once and send the same JWT for up to 30 minutes.
    """
    now = time.time()
    cached = app.jwt_cache.get(raw)
    if cached is None:
        try:
            unverified = jwt.decode(raw, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _Fail("bad", f"x-knox-apitoken is not a JWT: {exc}") from None
        access = unverified.get("accessToken")
        if not isinstance(access, str):
            raise _Fail("bad", "x-knox-apitoken has no accessToken claim")
        rec = app.state["auth"]["accessTokens"].get(access)
        if rec is None:
            raise _Fail("bad", "unknown access token")
        client = app.state["auth"]["clients"].get(rec["clientIdentifier"])
        if client is None:
            raise _Fail("bad", "access token of an unknown client")
        try:
            claims = jwt.decode(
                raw,
                load_public_key(app, client["publicKey"]),
                algorithms=list(KNOX_JWT_ALGORITHMS),
                audience=KNOX_JWT_AUDIENCE,
                options={"require": ["exp", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _Fail("jwt_expired", "Failed to parse jwt token: x-knox-apitoken has expired") from None
        except jwt.PyJWTError as exc:
            raise _Fail("bad", f"x-knox-apitoken rejected: {exc}") from None
        if claims.get("publicKey") != client["publicKey"]:
            raise _Fail("bad", "publicKey claim is not the registered key")
        if len(app.jwt_cache) >= _JWT_CACHE_MAX:
            app.jwt_cache.clear()
        exp = float(claims["exp"])
        app.jwt_cache[raw] = (access, exp)
    else:
        access, exp = cached
        if exp <= now:
            raise _Fail("jwt_expired", "Failed to parse jwt token: x-knox-apitoken has expired")
    rec = app.state["auth"]["accessTokens"].get(access)
    if rec is None:
        raise _Fail("bad", "unknown access token")
    if rec["expiresAt"] <= now:
        raise _Fail("token_expired", "access token has expired")
    return rec


def _verify_bearer(app: Sandbox, token: str) -> dict[str, Any]:
    rec = app.state["auth"]["oauthTokens"].get(token)
    if rec is None:
        raise _Fail("bad", "unknown OAuth access token")
    if rec["expiresAt"] <= time.time():
        raise _Fail("token_expired", "OAuth access token has expired")
    return rec


def _bearer(req: Request) -> str | None:
    value = req.header("Authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _kdp_auth_failure(fail: _Fail) -> Response:
    if fail.kind == "token_expired":
        return ams_error(AMS_ACCESS_TOKEN_EXPIRED, fail.detail)
    if fail.kind == "jwt_expired":
        return ams_error(KNOX_JWT_EXPIRED, fail.detail)
    return ams_error(AMS_ACCESS_TOKEN_BAD_REQUEST, fail.detail)


def _rate_limited(app: Sandbox, service: str, token: str, limit: int) -> float | None:
    wait = app.rate_limiter.check((service, token), limit)
    if wait is not None:
        app.count("rate_limited")
    return wait


def authenticate_kdp(app: Sandbox, req: Request, scopes: tuple[str, ...]) -> Principal | Response:
    """KDP Gen2: x-knox-apitoken, or an OAuth 2.0 Bearer token carrying one of `scopes`."""
    raw = req.header("x-knox-apitoken")
    bearer = _bearer(req) if raw is None else None
    try:
        if raw is not None:
            rec = _verify_apitoken(app, raw)
            client = app.state["auth"]["clients"][rec["clientIdentifier"]]
            if "KDP" not in client["services"]:
                return kdp_error(KDP_AUTHORIZATION_FAIL, "this Client Identifier is not enabled for KDP")
            principal = Principal("apitoken", _access_of(app, raw), client["resellerId"])
        elif bearer is not None:
            rec = _verify_bearer(app, bearer)
            if not any(s in rec["scopes"] for s in scopes):
                return kdp_error(KDP_AUTHORIZATION_FAIL, f"the OAuth token lacks one of the scopes {' '.join(scopes)}")
            principal = Principal("bearer", bearer, rec["resellerId"], tuple(rec["scopes"]))
        else:
            gen1 = req.header("X-WSM-API-TOKEN")
            if gen1 is not None and gen1 in app.state["auth"]["gen1Keys"]:
                return kdp_error(KDP_WRONG_GENERATION, "a Gen1 account (X-WSM-API-TOKEN) cannot use the Gen2 API")
            return ams_error(AMS_ACCESS_TOKEN_BAD_REQUEST, "x-knox-apitoken header is missing")
    except _Fail as fail:
        return _kdp_auth_failure(fail)
    wait = _rate_limited(app, "kdp", principal.token, app.config.kdp_rate_limit)
    if wait is not None:
        return too_many(kdp_error(KDP_TOO_MANY_REQUESTS, "Too Many Requests", 429), wait)
    return principal


def authenticate_gen1(app: Sandbox, req: Request) -> Principal | Response:
    key = req.header("X-WSM-API-TOKEN")
    reseller_id = app.state["auth"]["gen1Keys"].get(key) if key else None
    if reseller_id is None:
        # A Gen2 account knocking on the Gen1 door is told so, rather than "bad key".
        raw = req.header("x-knox-apitoken")
        bearer = _bearer(req)
        try:
            if raw is not None:
                _verify_apitoken(app, raw)
                return kdp_error(KDP_WRONG_GENERATION, "a Gen2 account cannot use the Gen1 API")
            if bearer is not None:
                _verify_bearer(app, bearer)
                return kdp_error(KDP_WRONG_GENERATION, "a Gen2 account cannot use the Gen1 API")
        except _Fail:
            pass
        detail = "X-WSM-API-TOKEN header is missing" if not key else "invalid X-WSM-API-TOKEN"
        return kdp_error(KDP_GEN1_INVALID_KEY, detail, 401)
    wait = _rate_limited(app, "kdp", key or "", app.config.kdp_rate_limit)
    if wait is not None:
        return too_many(kdp_error(KDP_TOO_MANY_REQUESTS, "Too Many Requests", 429), wait)
    return Principal("gen1", key or "", reseller_id)


def authenticate_kg(app: Sandbox, req: Request) -> Principal | Response:
    raw = req.header("x-knox-apitoken")
    if raw is None:
        if _bearer(req) is not None:
            return kg_error(
                KG_AUTHORIZATION_FAIL, "Knox Guard accepts x-knox-apitoken only, not OAuth", KG_AUTH_FAILURE_STATUS
            )
        return kg_error(KG_AUTHORIZATION_FAIL, "x-knox-apitoken header is missing", KG_AUTH_FAILURE_STATUS)
    try:
        rec = _verify_apitoken(app, raw)
    except _Fail as fail:
        return kg_error(KG_AUTHORIZATION_FAIL, fail.detail, KG_AUTH_FAILURE_STATUS)
    client = app.state["auth"]["clients"][rec["clientIdentifier"]]
    if "KG" not in client["services"]:
        return kg_error(KG_AUTHORIZATION_FAIL, "this Client Identifier is not enabled for Knox Guard", 403)
    access = _access_of(app, raw)
    wait = _rate_limited(app, "kg", access, app.config.rate_limit)
    if wait is not None:
        return too_many(kg_error(KG_TOO_MANY_REQUESTS, "Too Many Requests", 429), wait)
    return Principal("apitoken", access, client["resellerId"])


def authenticate_efota(app: Sandbox, req: Request) -> Principal | Response:
    value = req.header("Authorization")
    if value is None:
        return oauth_error("invalid_request", "Missing access token", 401)
    token = _bearer(req)
    if token is None:
        return oauth_error("invalid_request", "Authorization must be 'Bearer <token>'", 401)
    rec = app.state["auth"]["efotaTokens"].get(token)
    if rec is None:
        return oauth_error("invalid_token", "Invalid access token", 401)
    if rec["expiresAt"] <= time.time():
        return oauth_error("invalid_token", "Access token expired", 401)
    client = app.state["auth"]["efotaClients"].get(rec["clientId"])
    if client is None:
        return oauth_error("invalid_token", "Invalid access token", 401)
    return Principal("efota", token, efota_client=client)


def _access_of(app: Sandbox, raw: str) -> str:
    return app.jwt_cache[raw][0] if raw in app.jwt_cache else raw


def too_many(response: Response, wait: float) -> Response:
    """Add the Retry-After header a 429 carries (whole seconds, at least 1)."""
    response.headers.append(("Retry-After", str(max(1, math.ceil(wait)))))
    return response
