"""The client's address, by one rule for the audit log and login throttling."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest | None) -> str:
    """REMOTE_ADDR; behind a reverse proxy (AUDIT_TRUST_X_FORWARDED_FOR), the *last* X-Forwarded-For entry.

    The proxy appends the address it received the connection from, so the last entry is the one no client can
    choose; earlier entries are whatever the client sent. Exactly one trusted proxy is assumed (docs/deploy.md).
    Empty when unknown."""
    if request is None:
        return ""
    ip = request.META.get("REMOTE_ADDR") or ""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR") or ""
    if settings.AUDIT_TRUST_X_FORWARDED_FOR and forwarded.strip(" ,"):
        ip = forwarded.rstrip(" ,").rsplit(",", 1)[-1].strip()
    return ip
