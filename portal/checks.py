"""System checks run by `manage.py check` (and at start-up of runserver, migrate, qcluster)."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, register


@register()
def field_encryption_keys(app_configs: Any, **kwargs: Any) -> list[Error]:
    errors = []
    for i, key in enumerate(settings.FIELD_ENCRYPTION_KEYS, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            errors.append(
                Error(
                    f"FIELD_ENCRYPTION_KEYS entry {i} is not a Fernet key (32 url-safe base64-encoded bytes).",
                    hint="Generate one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'",
                    id="portal.E001",
                )
            )
    return errors
