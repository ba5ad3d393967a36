from __future__ import annotations

from django.apps import AppConfig


class GuardConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "guard"
    verbose_name = "Knox Guard"
