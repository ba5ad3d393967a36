"""Knox Guard actions end to end against the in-process sandbox."""

from __future__ import annotations

import time

import requests

from guard.client import ActionParams
from guard.models import GuardAction, GuardDevice, queue_action
from guard.tasks import run_actions, sync_devices
from portal.models import Job
from tests.guard.helpers import device_in


def knox_state(server, uid: str) -> str:
    return requests.get(f"{server.url}/_sandbox/state", timeout=10).json()["guard"]["devices"][uid]["state"]


def test_single_lock_goes_through_the_sync_endpoint(guard_synced, knox_sandbox):
    d = device_in(guard_synced, "Enrolled")
    job = queue_action(
        guard_synced, "lock", ActionParams(message="Payment overdue", tel="+44 20 7946 0000"), user=None, devices=[d.pk]
    )
    run_actions(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error_summary
    d.refresh_from_db()
    assert d.state == "Locking" and d.last_action == "lock" and d.last_outcome == "succeeded"
    assert knox_state(knox_sandbox, d.device_uid) in ("Locking", "Locked")
    a = GuardAction.objects.get(job=job)
    assert a.chunk is None and a.transaction_id and a.state_before == "Enrolled" and a.state_after == "Locking"


def test_bulk_blink_goes_async_and_reads_results(guard_synced, knox_sandbox):
    enrolled = list(GuardDevice.objects.filter(account=guard_synced, state="Enrolled"))
    pending = device_in(guard_synced, "Pending")
    params = ActionParams(message="Your payment is due", email="pay@example.org", interval=3600, time_limit=(23, 7))
    job = queue_action(guard_synced, "blink", params, user=None, devices=[d.pk for d in enrolled] + [pending.pk])
    run_actions(job.pk)
    job.refresh_from_db()
    assert (job.total, job.succeeded, job.failed) == (len(enrolled) + 1, len(enrolled), 1)
    refused = GuardAction.objects.get(job=job, outcome="failed")
    assert refused.device == pending and refused.code == "STATE"  # checked before sending
    assert GuardAction.objects.filter(job=job, chunk__isnull=False).count() == len(enrolled)
    time.sleep(0.3)
    assert all(knox_state(knox_sandbox, d.device_uid) in ("StartingReminder", "Blinked") for d in enrolled)


def test_knox_refusal_is_recorded_with_the_code(guard_synced, knox_sandbox):
    d = device_in(guard_synced, "Enrolled")
    # Knox moves the device on behind the portal's back: the local record still says Enrolled.
    GuardDevice.objects.filter(pk=d.pk).update(state="Enrolled")
    requests.post(f"{knox_sandbox.url}/_sandbox/reset", timeout=5)
    locked = device_in(guard_synced, "Locked")
    GuardDevice.objects.filter(pk=locked.pk).update(state="Enrolled")  # stale local state
    job = queue_action(guard_synced, "lock", ActionParams(message="m", tel="123456"), user=None, devices=[locked.pk])
    run_actions(job.pk)
    a = GuardAction.objects.get(job=job)
    assert a.outcome == "failed" and a.code == "4000310"
    assert "state does not allow" in a.explanation()


def test_sync_refreshes_states(guard_synced, knox_sandbox):
    d = device_in(guard_synced, "Enrolled")
    GuardDevice.objects.filter(pk=d.pk).update(state="Pending")
    job = Job.objects.create(kind="guard.sync", account=guard_synced)
    sync_devices(job.pk)
    d.refresh_from_db()
    assert d.state == "Enrolled" and d.synced_at


def test_a_day_span_blink_reaches_knox_with_exactly_the_seed_003_flags(guard_synced, knox_sandbox):
    """Bulk (async, deviceUid as a list) and single (sync): Knox stores the quiet period as chosen."""
    enrolled = list(GuardDevice.objects.filter(account=guard_synced, state="Enrolled").order_by("id"))
    params = ActionParams(message="Due", tel="+44 20 7946 0000", interval=3600, time_limit=(6, 7), days_limit=(0, 1))
    for devices in (enrolled[:2], enrolled[2:3]):
        job = queue_action(guard_synced, "blink", params, user=None, devices=[d.pk for d in devices])
        run_actions(job.pk)
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED, job.error_summary
    knox = requests.get(f"{knox_sandbox.url}/_sandbox/state", timeout=10).json()["guard"]["devices"]
    for d in enrolled[:3]:
        reminder = knox[d.device_uid]["reminder"]
        flags = {k: reminder[k] for k in ("timeLimitEnable", "daysLimitEnable", "timeLimit", "daysLimit")}
        assert flags == {"timeLimitEnable": False, "daysLimitEnable": True, "timeLimit": [6, 7], "daysLimit": [0, 1]}


def test_unlock_of_an_enrolled_device_is_sent_and_accepted(guard_synced, knox_sandbox):
    """Seed 003: Enrolled allows lock, unlock, message and blink; the portal no longer refuses it before sending."""
    d = device_in(guard_synced, "Enrolled")
    job = queue_action(guard_synced, "unlock", ActionParams(), user=None, devices=[d.pk])
    run_actions(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error_summary
    assert GuardAction.objects.get(job=job).code == ""
    assert knox_state(knox_sandbox, d.device_uid) in ("Unlocking", "Enrolled")
