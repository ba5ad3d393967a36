from __future__ import annotations

from django.apps import AppConfig


class EfotaConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "efota"
    verbose_name = "Knox E-FOTA"

    def ready(self) -> None:
        # The three E-FOTA reads pages ask for run in a worker (portal.lookups); viewers may ask for them.
        from django.urls import reverse

        from efota.models import ABNORMAL_LOOKUP, FIRMWARE_LOOKUP, LICENCE_LOOKUP
        from portal.lookups import Lookup, register_lookup

        for kind, url_name, run, partial, unit in (
            (LICENCE_LOOKUP, "efota:licences", "lookup_licence", "licences.html#licence-answer", ""),
            (FIRMWARE_LOOKUP, "efota:firmware", "lookup_firmware", "firmware.html#firmware-answer", ""),
            (ABNORMAL_LOOKUP, "efota:abnormal", "lookup_abnormal", "abnormal.html#abnormal-answer", "Devices"),
        ):
            register_lookup(
                Lookup(
                    kind=kind,
                    run=f"efota.tasks.{run}",
                    perm="portal.access_portal",
                    template=f"efota/{partial}",
                    page=lambda job, url_name=url_name: f"{reverse(url_name)}?job={job.pk}",
                    unit=unit,
                )
            )
