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


# A lease is renewed every quarter of its length (portal.workers.LeaseRenewer); below this, one slow database write
# (SQLite waits up to 30 s for its lock, but a renewal is a one-row UPDATE) could let it lapse under a live worker.
MIN_JOB_LEASE_SECONDS = 5


@register()
def job_lease(app_configs: Any, **kwargs: Any) -> list[Error]:
    """The rule that keeps one worker per job (issue 13 §4): the lease outlives its renewal interval, and
    django-q2 hands a task out again only after it has timed out, long after the lease would have expired."""
    errors = []
    lease = settings.JOB_LEASE_SECONDS
    timeout = int(settings.Q_CLUSTER["timeout"])
    retry = int(settings.Q_CLUSTER["retry"])
    if lease < MIN_JOB_LEASE_SECONDS:
        errors.append(
            Error(
                f"JOB_LEASE_SECONDS is {lease}; it must be at least {MIN_JOB_LEASE_SECONDS}.",
                hint="A worker renews its lease every quarter of JOB_LEASE_SECONDS; 60 is the default.",
                id="portal.E002",
            )
        )
    if lease >= timeout:
        errors.append(
            Error(
                f"JOB_LEASE_SECONDS ({lease}) must be shorter than Q_TIMEOUT ({timeout}).",
                hint="A job whose worker died waits for its lease to expire; Q_TIMEOUT bounds a whole job.",
                id="portal.E003",
            )
        )
    if retry <= timeout:
        errors.append(
            Error(
                f"Q_RETRY ({retry}) must be longer than Q_TIMEOUT ({timeout}).",
                hint="Otherwise django-q2 hands a task that is still running to a second worker (django-q2 docs).",
                id="portal.E004",
            )
        )
    patience = settings.KNOX_OUTAGE_PATIENCE
    if patience >= timeout:
        errors.append(
            Error(
                f"KNOX_OUTAGE_PATIENCE ({patience}) must be shorter than Q_TIMEOUT ({timeout}).",
                hint="A job waiting out a Knox outage holds its worker; django-q2 would stop it before the wait ends.",
                id="portal.E005",
            )
        )
    return errors
