"""Lift a login lockout (LOGIN_THROTTLE_FAILURES) for a username before its window ends."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from portal.models import AuditEvent
from portal.throttle import reset_username


class Command(BaseCommand):
    help = "Clear the failed-login count of USERNAME, so they can sign in again at once."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        reset_username(username)
        AuditEvent.objects.record("auth.login_unlocked", summary={"username": username, "via": "command line"})
        self.stdout.write(f"Failed sign-ins for “{username}” cleared; they can sign in now.")
