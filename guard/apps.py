from __future__ import annotations

from django.apps import AppConfig


class GuardConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "guard"
    verbose_name = "Knox Guard"

    def ready(self) -> None:
        from portal.jobsummary import register_details
        from portal.uploads import register_row_check

        register_row_check("guard", "guard.models.check_rows")
        register_details("guard.jobsummary.summary_details")

        # Knox's own list of uploads is read by a worker (portal.lookups); operators may ask for it.
        from django.urls import reverse

        from guard.models import KNOX_UPLOADS_LOOKUP
        from portal.lookups import Lookup, register_lookup

        register_lookup(
            Lookup(
                kind=KNOX_UPLOADS_LOOKUP,
                run="guard.tasks.lookup_knox_uploads",
                perm="portal.queue_jobs",
                template="guard/uploads.html#knox-uploads-answer",
                page=lambda job: f"{reverse('guard:uploads')}?job={job.pk}",
            )
        )
