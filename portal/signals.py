"""Audit of authentication events (signal handlers; see portal/apps.py). Changes to users, groups and permissions
are audited by portal/useraudit.py."""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from portal.models import AuditEvent


@receiver(user_logged_in)
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    from portal.middleware import LOGIN_AT_KEY

    if request is not None and hasattr(request, "session"):
        request.session[LOGIN_AT_KEY] = time.time()
    AuditEvent.objects.record("auth.login", request=request, actor=user)


@receiver(user_logged_out)
def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        AuditEvent.objects.record("auth.logout", request=request, actor=user)


@receiver(user_login_failed)
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    # Only the username is kept; the password never reaches the log (scrub() would redact it anyway).
    AuditEvent.objects.record(
        "auth.login_failed", request=request, summary={"username": str(credentials.get("username", ""))[:150]}
    )
