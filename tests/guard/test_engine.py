"""The Knox Guard job engine (guard.tasks) against the in-process sandbox: bulk actions in asynchronous requests
and their results, resuming after a crash without acting twice, answers lost on the way back, an unreachable
Knox, the shared rate limit, device sync paging and uploads to Knox Guard."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from guard.client import ActionParams, GuardClient
from guard.models import GuardAction, GuardChunk, GuardDevice, GuardUpload, queue_action, queue_upload
from guard.tasks import (
    BulkAction,
    plan,
    run_actions,
    run_upload,
    sync_devices,
)
from portal.engine import _send
from portal.jobsummary import job_summary
from portal.knox import errors
from portal.models import Job, KnoxAccount, Upload
from portal.uploads import stage_upload
from tests.base import ROOT, child_env, expire_lease, fresh_imeis, migrated_database, sandbox_state
from tests.guard.helpers import KG, calls, device_in, guard_upload

LOCK = ActionParams(message="Payment overdue", tel="+44 20 7946 0000")
BLINK = ActionParams(message="Your payment is due", email="pay@example.org", interval=3600, time_limit=(22, 7))


def knox_devices(server) -> dict[str, dict]:
    return sandbox_state(server)["guard"]["devices"]


def devices(account: KnoxAccount, *states: str) -> list[GuardDevice]:
    return list(GuardDevice.objects.filter(account=account, state__in=states).order_by("id"))


def finished(job: Job) -> Job:
    job.refresh_from_db()
    assert job.is_finished, job.status
    return job


# --- bulk actions -----------------------------------------------------------------------------------------------


def test_bulk_approve_of_pending_devices_goes_async(guard_synced, knox_sandbox):
    pending = devices(guard_synced, "Pending")
    job = queue_action(
        guard_synced, "approve", ActionParams(approve_comment="KYC done"), user=None, devices=[d.pk for d in pending]
    )
    run_actions(job.pk)
    job = finished(job)
    assert (job.status, job.total, job.succeeded, job.failed) == ("succeeded", 3, 3, 0), job.error_summary
    chunk = GuardChunk.objects.get(job=job)
    assert (chunk.state, chunk.device_count, chunk.succeeded, chunk.failed) == ("complete", 3, 3, 0)
    # Knox's own record of the request, read by its transactionId.
    result = GuardClient(guard_synced).result(chunk.transaction_id)
    assert (result.count, result.success, result.fail, result.failures) == (3, 3, 0, {})
    assert sandbox_state(knox_sandbox)["guard"]["transactions"][chunk.transaction_id]["action"] == "approve"
    assert (calls(knox_sandbox, "devices/approveAsync"), calls(knox_sandbox, "devices/approve")) == (1, 0)
    knox = knox_devices(knox_sandbox)
    assert {knox[d.device_uid]["state"] for d in pending} <= {"Accepted", "Enrolled"}
    assert {knox[d.device_uid]["approveComment"] for d in pending} == {"KYC done"}
    # The portal's records follow: the device, and one action per device with the request that carried it.
    assert {d.state for d in devices(guard_synced, "Accepted")} == {"Accepted"}
    assert GuardDevice.objects.filter(pk__in=[d.pk for d in pending], state="Accepted", pending_job=None).count() == 3
    actions = GuardAction.objects.filter(job=job)
    assert {(a.outcome, a.state_before, a.state_after, a.transaction_id) for a in actions} == {
        ("succeeded", "Pending", "Accepted", chunk.transaction_id)
    }


def test_more_devices_than_one_async_request_takes_go_in_several_chunks(guard_synced, knox_sandbox, monkeypatch):
    """The sandbox has 13 devices, so the 1,000-device limit is lowered to 2 for this job."""
    monkeypatch.setattr("guard.tasks.KG_ASYNC_MAX_DEVICES", 2)
    targets = devices(guard_synced, "Enrolled", "Locked", "Blinked")
    pending = device_in(guard_synced, "Pending")
    job = queue_action(guard_synced, "message", LOCK, user=None, devices=[d.pk for d in [*targets, pending]])
    run_actions(job.pk)
    job = finished(job)
    assert (job.status, job.total, job.succeeded, job.failed) == ("partial", 8, 7, 1)
    chunks = list(GuardChunk.objects.filter(job=job).order_by("sequence"))
    assert [c.device_count for c in chunks] == [2, 2, 2, 1] and {c.state for c in chunks} == {"complete"}
    assert len({c.transaction_id for c in chunks}) == 4
    knox = sandbox_state(knox_sandbox)
    assert [knox["guard"]["transactions"][c.transaction_id]["count"] for c in chunks] == [2, 2, 2, 1]
    assert knox["counters"]["by_path"][f"{KG}/devices/sendMessageAsync"] == 4
    assert {knox["guard"]["devices"][d.device_uid]["lastMessage"]["message"] for d in targets} == {LOCK.message}
    refused = GuardAction.objects.get(job=job, outcome="failed")
    assert (refused.device, refused.code, refused.chunk) == (pending, "STATE", None)  # never sent
    # sendMessage changes no state
    assert {d.state for d in GuardDevice.objects.filter(pk__in=[d.pk for d in targets])} == {
        "Enrolled",
        "Locked",
        "Blinked",
    }


def crash_after_first_chunk(account: KnoxAccount, enrolled: list[GuardDevice], monkeypatch) -> Job:
    """A worker plans a 3-device blink in chunks of 2, sends the first chunk, then dies."""
    monkeypatch.setattr("guard.tasks.KG_ASYNC_MAX_DEVICES", 2)
    job = queue_action(account, "blink", BLINK, user=None, devices=[d.pk for d in enrolled])
    assert job.claim("worker-that-dies")
    plan(job)
    first = GuardChunk.objects.get(job=job, sequence=1)
    _send(BulkAction(job), first)
    expire_lease(job)
    return job


def assert_blinked_once(job: Job, enrolled: list[GuardDevice], server) -> None:
    job = finished(job)
    assert (job.status, job.total, job.succeeded, job.failed) == ("succeeded", 3, 3, 0), job.error_summary
    actions = GuardAction.objects.filter(job=job)
    assert actions.count() == 3 and {a.outcome for a in actions} == {"succeeded"}
    assert sorted(a.device_id for a in actions) == sorted(d.pk for d in enrolled)
    knox = sandbox_state(server)
    txids = list(GuardChunk.objects.filter(job=job).values_list("transaction_id", flat=True))
    applied = [knox["guard"]["transactions"][t] for t in txids]
    # Each device was blinked by exactly one request; a second blink would have failed (StartingReminder).
    assert sum(t["success"] for t in applied) == 3 and sum(t["fail"] for t in applied) == 0
    assert len(knox["guard"]["transactions"]) == 2
    assert {knox["guard"]["devices"][d.device_uid]["state"] for d in enrolled} <= {"StartingReminder", "Blinked"}
    assert not GuardDevice.objects.filter(pending_job=job).exists()


def test_a_bulk_job_resumed_after_a_crash_acts_on_every_device_once(guard_synced, knox_sandbox, monkeypatch):
    enrolled = devices(guard_synced, "Enrolled")
    job = crash_after_first_chunk(guard_synced, enrolled, monkeypatch)
    run_actions(job.pk)  # the next worker: reads the first chunk's result, sends the second
    assert_blinked_once(job, enrolled, knox_sandbox)
    assert calls(knox_sandbox, "devices/blinkAsync") == 2


def test_a_chunk_sent_again_after_a_crash_is_not_applied_twice(guard_synced, knox_sandbox, monkeypatch):
    """The worker died after Knox took the first chunk but before it recorded that: the chunk is sent again with
    the same x-knox-transactionId and body, and Knox answers without applying it a second time."""
    enrolled = devices(guard_synced, "Enrolled")
    job = crash_after_first_chunk(guard_synced, enrolled, monkeypatch)
    GuardChunk.objects.filter(job=job, sequence=1).update(state="prepared", submitted_at=None, next_poll_at=None)
    run_actions(job.pk)
    assert_blinked_once(job, enrolled, knox_sandbox)
    assert calls(knox_sandbox, "devices/blinkAsync") == 3


# --- one device, outcome unknown ----------------------------------------------------------------------------------


def lose_the_answer(monkeypatch, *, apply: bool) -> None:
    """Knox's answer to a single-device action is lost (reset, cut off): applied or not, the client cannot tell.
    (The sandbox's truncate fault would also cut the devices/list answer the engine reads next.)"""
    real_act = GuardClient.act

    def act(self, *args, **kwargs):
        if apply:
            real_act(self, *args, **kwargs)
        raise errors.KnoxOutcomeUnknown("The connection to Knox was reset", service="guard")

    monkeypatch.setattr("guard.client.GuardClient.act", act)


def test_a_lost_answer_is_settled_by_the_devices_state_in_knox(guard_synced, knox_sandbox, monkeypatch):
    d = device_in(guard_synced, "Enrolled")
    lose_the_answer(monkeypatch, apply=True)
    job = queue_action(guard_synced, "lock", LOCK, user=None, devices=[d.pk])
    run_actions(job.pk)
    job = finished(job)
    assert (job.status, job.succeeded) == ("succeeded", 1), job.error_summary
    a = GuardAction.objects.get(job=job)
    assert a.outcome == "succeeded" and a.reason == "confirmed by the device's state in Knox (Locking)"
    assert a.state_after == "Locking" and a.chunk is None
    assert calls(knox_sandbox, "devices/lock") == 1  # never sent twice
    d.refresh_from_db()
    assert (d.state, d.last_outcome, d.pending_job) == ("Locking", "succeeded", None)


def test_a_lost_answer_of_an_action_knox_never_applied_is_sent_again_then_reported(
    guard_synced, knox_sandbox, monkeypatch, settings
):
    """The device is provably untouched after each lost answer, so the action is sent again, a bounded number of
    times; then the device is reported as not changed, in words."""
    d = device_in(guard_synced, "Enrolled")
    sent = []

    def act(self, *args, **kwargs):
        sent.append(1)
        raise errors.KnoxOutcomeUnknown("The connection to Knox was reset", service="guard")

    monkeypatch.setattr("guard.single.backoff_delay", lambda attempt: 0)
    monkeypatch.setattr("guard.client.GuardClient.act", act)
    job = queue_action(guard_synced, "lock", LOCK, user=None, devices=[d.pk])
    run_actions(job.pk)
    assert finished(job).status == "failed" and len(sent) == settings.KNOX_MAX_RETRIES + 1
    a = GuardAction.objects.get(job=job)
    assert (a.outcome, a.code) == ("failed", "NOT_APPLIED") and "still Active" in a.reason
    assert "not applied" in a.explanation()
    assert knox_devices(knox_sandbox)[d.device_uid]["state"] == "Enrolled"


def test_a_lost_answer_then_a_good_one_locks_the_device_once(guard_synced, knox_sandbox, monkeypatch):
    d = device_in(guard_synced, "Enrolled")
    real_act = GuardClient.act
    calls = []

    def act(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise errors.KnoxOutcomeUnknown("The connection to Knox was reset", service="guard")
        return real_act(self, *args, **kwargs)

    monkeypatch.setattr("guard.single.backoff_delay", lambda attempt: 0)
    monkeypatch.setattr("guard.client.GuardClient.act", act)
    job = queue_action(guard_synced, "lock", LOCK, user=None, devices=[d.pk])
    run_actions(job.pk)
    assert (finished(job).status, len(calls)) == ("succeeded", 2)
    assert knox_devices(knox_sandbox)[d.device_uid]["state"] in ("Locking", "Locked")


@pytest.mark.parametrize("reached_knox", [True, False])
def test_a_worker_that_died_after_sending_is_never_followed_by_a_second_send(guard_synced, knox_sandbox, reached_knox):
    """`sent_at` is committed before the call; a worker that finds it set decides by Knox's state."""
    d = device_in(guard_synced, "Enrolled")
    job = queue_action(guard_synced, "lock", LOCK, user=None, devices=[d.pk])
    assert job.claim("worker-that-dies")
    plan(job)
    a = GuardAction.objects.get(job=job)
    GuardAction.objects.filter(pk=a.pk).update(sent_at=timezone.now(), transaction_id="deadbeef" * 4)
    if reached_knox:
        GuardClient(guard_synced).act("lock", d.ref, LOCK, transaction_id="deadbeef" * 4)
    expire_lease(job)
    run_actions(job.pk)
    job = finished(job)
    assert calls(knox_sandbox, "devices/lock") == (1 if reached_knox else 0)
    a.refresh_from_db()
    if reached_knox:
        assert (job.status, a.outcome) == ("succeeded", "succeeded") and "confirmed" in a.reason
    else:
        assert (job.status, a.outcome, a.code) == ("failed", "failed", "UNKNOWN")
        assert knox_devices(knox_sandbox)[d.device_uid]["state"] == "Enrolled"


# --- Knox unreachable -------------------------------------------------------------------------------------------


@pytest.fixture
def dead_knox(settings):
    """Nothing listens on port 9 (discard): every connection is refused; retries kept short."""
    settings.KNOX_SANDBOX_URL = "http://127.0.0.1:9"
    settings.KNOX_MAX_RETRIES = 1
    settings.KNOX_BACKOFF_BASE = 0.01
    settings.KNOX_BACKOFF_MAX = 0.02


def test_a_dead_knox_fails_the_job_with_a_reason_and_frees_the_devices(guard_synced, dead_knox):
    enrolled = devices(guard_synced, "Enrolled")
    job = queue_action(guard_synced, "lock", LOCK, user=None, devices=[d.pk for d in enrolled])
    run_actions(job.pk)
    job = finished(job)
    assert (job.status, job.succeeded, job.failed) == ("failed", 0, 3)
    assert "connection to Knox failed" in job.error_summary
    actions = GuardAction.objects.filter(job=job)
    assert {a.outcome for a in actions} == {"failed"} and {a.code for a in actions} == {"NOT_SENT"}
    assert all(a.explanation() for a in actions)
    assert GuardChunk.objects.get(job=job).state == "failed"
    assert not GuardDevice.objects.filter(pending_job__isnull=False).exists()
    assert {d.state for d in GuardDevice.objects.filter(pk__in=[d.pk for d in enrolled])} == {"Enrolled"}
    summary = job_summary(job)
    assert summary["status"] == "failed" and len(summary["failures"]) == 3


def test_a_dead_knox_fails_a_single_device_job_as_not_sent(guard_synced, dead_knox):
    d = device_in(guard_synced, "Enrolled")
    job = queue_action(guard_synced, "lock", LOCK, user=None, devices=[d.pk])
    run_actions(job.pk)
    job = finished(job)
    assert job.status == "failed" and "connection to Knox failed" in job.error_summary
    a = GuardAction.objects.get(job=job)
    assert (a.outcome, a.code, a.sent_at) == ("failed", "NOT_SENT", None)
    assert a.explanation().startswith("Not sent")
    assert not GuardDevice.objects.filter(pending_job__isnull=False).exists()


def test_a_bulk_request_that_never_left_is_reported_not_sent(guard_synced, dead_knox):
    """Connection refused: nothing reached Knox, so "Not sent", not "Sent, but Knox's answer could not be read"."""
    enrolled = devices(guard_synced, "Enrolled")
    job = queue_action(guard_synced, "lock", LOCK, user=None, devices=[d.pk for d in enrolled])
    run_actions(job.pk)
    assert set(GuardAction.objects.filter(job=job).values_list("code", flat=True)) == {"NOT_SENT"}


# --- the shared rate limit --------------------------------------------------------------------------------------

SETUP = """
import json, sys
import django
django.setup()
from django.core.management import call_command
from guard.models import GuardDevice
from guard.tasks import sync_devices
from portal.models import Job, KnoxAccount
call_command("import_sandbox_account", sys.argv[1])
account = KnoxAccount.objects.get(name="Sandbox")
job = Job.objects.create(kind="guard.sync", account=account)
sync_devices(job.pk)
print(json.dumps(list(GuardDevice.objects.filter(state="Enrolled").values_list("pk", flat=True))))
"""

WORKER = """
import json, sys, time
import django
django.setup()
from guard.client import ActionParams, GuardClient
from guard.models import GuardDevice, queue_action
from guard.tasks import run_actions
from portal.models import Job, KnoxAccount
account = KnoxAccount.objects.get(name="Sandbox")
device = GuardDevice.objects.get(pk=int(sys.argv[1]))
params = ActionParams(message="Payment due", tel="+44 20 7946 0000")
client = GuardClient(account)
statuses, started = set(), time.time()
for _ in range(int(sys.argv[2])):
    job = queue_action(account, "message", params, user=None, devices=[device.pk])
    run_actions(job.pk)
    statuses.add(Job.objects.get(pk=job.pk).status)
    for _ in range(int(sys.argv[3])):
        client.act("message", device.ref, params, transaction_id="othercaller")
print(json.dumps({"started": started, "ended": time.time(), "statuses": sorted(statuses)}))
"""


@pytest.mark.slow
def test_two_worker_processes_together_stay_under_the_knox_guard_rate_limit(knox_sandbox, tmp_path, settings):
    """Two processes on one SQLite file, with KNOX_GUARD_RATE_LIMIT at its default 100/s and the sandbox enforcing
    100/s per access token (both processes share the token through the database cache). Each runs single-device
    jobs back to back and, between jobs, makes direct Guard calls for the same account (another worker, the web
    pages) through the same client: jobs alone are too slow on SQLite to reach 100/s, and the point is that the
    jobs' calls share one budget with everyone else's. 140 calls in all; with the pacing off (rate limit 0) the same
    load draws 429s from the sandbox."""
    assert settings.KNOX_GUARD_RATE_LIMIT == 100
    env = child_env(tmp_path, knox_sandbox, database="rate.sqlite3")
    migrated_database(tmp_path / "rate.sqlite3")

    def python(script: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", script, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )

    setup = python(SETUP, str(knox_sandbox.credentials_path.parent))
    enrolled = json.loads(setup.communicate(timeout=120)[0].splitlines()[-1])
    assert setup.returncode == 0 and len(enrolled) == 3
    jobs, calls_per_job = 10, 6
    workers = [python(WORKER, str(pk), str(jobs), str(calls_per_job)) for pk in enrolled[:2]]
    results = []
    for w in workers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0
        results.append(json.loads(out.splitlines()[-1]))
    counters = sandbox_state(knox_sandbox)["counters"]
    assert counters["by_path"][f"{KG}/devices/sendMessage"] == 2 * jobs * (1 + calls_per_job) == 140
    assert counters["rate_limited"] == 0
    assert all(r["statuses"] == ["succeeded"] for r in results)
    first, second = results
    assert first["started"] < second["ended"] and second["started"] < first["ended"]  # they overlapped


# --- device sync and uploads to Knox Guard ----------------------------------------------------------------------


def test_sync_pages_through_knox_guard_devices(sandbox_account, knox_sandbox):
    """1,013 devices in Knox: a full page of 1,000 (KG_MAX_PAGE_SIZE), then a short page that ends the listing."""
    added = fresh_imeis(1000, "35811000")
    answer = GuardClient(sandbox_account).upload([(u, "") for u in added], {}, transaction_id="seed1000")
    assert answer["validDeviceCount"] == 1000
    job = Job.objects.create(kind="guard.sync", account=sandbox_account)
    sync_devices(job.pk)
    job = finished(job)
    assert (job.status, job.total, job.succeeded) == ("succeeded", 1013, 1013)
    assert calls(knox_sandbox, "devices/list") == 2
    local = GuardDevice.objects.filter(account=sandbox_account)
    assert local.count() == 1013 and local.filter(device_uid__in=added, state="Pending").count() == 1000
    assert not local.filter(object_id="").exists()
    # Run again: nothing is duplicated, states are refreshed.
    sync_devices(Job.objects.create(kind="guard.sync", account=sandbox_account).pk)
    assert local.count() == 1013


def test_upload_to_knox_guard_with_auto_accept(guard_synced, knox_sandbox):
    fresh = fresh_imeis(3, "35822000")
    existing = device_in(guard_synced, "Locked")
    upload = guard_upload(guard_synced, [*fresh, existing.device_uid])
    job = queue_upload(upload, {"autoAccept": True}, user=None)
    run_upload(job.pk)
    job = finished(job)
    assert (job.status, job.total, job.succeeded, job.failed) == ("partial", 4, 3, 1)
    record = GuardUpload.objects.get(job=job)
    knox = sandbox_state(knox_sandbox)["guard"]
    assert record.upload_id and record.upload_id in knox["uploads"]  # Knox's "uploadID", capital D
    assert (record.valid, record.invalid, record.flags) == (3, 1, {"autoAccept": True})
    assert record.invalid_reasons == [{"deviceUid": existing.device_uid, "reason": "device already exists"}]
    assert knox["uploads"][record.upload_id]["flags"]["autoAccept"] is True
    assert {knox["devices"][u]["state"] for u in fresh} <= {"Accepted", "Enrolled"}
    local = GuardDevice.objects.filter(account=guard_synced, device_uid__in=fresh)
    assert set(local.values_list("state", flat=True)) == {"Accepted"} and local.count() == 3
    existing.refresh_from_db()
    assert existing.state == "Locked"  # Knox refused it: the portal's record is left alone
    summary = job_summary(job)
    assert summary["knox_uploads"] == [{"upload_id": record.upload_id, "status": "Progress", "valid": 3, "invalid": 1}]
    assert summary["failures"] == [
        {"identifier": existing.device_uid, "row": 5, "code": "", "message": "", "reason": "device already exists"}
    ]
    assert (summary["rows"], summary["valid"], summary["submitted"]) == (4, 4, 4)


# --- engine fixes (these were expected failures first) ---------------------------------------------------------


def test_an_upload_larger_than_one_call_sends_every_part(guard_synced, knox_sandbox, monkeypatch):
    monkeypatch.setattr("guard.tasks.KG_UPLOAD_MAX_DEVICES", 2)
    fresh = fresh_imeis(4, "35833000")
    job = queue_upload(guard_upload(guard_synced, fresh), {}, user=None)
    run_upload(job.pk)
    job = finished(job)
    assert (job.status, job.succeeded, job.failed) == ("succeeded", 4, 0)
    knox = sandbox_state(knox_sandbox)["guard"]
    assert {knox["devices"][u]["state"] for u in fresh} == {"Pending"}
    records = list(GuardUpload.objects.filter(job=job).order_by("id"))
    assert [r.device_count for r in records] == [2, 2] and all(r.upload_id in knox["uploads"] for r in records)
    assert calls(knox_sandbox, "devices/uploads") == 2
    run_upload(job.pk)  # a finished job is left alone: nothing is uploaded twice
    assert calls(knox_sandbox, "devices/uploads") == 2


def test_a_bulk_approve_assigns_each_rows_approve_id_and_reports_refusals(guard_synced, knox_sandbox):
    first, second = devices(guard_synced, "Pending")[:2]
    # Someone approves the second device in the Knox console: the portal's record still says Pending.
    GuardClient(guard_synced).act("approve", second.ref, ActionParams(), transaction_id="console1")
    upload = Upload(service="guard", account=guard_synced, operation=Upload.Operation.GUARD_ACTION, filename="a.csv")
    rows = f"IMEI,Approve ID\n{first.device_uid},CONTRACT-1\n{second.device_uid},CONTRACT-2\n"
    upload.file.save("a.csv", ContentFile(rows.encode()), save=False)
    upload.save()
    stage_upload(upload)
    job = queue_action(guard_synced, "approve", ActionParams(), user=None, upload=upload)
    run_actions(job.pk)
    job = finished(job)
    assert (job.status, job.succeeded, job.failed) == ("partial", 1, 1)
    refused = GuardAction.objects.get(job=job, outcome="failed")
    assert (refused.device, refused.row_number, refused.code) == (second, 3, "4000310")
    knox = knox_devices(knox_sandbox)
    assert knox[first.device_uid]["approveId"] == "CONTRACT-1"
    assert knox[second.device_uid]["approveId"] == second.approve_id  # the console's approval stands


def test_a_bulk_request_whose_answer_was_lost_is_reported_unknown(guard_synced, knox_sandbox, monkeypatch):
    real = GuardClient.act_async

    def act_async(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise errors.KnoxUnavailable("Knox did not answer in time", service="guard")

    monkeypatch.setattr("guard.client.GuardClient.act_async", act_async)
    enrolled = devices(guard_synced, "Enrolled")
    job = queue_action(guard_synced, "lock", LOCK, user=None, devices=[d.pk for d in enrolled])
    run_actions(job.pk)
    assert finished(job).status == "failed" and "did not answer in time" in job.error_summary
    assert {knox_devices(knox_sandbox)[d.device_uid]["state"] for d in enrolled} <= {"Locking", "Locked"}
    assert set(GuardAction.objects.filter(job=job).values_list("code", flat=True)) == {"UNKNOWN"}


def test_an_unreadable_success_answer_is_settled_by_state(guard_synced, knox_sandbox, monkeypatch):
    real = GuardClient.act

    def act(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise errors.KnoxBadResponse("Knox answered with something that is not JSON", status=200, service="guard")

    monkeypatch.setattr("guard.client.GuardClient.act", act)
    d = device_in(guard_synced, "Enrolled")
    job = queue_action(guard_synced, "lock", LOCK, user=None, devices=[d.pk])
    run_actions(job.pk)
    assert finished(job).status == "succeeded"
    a = GuardAction.objects.get(job=job)
    assert a.outcome == "succeeded" and a.reason == "confirmed by the device's state in Knox (Locking)"
    assert calls(knox_sandbox, "devices/lock") == 1
