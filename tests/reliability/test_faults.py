"""The fault-injection suite: real jobs against a sandbox (real HTTP over loopback) that answers 10 % of requests
with a 5xx, 5 % with a 429, drops 2 % of connections, adds latency and lets access tokens live 5 seconds.

Every KDP, Knox Guard and E-FOTA job must still end with the correct outcome for every device (checked against the
sandbox's own state), with bounded retries: a Knox that is down for good ends the job as failed with a clear
reason, and an answer that is not the documented shape is recorded as an error, never a crash.
"""

from __future__ import annotations

import logging
import time

import pytest

from efota.models import EfotaGroup, queue_register
from efota.tasks import register_group
from guard.client import ActionParams, GuardClient
from guard.models import GuardAction, GuardDevice, queue_action
from guard.tasks import run_actions, sync_devices
from kdp.models import Customer, Device, Transaction, TransactionDevice, submit_upload
from kdp.tasks import run_transfer, sync_customers
from portal.models import Job
from tests.base import fresh_imeis, sandbox_state, set_faults
from tests.kdp.helpers import imei_csv, make_upload

pytestmark = [pytest.mark.slow, pytest.mark.faults]

FAULTS = {"error": 0.10, "throttle": 0.05, "reset": 0.02, "latency": 0.01}
TOKEN_TTL = 5.0


@pytest.fixture
def knox_sandbox(tmp_path, settings):
    """Overrides the shared fixture: tokens expire every 5 s (faults are switched on per test, after set-up)."""
    from sandbox.testing import running_sandbox

    with running_sandbox(tmp_path / "knox-sandbox", process_delay=0.2, token_ttl=TOKEN_TTL) as server:
        settings.KNOX_SANDBOX_URL = server.url
        yield server


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.KDP_CHUNK_SIZE = 100
    # Bounded, and generous enough that a 17 % failure rate per attempt almost never spends them all on one call
    # (0.17^7 ≈ 4e-6); the "dead Knox" tests below prove the bound ends a job.
    settings.KNOX_MAX_RETRIES = 6
    settings.KNOX_BACKOFF_BASE = 0.05
    settings.KNOX_BACKOFF_MAX = 0.5


@pytest.fixture
def tracebacks(caplog):
    """Every log record carrying an exception: a traceback in a worker's log."""
    caplog.set_level(logging.INFO)
    return lambda: [r for r in caplog.records if r.exc_info]


def run_job(job: Job, task) -> Job:
    task(job.pk)
    job.refresh_from_db()
    return job


def test_kdp_upload_and_delete_are_exact_under_faults(sandbox_account, knox_sandbox, tracebacks):
    run_job(Job.objects.create(kind="kdp.customers", account=sandbox_account), sync_customers)
    customer = Customer.objects.filter(account=sandbox_account, status="Verified").order_by("id").first()
    devices = fresh_imeis(2_000, "35920030")
    set_faults(knox_sandbox, **FAULTS)

    upload = make_upload(sandbox_account, imei_csv(devices), "faults.csv")
    job = run_job(submit_upload(upload, user=None, customer=customer), run_transfer)
    assert (job.status, job.succeeded, job.failed) == (Job.Status.SUCCEEDED, 2_000, 0), job.error_summary
    delete = make_upload(sandbox_account, imei_csv(devices[:700]), "delete.csv", operation="delete")
    job = run_job(submit_upload(delete, user=None, customer=customer), run_transfer)
    assert (job.status, job.succeeded, job.failed) == (Job.Status.SUCCEEDED, 700, 0), job.error_summary

    set_faults(knox_sandbox)
    knox = sandbox_state(knox_sandbox)
    registered = {d for d in devices if d in knox["kdp"]["devices"]}
    assert registered == set(devices[700:])
    assert set(Device.objects.filter(state="registered").values_list("identifier", flat=True)) == registered
    assert Device.objects.filter(identifier__in=devices[:700], state="deleted").count() == 700
    assert knox["counters"]["duplicate_device_submissions"] == 0
    faults = knox["counters"]["faults"]
    assert faults["error"] + faults["throttle"] + faults["reset"] >= 3, faults  # each kind is proven in tests/sandbox
    print(f"KDP under faults: {knox['counters']['requests']} requests, injected {faults}")
    # 70-odd requests paced at 10/s last longer than a token: they expired during the run and were renewed.
    assert knox["auth"]["accessTokens"] >= 2
    assert tracebacks() == []


