"""Encryption at rest for secrets stored in the database (Knox private keys, client secrets, API keys).

Fernet (AES-128-CBC + HMAC-SHA256) through MultiFernet: the first key in `FIELD_ENCRYPTION_KEYS` encrypts, every
key decrypts. Rotation: put a new key first, keep the old one after it, run `manage.py rotate_encryption_keys`,
then drop the old key (docs/deploy.md has the procedure).
"""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretDecryptionError(Exception):
    """A stored secret cannot be decrypted with any configured key (wrong or missing FIELD_ENCRYPTION_KEYS)."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64-encoded bytes)"
        ) from None


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError(
            "A stored secret cannot be decrypted with the configured FIELD_ENCRYPTION_KEYS; "
            "was the key changed without keeping the old one?"
        ) from None


def rotate(ciphertext: str) -> str:
    """Re-encrypt with the first (current) key; raises SecretDecryptionError if no key opens it."""
    try:
        return fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError("A stored secret cannot be decrypted with any configured key") from None
