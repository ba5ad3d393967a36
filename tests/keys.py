"""Test key material in Samsung's keys.json format, made here (not by the client code under test)."""

from __future__ import annotations

import base64
import json
from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@cache
def _key(bits: int, n: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def keys_dict(bits: int = 2048, n: int = 0) -> dict[str, str]:
    """{"Private": base64 PKCS#8 DER, "Public": base64 SPKI DER, "Identifier": ...}; `n` picks another key."""
    key = _key(bits, n)
    private = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "Private": base64.b64encode(private).decode(),
        "Public": base64.b64encode(public).decode(),
        "Identifier": f"test-key-{bits}-{n}",
    }


def keys_json(bits: int = 2048, n: int = 0) -> bytes:
    return json.dumps(keys_dict(bits, n)).encode()


def public_key(n: int = 0) -> rsa.RSAPublicKey:
    return _key(2048, n).public_key()
