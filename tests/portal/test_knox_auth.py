"""Token minting (knox-api.md §2.2), verified independently with PyJWT and the public key, and keys.json checks."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from portal.knox.auth import (
    JWT_AUDIENCE,
    KeysFileError,
    parse_keys_json,
    sign_access_token,
    sign_client_identifier,
)
from tests.keys import keys_dict, keys_json, public_key


def decode(token: str, n: int = 0) -> dict:
    return jwt.decode(token, public_key(n), algorithms=["RS512"], audience=JWT_AUDIENCE)


def test_client_identifier_jwt_has_every_documented_claim():
    keys = parse_keys_json(keys_json())
    before = int(time.time())
    token = sign_client_identifier(keys, "client-id-123")
    assert jwt.get_unverified_header(token)["alg"] == "RS512"
    claims = decode(token)
    assert claims["clientIdentifier"] == "client-id-123"
    assert claims["publicKey"] == keys_dict()["Public"]
    assert claims["aud"] == "KnoxWSM"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 30 * 60
    assert len(claims["jti"]) == 64 and all(c in "0123456789abcdef" for c in claims["jti"])


def test_access_token_jwt_carries_the_access_token_and_public_key():
    keys = parse_keys_json(keys_json())
    claims = decode(sign_access_token(keys, "opaque-access-token"))
    assert claims["accessToken"] == "opaque-access-token"
    assert claims["publicKey"] == keys_dict()["Public"]
    assert claims["aud"] == "KnoxWSM"
    assert claims["exp"] - claims["iat"] == 1800


def test_jti_is_unique_per_token():
    keys = parse_keys_json(keys_json())
    jtis = {decode(sign_client_identifier(keys, "c"))["jti"] for _ in range(50)}
    assert len(jtis) == 50


def test_signature_does_not_verify_with_another_key():
    keys = parse_keys_json(keys_json())
    with pytest.raises(jwt.InvalidSignatureError):
        decode(sign_client_identifier(keys, "c"), n=1)


def test_it_accepts_the_file_as_downloaded_with_bom_and_wrapped_base64():
    doc = keys_dict()
    doc["Private"] = "\n".join(doc["Private"][i : i + 64] for i in range(0, len(doc["Private"]), 64))
    keys = parse_keys_json(b"\xef\xbb\xbf" + json.dumps(doc).encode())
    assert keys.public_b64 == keys_dict()["Public"]
    assert keys.identifier == "test-key-2048-0"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json at all", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"Public": "x"}).encode(), "lacks Private"),
        (json.dumps({"Private": "x"}).encode(), "lacks Public"),
        (json.dumps({"Private": "***", "Public": "***"}).encode(), "not valid base64"),
        (
            json.dumps({"Private": base64.b64encode(b"garbage").decode(), "Public": keys_dict()["Public"]}).encode(),
            "does not load as a PKCS#8",
        ),
        (
            json.dumps({"Private": keys_dict()["Private"], "Public": base64.b64encode(b"garbage").decode()}).encode(),
            "does not load as a public key",
        ),
        (
            json.dumps({"Private": keys_dict()["Private"], "Public": keys_dict(n=1)["Public"]}).encode(),
            "do not belong together",
        ),
        (
            json.dumps(
                {"Private": "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "Public": "x"}
            ).encode(),
            "not PEM blocks",
        ),
        (b"\xff\xfe\x00garbage", "not a text file"),
    ],
)
def test_keys_json_errors_say_what_is_wrong(content, message):
    with pytest.raises(KeysFileError, match=message):
        parse_keys_json(content)


def test_it_refuses_short_keys():
    with pytest.raises(KeysFileError, match="1024-bit"):
        parse_keys_json(keys_json(bits=1024))


def test_cryptography_pitfall_is_avoided():
    """The PKCS#8 DER wrapped in a PKCS#1 PEM label fails in `cryptography`; our loader never does that."""
    from cryptography.hazmat.primitives import serialization

    pem = "-----BEGIN RSA PRIVATE KEY-----\n" + keys_dict()["Private"] + "\n-----END RSA PRIVATE KEY-----\n"
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem.encode(), password=None)
    assert parse_keys_json(keys_json()).private_key().key_size == 2048
