from __future__ import annotations

from django.apps import AppConfig


class PortalConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        # Login/logout are audited through Django's auth signals: they are the one hook that covers both the
        # portal's login page and the admin's.
        from django_q.signals import post_spawn

        from portal import checks, signals, useraudit  # noqa: F401
        from portal.files import allow_long_part_headers
        from portal.workers import on_worker_spawn

        # Every change to a user, group or permission (admin, shell, commands) is audited through the model
        # signals of the auth models: the one hook that also sees `manage.py shell` and createsuperuser.
        useraudit.connect()
        allow_long_part_headers()

        # A worker that starts resumes at once the jobs a dead worker of the same host left running.
        post_spawn.connect(on_worker_spawn, dispatch_uid="portal.resume_orphaned_jobs")

        from django.urls import reverse

        from portal.lookups import CONNECTION_TEST, Lookup, register_lookup

        register_lookup(
            Lookup(
                kind=CONNECTION_TEST,
                run="portal.lookups.connection_test",
                perm="portal.manage_accounts",
                template="portal/account_detail.html#test-answer",
                page=lambda job: f"{reverse('portal:account_detail', args=[job.account_id])}?job={job.pk}",
                unit="Services",
            )
        )
