"""GuardUpload becomes a portal.engine request (KnoxRequest): its `status`, which held both Knox's uploadStatus and
the portal's own Prepared/Sending/Unknown, is split into `knox_status` (Knox's) and `state` (ours); `total` is the
request's `device_count`; a part names its spreadsheet rows (`first_row`..`last_row`), so the engine can send it
or look its devices up without recomputing the parts."""

import re

import django.db.models.deletion
from django.db import migrations, models

STATES = [
    ("prepared", "Prepared"),
    ("sending", "Being sent"),
    ("submitted", "Sent, in progress at Knox"),
    ("complete", "Complete"),
    ("rejected", "Rejected by Knox"),
    ("failed", "Not accepted"),
]
# What the old job wrote itself; anything else is Knox's uploadStatus.
OURS = {"Prepared": "prepared", "Sending": "sending", "Unknown": "failed"}
OLD_PART = re.compile(r"job(\d+)part(\d+)")
OLD_PART_SIZE = 10_000  # KG_UPLOAD_MAX_DEVICES when these parts were cut
UNKNOWN_MESSAGE = "sent, but Knox's answer was lost; check Knox Guard's list of uploads before uploading these again"
NO_ROWS_MESSAGE = "the spreadsheet rows of this part were not found when the portal was upgraded"


def engine_states(apps, schema_editor):
    """The old job counted a part when it ended it (answered: valid succeeded, invalid failed; Unknown: all failed),
    so those end here with the same counts. A Prepared or Sending part (a job in flight) keeps its place: its rows
    are found the way the old job cut them, and the engine sends it, or settles it by looking its devices up."""
    GuardUpload = apps.get_model("guard", "GuardUpload")
    for up in GuardUpload.objects.select_related("job").iterator():
        part = OLD_PART.fullmatch(up.transaction_id)
        fields = {"sequence": int(part[2]) + 1 if part else 1}
        state = OURS.get(up.knox_status, "complete")
        if state == "complete":
            invalid = min(up.invalid, up.device_count)
            fields.update(succeeded=up.device_count - invalid, failed=invalid, completed_at=up.created_at)
        elif state == "failed":
            fields.update(knox_status="", failed=up.device_count, knox_code="UNKNOWN", knox_message=UNKNOWN_MESSAGE)
            fields["completed_at"] = up.created_at
        else:
            rows = _rows(apps, up, int(part[2]) if part else 0)
            fields.update(knox_status="", **rows)
            if state == "sending":
                fields["send_attempted_at"] = up.created_at
            if not rows:  # its staged rows are gone: it can be neither sent nor looked up
                code = "UNKNOWN" if state == "sending" else "NOT_SENT"
                state = "failed"
                fields.update(failed=up.device_count, knox_code=code, knox_message=NO_ROWS_MESSAGE)
                fields["completed_at"] = up.created_at
        GuardUpload.objects.filter(pk=up.pk).update(state=state, **fields)


def _rows(apps, up, index):
    UploadRow = apps.get_model("portal", "UploadRow")
    upload = (up.job.params or {}).get("upload") if up.job else None
    rows = list(
        UploadRow.objects.filter(upload_id=upload, status="valid")
        .order_by("row_number")
        .values_list("row_number", flat=True)[index * OLD_PART_SIZE : (index + 1) * OLD_PART_SIZE]
    )
    return {"first_row": rows[0], "last_row": rows[-1]} if rows else {}


def old_statuses(apps, schema_editor):
    """Backwards: the portal's states back into `status`, and the part names the old job finds them by."""
    GuardUpload = apps.get_model("guard", "GuardUpload")
    for state, status in (("prepared", "Prepared"), ("sending", "Sending"), ("submitted", "Sending")):
        GuardUpload.objects.filter(state=state).update(knox_status=status)
    GuardUpload.objects.filter(state="failed", knox_status="").update(knox_status="Unknown")
    for up in GuardUpload.objects.exclude(job=None).iterator():
        GuardUpload.objects.filter(pk=up.pk).update(transaction_id=f"job{up.job_id}part{up.sequence - 1}")


class Migration(migrations.Migration):
    dependencies = [
        ("guard", "0003_chunk_engine"),
        ("portal", "0012_job_waiting"),
    ]

    operations = [
        migrations.RenameField(model_name="guardupload", old_name="status", new_name="knox_status"),
        migrations.AlterField(
            model_name="guardupload",
            name="knox_status",
            field=models.CharField(blank=True, help_text="Knox's uploadStatus, e.g. Progress.", max_length=20),
        ),
        migrations.RenameField(model_name="guardupload", old_name="total", new_name="device_count"),
        migrations.AlterField(
            model_name="guardupload",
            name="job",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="guard_uploads",
                to="portal.job",
            ),
        ),
        migrations.AddField(
            model_name="guardupload",
            name="sequence",
            field=models.PositiveIntegerField(default=1, help_text="Order of the request within its job."),
        ),
        migrations.AddField(
            model_name="guardupload",
            name="state",
            field=models.CharField(choices=STATES, default="prepared", max_length=10),
        ),
        migrations.AddField(model_name="guardupload", name="succeeded", field=models.PositiveIntegerField(default=0)),
        migrations.AddField(model_name="guardupload", name="failed", field=models.PositiveIntegerField(default=0)),
        migrations.AddField(
            model_name="guardupload", name="knox_code", field=models.CharField(blank=True, max_length=20)
        ),
        migrations.AddField(model_name="guardupload", name="knox_message", field=models.TextField(blank=True)),
        migrations.AddField(
            model_name="guardupload", name="send_attempted_at", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="guardupload", name="submitted_at", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="guardupload", name="completed_at", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="guardupload", name="next_poll_at", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(model_name="guardupload", name="polls", field=models.PositiveIntegerField(default=0)),
        migrations.AddField(
            model_name="guardupload",
            name="first_row",
            field=models.PositiveIntegerField(blank=True, help_text="The part's first spreadsheet row.", null=True),
        ),
        migrations.AddField(
            model_name="guardupload",
            name="last_row",
            field=models.PositiveIntegerField(blank=True, help_text="The part's last spreadsheet row.", null=True),
        ),
        migrations.RunPython(engine_states, old_statuses),
    ]
