"""GuardUploadDevice: Knox Guard's per-device results of each upload part (GET devices/uploads/{uploadId}), read by
guard.tasks.read_upload_results after the part is applied and on "Refresh results". A new table only: existing
uploads get their results on the first refresh."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("guard", "0004_guardupload_engine"),
        ("portal", "0012_job_waiting"),
    ]

    operations = [
        migrations.CreateModel(
            name="GuardUploadDevice",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("device_uid", models.CharField(max_length=50, verbose_name="IMEI / serial")),
                ("approve_id", models.CharField(blank=True, max_length=50, verbose_name="approve ID")),
                (
                    "row_number",
                    models.PositiveIntegerField(blank=True, help_text="The device's spreadsheet row.", null=True),
                ),
                (
                    "outcome",
                    models.CharField(
                        choices=[("succeeded", "Succeeded"), ("failed", "Failed"), ("unknown", "Not stated")],
                        default="unknown",
                        max_length=9,
                    ),
                ),
                (
                    "result",
                    models.CharField(blank=True, help_text="Knox's own word, e.g. SUCCESS or FAIL.", max_length=20),
                ),
                ("code", models.CharField(blank=True, max_length=20)),
                ("message", models.CharField(blank=True, max_length=100)),
                ("reason", models.CharField(blank=True, max_length=400)),
                ("read_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "job",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="portal.job",
                    ),
                ),
                (
                    "upload",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="device_results",
                        to="guard.guardupload",
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
                "indexes": [
                    models.Index(fields=["job", "outcome", "id"], name="guard_upload_dev_job_idx"),
                    models.Index(fields=["job", "id"], name="guard_upload_dev_job_id_idx"),
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("upload", "device_uid"), name="guard_upload_device_uniq")
                ],
            },
        ),
    ]
