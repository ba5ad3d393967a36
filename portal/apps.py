from __future__ import annotations

from django.apps import AppConfig


class PortalConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        # Login/logout are audited through Django's auth signals: they are the one hook that covers both the
        # portal's login page and the admin's.
        from portal import checks, signals  # noqa: F401
