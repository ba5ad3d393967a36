from __future__ import annotations

from django.apps import AppConfig


class EfotaConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "efota"
    verbose_name = "Knox E-FOTA"
