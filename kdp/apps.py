from __future__ import annotations

from django.apps import AppConfig


class KdpConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "kdp"
    verbose_name = "Knox Deployment Program"

    def ready(self) -> None:
        from portal.dashboard import register

        register("kdp.views.dashboard_panel")
