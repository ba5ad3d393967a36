"""Interoperability with Samsung's own token library, npm `knox-token-library-js`, used unchanged.

Why: our signer (portal/knox/auth.py) and the sandbox's verifier (sandbox/auth.py) were both written from
knox-api.md §2.2, so they could agree with each other and still both be wrong. Samsung's library is the closest
thing to a reference implementation we can run: the sandbox must accept its tokens, and our tokens must have the
same header and claims (values that differ by design, such as the signature, iat and jti, are compared by form).

The library runs under Node (tests/interop/node/sign.js); the exact version is pinned in package.json and
package-lock.json there, and `npm ci` installs it on first use. Without node or npm the tests are skipped, unless
the environment variable CI is set: then they fail, so CI can never pass without running them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from portal.knox.auth import (
    ACCESS_TOKEN_PATH,
    KNOX_ACCESS_TOKEN_VALIDITY_MINUTES,
    parse_keys_json,
    sign_access_token,
    sign_client_identifier,
)
from sandbox.server import SandboxServer

NODE_DIR = Path(__file__).parent / "node"
LIBRARY = "knox-token-library-js"
KDP_CUSTOMERS = "/kcs/v1/rp/customers"
KG_DEVICE_LIST = "/kcs/v1.1/kg/devices/list"
# The library's jti: two canonical (hyphenated) UUIDs back to back, from `uuidv1() + uuidv1()` in its index.js.
UUID_TEXT = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
LIBRARY_JTI = re.compile(f"({UUID_TEXT})({UUID_TEXT})")

Signer = Callable[..., dict[str, str]]


def _pinned_version() -> str:
    return json.loads((NODE_DIR / "package.json").read_text())["dependencies"][LIBRARY]


def _installed_version() -> str | None:
    manifest = NODE_DIR / "node_modules" / LIBRARY / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


def _npm_ci(npm: str) -> None:
    """Install exactly what package-lock.json lists (no install scripts run; the library has none)."""
    command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
    done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"`npm ci` in {NODE_DIR} failed with exit code {done.returncode}:\n{done.stderr[-2000:]}")
    if _installed_version() != _pinned_version():
        pytest.fail(f"`npm ci` installed {LIBRARY} {_installed_version()}, but package.json pins {_pinned_version()}")


def _sign(node: str, keys_file: str, **inputs: str) -> dict[str, str]:
    """Ask the library for the base64 public key and a signed JWT per input (clientIdentifier, accessToken)."""
    request = json.dumps({"keysFile": keys_file, **inputs})
    done = subprocess.run(
        [node, str(NODE_DIR / "sign.js")], input=request, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"sign.js failed with exit code {done.returncode}:\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def knox_library() -> Signer:
    """`sign(keys_file, clientIdentifier=..., accessToken=...)` backed by the pinned npm library."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if path is None)
        reason = f"{missing} not on PATH; install Debian's nodejs and npm packages to run the {LIBRARY} interop test"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}. CI is set, so this test may not be skipped (.ci/run installs them)")
        pytest.skip(reason)
    if _installed_version() != _pinned_version():
        _npm_ci(npm)
    return partial(_sign, node)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path_factory.mktemp("interop-sandbox"), rate_limit=0, kdp_rate_limit=0).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def creds(sandbox: SandboxServer) -> dict[str, Any]:
    """The sandbox's credentials.json, as `manage.py knox_sandbox` writes it (keys_file is its keys.json)."""
    return json.loads(Path(sandbox.credentials_path).read_text())


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def _fixed(claims: dict[str, Any]) -> dict[str, Any]:
    """The claims that are the same for the same inputs: all but iat, exp and jti, which change per signature."""
    return {name: value for name, value in claims.items() if name not in {"iat", "exp", "jti"}}


def _two_uuids(jti: str) -> list[uuid.UUID]:
    """Split a jti made of two UUIDs, hyphenated (72 characters) or not (64); fail on anything else."""
    half = {72: 36, 64: 32}.get(len(jti))
    assert half is not None, f"jti {jti!r} is not two UUIDs"
    return [uuid.UUID(jti[:half]), uuid.UUID(jti[half:])]


