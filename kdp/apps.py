from __future__ import annotations

from django.apps import AppConfig


class KdpConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "kdp"
    verbose_name = "Knox Deployment Program"

    def ready(self) -> None:
        from portal.dashboard import register
        from portal.jobsummary import register_details
        from portal.models import PROGRESS_UNITS
        from portal.uploads import register_row_check

        register("kdp.views.dashboard_panel")
        register_details("kdp.jobsummary.summary_details")
        register_row_check("kdp", "kdp.tasks.check_rows")
        PROGRESS_UNITS["kdp.customers"] = "Customers"  # a refresh counts the customers it read, not devices
