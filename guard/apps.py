from __future__ import annotations

from django.apps import AppConfig


class GuardConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "guard"
    verbose_name = "Knox Guard"

    def ready(self) -> None:
        from portal.uploads import register_row_check

        register_row_check("guard", "guard.models.check_rows")
