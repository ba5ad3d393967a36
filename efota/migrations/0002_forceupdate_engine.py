"""ForceUpdate becomes a portal.engine request (KnoxRequest): E-FOTA's figure `failed` is renamed `download_failed`
(KnoxRequest.failed counts the devices a request failed for), last_code/last_error become knox_code/knox_message,
and every existing row gets the state its old columns imply."""

from django.db import migrations, models

STATES = [
    ("prepared", "Prepared"),
    ("sending", "Being sent"),
    ("submitted", "Sent, in progress at Knox"),
    ("complete", "Complete"),
    ("rejected", "Rejected by Knox"),
    ("failed", "Not accepted"),
]


def engine_states(apps, schema_editor):
    """The old job counted a part's devices when it ended it: started (succeeded) or refused/unknown (failed), so
    those parts end here with the same counts and the engine never counts them again. A started part is COMPLETE
    even if its job was still following it: the devices are updating at E-FOTA and "Refresh status" reads them.
    A part attempted but neither started nor refused was being sent when its worker stopped: SENDING, which the
    engine settles (a force update is never sent twice). The rest was never sent: PREPARED."""
    ForceUpdate = apps.get_model("efota", "ForceUpdate")
    for fu in ForceUpdate.objects.all().iterator():
        n = len(fu.serials or [])
        ended = fu.checked_at or fu.send_attempted_at or fu.created_at
        fields = {"device_count": n}
        if fu.force_update_id:
            fields.update(state="complete", succeeded=n, submitted_at=fu.send_attempted_at, completed_at=ended)
        elif fu.knox_code:
            fields.update(state="failed", failed=n, completed_at=ended)
        elif fu.send_attempted_at is not None:
            fields.update(state="sending")
        ForceUpdate.objects.filter(pk=fu.pk).update(**fields)


class Migration(migrations.Migration):
    dependencies = [
        ("efota", "0001_initial"),
    ]

    operations = [
        migrations.RenameField(model_name="forceupdate", old_name="failed", new_name="download_failed"),
        migrations.AlterField(
            model_name="forceupdate",
            name="download_failed",
            field=models.PositiveIntegerField(default=0, help_text="Devices whose download failed (E-FOTA)."),
        ),
        migrations.RenameField(model_name="forceupdate", old_name="last_code", new_name="knox_code"),
        migrations.RenameField(model_name="forceupdate", old_name="last_error", new_name="knox_message"),
        migrations.AlterField(model_name="forceupdate", name="knox_message", field=models.TextField(blank=True)),
        migrations.AlterField(
            model_name="forceupdate",
            name="sequence",
            field=models.PositiveIntegerField(default=1, help_text="Order of the request within its job."),
        ),
        migrations.AddField(
            model_name="forceupdate",
            name="state",
            field=models.CharField(choices=STATES, default="prepared", max_length=10),
        ),
        migrations.AddField(
            model_name="forceupdate", name="device_count", field=models.PositiveIntegerField(default=0)
        ),
        migrations.AddField(model_name="forceupdate", name="succeeded", field=models.PositiveIntegerField(default=0)),
        migrations.AddField(model_name="forceupdate", name="failed", field=models.PositiveIntegerField(default=0)),
        migrations.AddField(
            model_name="forceupdate", name="submitted_at", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="forceupdate", name="completed_at", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="forceupdate", name="next_poll_at", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(model_name="forceupdate", name="polls", field=models.PositiveIntegerField(default=0)),
        # Backwards the old columns (force_update_id, last_code, send_attempted_at) still say what they said.
        migrations.RunPython(engine_states, migrations.RunPython.noop),
    ]