@pytest.fixture
def enrolled(sandbox_account, knox_sandbox):
    """1,500 devices enrolled in Knox Guard and synced into the portal (before any fault is switched on)."""
    uids = fresh_imeis(1_500, "35930040")
    GuardClient(sandbox_account).upload([(u, "") for u in uids], {"autoAccept": True}, transaction_id="faultsupload")
    time.sleep(0.5)  # the sandbox enrols accepted devices after its process delay
    job = run_job(Job.objects.create(kind="guard.sync", account=sandbox_account), sync_devices)
    assert job.status == Job.Status.SUCCEEDED, job.error_summary
    return uids


def test_guard_bulk_lock_and_single_actions_are_exact_under_faults(sandbox_account, knox_sandbox, enrolled, tracebacks):
    pks = list(GuardDevice.objects.filter(device_uid__in=enrolled).order_by("id").values_list("pk", flat=True))
    set_faults(knox_sandbox, **FAULTS)
    lock = ActionParams(message="Payment overdue", tel="+44 20 7946 0000")
    bulk = run_job(queue_action(sandbox_account, "lock", lock, user=None, devices=pks[:1_200]), run_actions)
    assert (bulk.status, bulk.succeeded, bulk.failed) == (Job.Status.SUCCEEDED, 1_200, 0), bulk.error_summary
    # Single-device actions are not repeatable blindly: a lost answer is settled by reading the device's state.
    singles = []
    for pk in pks[1_200:1_260]:
        singles.append(run_job(queue_action(sandbox_account, "lock", lock, user=None, devices=[pk]), run_actions))
    reasons = list(GuardAction.objects.filter(job__in=singles, outcome="failed").values_list("code", "reason"))
    assert {(j.status, j.succeeded, j.failed) for j in singles} == {(Job.Status.SUCCEEDED, 1, 0)}, reasons

    set_faults(knox_sandbox)
    knox = sandbox_state(knox_sandbox)["guard"]["devices"]
    locked = {u for u in enrolled if knox[u]["state"] in ("Locking", "Locked")}
    assert locked == set(enrolled[:1_260])
    assert GuardAction.objects.filter(outcome="succeeded").count() == 1_260
    assert tracebacks() == []


def test_efota_group_registration_is_exact_under_faults(sandbox_account, knox_sandbox, tracebacks):
    efota = knox_sandbox.credentials["efota"]
    set_faults(knox_sandbox, **FAULTS)
    jobs = [
        run_job(queue_register(sandbox_account, efota["customer_id"], f"fleet-{i}", efota["license"], user=None), register_group)
        for i in range(30)
    ]  # fmt: skip
    assert {j.status for j in jobs} == {Job.Status.SUCCEEDED}, [j.error_summary for j in jobs if j.error_summary]
    set_faults(knox_sandbox)
    groups = sandbox_state(knox_sandbox)["efota"]["groups"]
    assert {f"FLEET-{i}" for i in range(30)} <= set(groups)
    assert EfotaGroup.objects.filter(status=EfotaGroup.Status.REGISTERED).count() == 30
    assert tracebacks() == []


# --- Knox down for good: bounded retries, a failed job with a reason ----------------------------------------------


