"""Email on job end (portal.notify): Job.end_notified, the per-user setting (UserSettings) and the every-minute
django-q2 schedule that emails whoever queued each ended job.

Jobs that ended before this migration count as dealt with (the column is added as True, then defaults to False
for new jobs): nobody gets a flood of emails about old jobs. Jobs still queued or running are emailed when they end.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

NAME = "Email staff about their ended jobs"


def unfinished_jobs_to_notify(apps, schema_editor):
    Job = apps.get_model("portal", "Job")
    Job.objects.filter(status__in=("queued", "running")).update(end_notified=False)


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": "portal.tasks.notify_ended_jobs", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("django_q", "0018_task_success_index"),
        ("portal", "0013_job_status_refused"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="UserSettings",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "email_on_job_end",
                    models.BooleanField(
                        default=True,
                        help_text="One email per job with its outcome and a link; several jobs ending together come as one email.",
                        verbose_name="Email me when a job I queued ends",
                    ),
                ),
            ],
            options={
                "verbose_name": "user settings",
                "verbose_name_plural": "user settings",
            },
        ),
        migrations.AddField(
            model_name="job",
            name="end_notified",
            field=models.BooleanField(default=True, editable=False, verbose_name="end emailed (or no email needed)"),
        ),
        migrations.AlterField(
            model_name="job",
            name="end_notified",
            field=models.BooleanField(default=False, editable=False, verbose_name="end emailed (or no email needed)"),
        ),
        migrations.RunPython(unfinished_jobs_to_notify, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("end_notified", False)), fields=["id"], name="job_end_not_notified_idx"
            ),
        ),
        migrations.AddField(
            model_name="usersettings",
            name="user",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.CASCADE, related_name="portal_settings", to=settings.AUTH_USER_MODEL
            ),
        ),
        migrations.RunPython(create_schedule, remove_schedule),
    ]
