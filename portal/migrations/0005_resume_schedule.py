"""A django-q2 schedule that resumes jobs whose worker died (portal.tasks.resume_stale_jobs), every minute."""

from __future__ import annotations

from django.db import migrations

NAME = "Resume jobs whose worker died"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": "portal.tasks.resume_stale_jobs", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("portal", "0004_job_lease"), ("django_q", "0018_task_success_index")]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