def test_a_dead_knox_ends_every_kind_of_job_as_failed_with_a_reason(sandbox_account, knox_sandbox, enrolled):
    run_job(Job.objects.create(kind="kdp.customers", account=sandbox_account), sync_customers)
    customer = Customer.objects.filter(account=sandbox_account, status="Verified").order_by("id").first()
    upload = make_upload(sandbox_account, imei_csv(fresh_imeis(600, "35940050")), "dead.csv")
    pks = list(GuardDevice.objects.filter(device_uid__in=enrolled).values_list("pk", flat=True))
    efota = knox_sandbox.credentials["efota"]
    set_faults(knox_sandbox, error=1)
    before = sandbox_state(knox_sandbox)["counters"]["requests"]

    kdp_job = run_job(submit_upload(upload, user=None, customer=customer), run_transfer)
    guard_job = run_job(queue_action(sandbox_account, "lock", ActionParams(message="m", tel="+44 20 7946 0000"), user=None, devices=pks[:1_100]), run_actions)  # fmt: skip
    efota_job = run_job(queue_register(sandbox_account, efota["customer_id"], "dead", efota["license"], user=None), register_group)  # fmt: skip

    requests_made = sandbox_state(knox_sandbox)["counters"]["requests"] - before
    for job in (kdp_job, guard_job, efota_job):
        assert job.status == Job.Status.FAILED, (job.kind, job.status)
        assert "Knox" in job.error_summary or "E-FOTA" in job.error_summary, job.error_summary
    # Every device has an outcome (none left pending), and none is claimed to have succeeded.
    assert not TransactionDevice.objects.filter(job=kdp_job, outcome="pending").exists()
    assert not TransactionDevice.objects.filter(job=kdp_job, outcome="succeeded").exists()
    assert Transaction.objects.filter(job=kdp_job, state__in=("prepared", "submitted")).count() == 0
    assert not GuardAction.objects.filter(job=guard_job, outcome__in=("pending", "succeeded")).exists()
    # Bounded: one failing call per job (plus its retries), not one per chunk or device, and no endless loop.
    assert requests_made <= 3 * (6 + 1) * 2, requests_made


# --- Answers that are not the documented shape --------------------------------------------------------------------


def test_undocumented_answers_are_recorded_as_errors_not_crashes(sandbox_account, knox_sandbox, enrolled, tracebacks):
    """An HTML maintenance page, JSON cut short or XML declaring an entity bomb, each with status 200."""
    run_job(Job.objects.create(kind="kdp.customers", account=sandbox_account), sync_customers)
    customer = Customer.objects.filter(account=sandbox_account, status="Verified").order_by("id").first()
    upload = make_upload(sandbox_account, imei_csv(fresh_imeis(300, "35950060")), "garbage.csv")
    pks = list(GuardDevice.objects.filter(device_uid__in=enrolled).values_list("pk", flat=True))
    efota = knox_sandbox.credentials["efota"]
    set_faults(knox_sandbox, garbage=1)

    kdp_job = run_job(submit_upload(upload, user=None, customer=customer), run_transfer)
    guard_bulk = run_job(queue_action(sandbox_account, "lock", ActionParams(message="m", tel="+44 20 7946 0000"), user=None, devices=pks[:1_100]), run_actions)  # fmt: skip
    guard_one = run_job(queue_action(sandbox_account, "blink", ActionParams(message="m", tel="+44 20 7946 0000", interval=60), user=None, devices=[pks[-1]]), run_actions)  # fmt: skip
    efota_job = run_job(queue_register(sandbox_account, efota["customer_id"], "garbage", efota["license"], user=None), register_group)  # fmt: skip

    set_faults(knox_sandbox)
    knox = sandbox_state(knox_sandbox)
    for job in (kdp_job, guard_bulk, guard_one, efota_job):
        assert job.status in (Job.Status.FAILED, Job.Status.PARTIAL), (job.kind, job.status)
        assert job.error_summary or job.failed, job.kind
    # The garbage was answered before Knox processed anything, and the portal claims nothing happened.
    assert not any(d in knox["kdp"]["devices"] for d in TransactionDevice.objects.filter(job=kdp_job).values_list("identifier", flat=True))  # fmt: skip
    assert not TransactionDevice.objects.filter(job=kdp_job, outcome="succeeded").exists()
    assert not GuardAction.objects.filter(job__in=(guard_bulk, guard_one), outcome="succeeded").exists()
    assert "GARBAGE" not in knox["efota"]["groups"]
    first_reason = GuardAction.objects.filter(job=guard_bulk).values_list("reason", flat=True)[:1]
    reasons = " ".join(
        [
            kdp_job.error_summary,
            guard_bulk.error_summary,
            guard_one.error_summary,
            efota_job.error_summary,
            *first_reason,
        ]
    )
    assert any(w in reasons for w in ("web page", "cut off", "declares entities", "not repeated blindly")), reasons
    assert tracebacks() == []