@pytest.mark.parametrize(
    ("path", "validity"),
    [(ACCESS_TOKEN_PATH, KNOX_ACCESS_TOKEN_VALIDITY_MINUTES), ("/ams/v0/users/accesstoken", None)],
    ids=["ams-v1", "ams-v0"],
)
def test_library_tokens_get_an_access_token_and_read_kdp_and_guard(
    knox_library: Signer, sandbox: SandboxServer, creds: dict[str, Any], path: str, validity: int | None
) -> None:
    """The whole §2.2 flow with the library's JWTs, posted the way portal/knox/auth.py posts ours."""
    signed = knox_library(creds["keys_file"], clientIdentifier=creds["client_identifier"])
    body: dict[str, Any] = {
        "base64EncodedStringPublicKey": signed["publicKey"],
        "clientIdentifierJwt": signed["clientIdentifierJwt"],
    }
    if validity is not None:
        body["validityForAccessTokenInMinutes"] = validity
    answer = requests.post(sandbox.url + path, json=body, timeout=10)
    assert answer.status_code == 200, f"the sandbox refused the library's clientIdentifier JWT: {answer.text}"
    access_token = answer.json()["accessToken"]

    headers = {"x-knox-apitoken": knox_library(creds["keys_file"], accessToken=access_token)["accessTokenJwt"]}
    customers = requests.get(sandbox.url + KDP_CUSTOMERS, headers=headers, timeout=10)
    assert customers.status_code == 200, f"KDP refused the library's x-knox-apitoken: {customers.text}"
    assert [c["customerId"] for c in customers.json()["customers"]] == [c["customerId"] for c in creds["customers"]]
    devices = requests.post(
        sandbox.url + KG_DEVICE_LIST, headers=headers, json={"pageNum": 0, "pageSize": 5}, timeout=10
    )
    assert devices.status_code == 200, f"Knox Guard refused the library's x-knox-apitoken: {devices.text}"
    assert devices.json()["totalCount"] == len(creds["guard"]["devices"])


def test_library_and_portal_tokens_have_the_same_header_and_claims(knox_library: Signer, creds: dict[str, Any]) -> None:
    """Same keys.json, same inputs: every header field and claim the library sets, we set, with the same value or
    (iat, exp, jti) the same form. The signatures are not compared: jti and iat make every token different."""
    keys_file = creds["keys_file"]
    ours_keys = parse_keys_json(Path(keys_file).read_bytes())
    library = knox_library(keys_file, clientIdentifier=creds["client_identifier"], accessToken="opaque-access-token")
    pairs = {
        "clientIdentifierJwt": (
            library["clientIdentifierJwt"],
            sign_client_identifier(ours_keys, creds["client_identifier"]),
        ),
        "accessTokenJwt": (library["accessTokenJwt"], sign_access_token(ours_keys, "opaque-access-token")),
    }
    assert library["publicKey"] == ours_keys.public_b64, "base64EncodedStringPublicKey differs"
    for name, (theirs, ours) in pairs.items():
        (their_header, their_claims), (our_header, our_claims) = _parts(theirs), _parts(ours)
        assert our_header == their_header, f"{name}: header differs"
        assert sorted(our_claims) == sorted(their_claims), f"{name}: claim names differ"
        assert _fixed(our_claims) == _fixed(their_claims), f"{name}: claim values differ"
        for claims in (our_claims, their_claims):
            assert isinstance(claims["iat"], int) and isinstance(claims["exp"], int), f"{name}: times not integers"
        assert our_claims["exp"] - our_claims["iat"] == their_claims["exp"] - their_claims["iat"], f"{name}: lifetime"
        assert len(_two_uuids(our_claims["jti"])) == len(_two_uuids(their_claims["jti"])) == 2


def test_library_header_and_claims_are_what_knox_api_md_documents(knox_library: Signer, creds: dict[str, Any]) -> None:
    """Pins the library's output itself, so a new library version that changes it shows up here by name."""
    keys = json.loads(Path(creds["keys_file"]).read_text())
    token = knox_library(creds["keys_file"], clientIdentifier=creds["client_identifier"])["clientIdentifierJwt"]
    public_key = serialization.load_der_public_key(base64.b64decode(keys["Public"]))
    claims = jwt.decode(token, public_key, algorithms=["RS512"], audience="KnoxWSM")  # verifies the signature
    assert jwt.get_unverified_header(token) == {"alg": "RS512", "typ": "JWT"}
    assert sorted(claims) == ["aud", "clientIdentifier", "exp", "iat", "jti", "publicKey"]
    assert claims["aud"] == "KnoxWSM"
    assert claims["publicKey"] == keys["Public"]
    assert claims["exp"] - claims["iat"] == 30 * 60


def test_library_jti_is_two_hyphenated_time_based_uuids(knox_library: Signer, creds: dict[str, Any]) -> None:
    """Our jti is two random UUIDs in hex (64 characters); the library's is two version-1 UUIDs with hyphens
    (72 characters). Both are unique per signature, which is all the server checks (4002250 on reuse)."""
    signed = knox_library(creds["keys_file"], clientIdentifier="a", accessToken="b")
    jtis = [_parts(signed[name])[1]["jti"] for name in ("clientIdentifierJwt", "accessTokenJwt")]
    for jti in jtis:
        assert LIBRARY_JTI.fullmatch(jti), f"library jti {jti!r} is not two hyphenated UUIDs"
        assert [u.version for u in _two_uuids(jti)] == [1, 1]
    assert jtis[0] != jtis[1]
    ours = _parts(sign_client_identifier(parse_keys_json(Path(creds["keys_file"]).read_bytes()), "a"))[1]["jti"]
    assert re.fullmatch("[0-9a-f]{64}", ours) and [u.version for u in _two_uuids(ours)] == [4, 4]
