"""Upload.file_deleted_at, and the hourly django-q2 schedule that deletes spreadsheet files past their retention
(UPLOAD_RETENTION_DAYS), media files no upload points at, and the portal's stale temporary files
(portal.tasks.cleanup_uploads)."""

from __future__ import annotations

from django.db import migrations, models

NAME = "Delete spreadsheet files past their retention"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": "portal.tasks.cleanup_uploads", "schedule_type": "H", "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("portal", "0008_job_result_retry_of"), ("django_q", "0018_task_success_index")]

    operations = [
        migrations.AddField(
            model_name="upload",
            name="file_deleted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(create_schedule, remove_schedule),
    ]
