"""The lean path for single-device Knox Guard jobs (guard.single.run_lean) and the drain of queued ones, against the
in-process sandbox: what a job costs in SQL statements (counted, not timed), which queued jobs a worker may take
over, and a drained job whose worker is killed mid-request."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from guard.client import ActionParams, GuardClient
from guard.models import GuardAction, GuardDevice, queue_action
from guard.tasks import run_actions
from portal.knox import errors
from portal.knox.http import KnoxSession
from portal.knox.ratelimit import DatabaseSlotStore
from portal.models import Job
from tests.base import ROOT, child_env, migrated_database
from tests.guard.helpers import calls, device_in

MESSAGE = ActionParams(message="Your payment is due", tel="+44 20 7946 0000")
LOCK = ActionParams(message="Payment overdue", tel="+44 20 7946 0000")

# SQL statements of a one-device job from its delivery to its end, transaction control (BEGIN, COMMIT, savepoints)
# not counted: the job read and claimed (2), the device taken and the action stored (2; 1 on PostgreSQL), the
# account read (1), the rate-limit slot (1; 0 with Redis), the outcome, the device and the job's end (3; 1 on
# PostgreSQL). Before the lean path it was 28 (32 with transaction control).
STATEMENTS_PER_JOB = 9
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK")


def statements(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if not q["sql"].lstrip().startswith(TRANSACTION_CONTROL)]


def backlog(*jobs: Job) -> None:
    """Make jobs part of a backlog: queued long enough ago for a worker to drain them."""
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(created_at=timezone.now() - timedelta(seconds=30))


def enrolled(account) -> list[GuardDevice]:
    return list(GuardDevice.objects.filter(account=account, state="Enrolled").order_by("id"))


def test_a_single_device_job_costs_a_bounded_number_of_statements(guard_synced, knox_sandbox):
    d = device_in(guard_synced, "Enrolled")
    run_actions(queue_action(guard_synced, "message", MESSAGE, user=None, devices=[d.pk]).pk)  # token, rate slot
    job = queue_action(guard_synced, "message", MESSAGE, user=None, devices=[d.pk])
    with CaptureQueriesContext(connection) as queries:
        run_actions(job.pk)
    job.refresh_from_db()
    assert (job.status, job.succeeded, job.failed) == ("succeeded", 1, 0), job.error_summary
    assert len(statements(queries)) <= STATEMENTS_PER_JOB, "\n".join(statements(queries))
    a = GuardAction.objects.get(job=job)
    assert (a.outcome, a.sent_at is not None, a.transaction_id != "") == ("succeeded", True, True)
    d.refresh_from_db()
    assert (d.pending_job, d.last_action, d.last_outcome) == (None, "message", "succeeded")
    assert calls(knox_sandbox, "devices/sendMessage") == 2


def test_a_drained_job_costs_fewer_statements_than_a_delivered_one(guard_synced, knox_sandbox):
    devices = enrolled(guard_synced)
    run_actions(queue_action(guard_synced, "message", MESSAGE, user=None, devices=[devices[0].pk]).pk)
    jobs = [queue_action(guard_synced, "message", MESSAGE, user=None, devices=[d.pk]) for d in devices * 2]
    backlog(*jobs)
    with CaptureQueriesContext(connection) as queries:
        run_actions(jobs[0].pk)
    assert set(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)) == {"succeeded"}
    assert len(statements(queries)) <= STATEMENTS_PER_JOB * len(jobs), "\n".join(statements(queries))
    # A delivery of a job that was drained reads it and stops.
    with CaptureQueriesContext(connection) as queries:
        run_actions(jobs[-1].pk)
    assert len(queries.captured_queries) == 1


def test_drain_claims_only_queued_one_device_jobs_no_worker_has_claimed(guard_synced, knox_sandbox):
    first, second, third = enrolled(guard_synced)
    delivered = queue_action(guard_synced, "message", MESSAGE, user=None, devices=[first.pk])
    held = queue_action(guard_synced, "message", MESSAGE, user=None, devices=[second.pk])
    assert held.claim("another-live-worker")
    abandoned = queue_action(guard_synced, "message", MESSAGE, user=None, devices=[third.pk])
    assert abandoned.claim("a-dead-worker")  # claimed once: only its own delivery may resume it
    Job.objects.filter(pk=abandoned.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    bulk = queue_action(guard_synced, "message", MESSAGE, user=None, devices=[first.pk, second.pk])
    cancelled = queue_action(guard_synced, "message", MESSAGE, user=None, devices=[first.pk])
    assert cancelled.cancel()
    backlogged = queue_action(guard_synced, "message", MESSAGE, user=None, devices=[third.pk])
    backlog(delivered, held, abandoned, bulk, cancelled, backlogged)
    just_queued = queue_action(guard_synced, "message", MESSAGE, user=None, devices=[first.pk])

    run_actions(delivered.pk)

    status = dict(Job.objects.values_list("pk", "status"))
    assert (status[delivered.pk], status[backlogged.pk]) == ("succeeded", "succeeded")
    assert (status[held.pk], status[abandoned.pk]) == ("running", "running")
    assert (status[bulk.pk], status[cancelled.pk], status[just_queued.pk]) == ("queued", "cancelled", "queued")
    assert Job.objects.get(pk=held.pk).lease_owner == "another-live-worker"
    assert set(GuardAction.objects.values_list("job_id", flat=True)) == {delivered.pk, backlogged.pk}
    assert calls(knox_sandbox, "devices/sendMessage") == 2


def test_a_job_held_by_another_worker_is_left_alone_without_a_write(guard_synced, knox_sandbox):
    d = device_in(guard_synced, "Enrolled")
    job = queue_action(guard_synced, "message", MESSAGE, user=None, devices=[d.pk])
    assert job.claim("another-live-worker")
    with CaptureQueriesContext(connection) as queries:
        run_actions(job.pk)
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["SELECT"]
    job.refresh_from_db()
    assert (job.status, job.lease_owner) == ("running", "another-live-worker")
    assert not GuardAction.objects.filter(job=job).exists() and calls(knox_sandbox, "devices/sendMessage") == 0


def test_a_drain_that_meets_a_knox_failure_stops_and_hands_the_rest_back(guard_synced, knox_sandbox, monkeypatch):
    """The drained job Knox fails is ended with the reason; the jobs claimed after it are handed back (lease
    ended, queued again) and run by that delivery, here at once (Q_CLUSTER sync in tests)."""
    first, second, third = enrolled(guard_synced)
    real_act = GuardClient.act

    def act(self, action, ref, params, *, transaction_id):
        if ref.device_uid == second.device_uid and not failed:
            failed.append(transaction_id)
            raise errors.KnoxUnavailable("The connection to Knox failed (refused or reset)", service="guard")
        return real_act(self, action, ref, params, transaction_id=transaction_id)

    failed: list[str] = []
    monkeypatch.setattr("guard.client.GuardClient.act", act)
    delivered, refused, handed_back = (
        queue_action(guard_synced, "message", MESSAGE, user=None, devices=[d.pk]) for d in (first, second, third)
    )
    backlog(delivered, refused, handed_back)
    run_actions(delivered.pk)
    status = dict(Job.objects.values_list("pk", "status"))
    assert [status[j.pk] for j in (delivered, refused, handed_back)] == ["succeeded", "failed", "succeeded"]
    a = GuardAction.objects.get(job=refused)
    assert (a.outcome, a.code, a.sent_at) == ("failed", "NOT_SENT", None)
    assert "connection to Knox failed" in Job.objects.get(pk=refused.pk).error_summary
    assert not GuardDevice.objects.filter(pending_job__isnull=False).exists()
    assert calls(knox_sandbox, "devices/sendMessage") == 2


def test_a_busy_device_is_refused_by_the_general_planner(guard_synced, knox_sandbox):
    d = device_in(guard_synced, "Enrolled")
    holder = queue_action(guard_synced, "lock", LOCK, user=None, devices=[d.pk])
    GuardDevice.objects.filter(pk=d.pk).update(pending_job=holder)
    job = queue_action(guard_synced, "message", MESSAGE, user=None, devices=[d.pk])
    run_actions(job.pk)
    a = GuardAction.objects.get(job=job)
    assert (a.outcome, a.code, Job.objects.get(pk=job.pk).status) == ("failed", "BUSY", "failed")
    assert (
        GuardDevice.objects.get(pk=d.pk).pending_job_id == holder.pk and calls(knox_sandbox, "devices/sendMessage") == 0
    )


def test_the_knox_token_is_reused_in_process_without_reading_the_shared_cache(sandbox_account, knox_sandbox):
    from django.core.cache import cache

    session = KnoxSession(sandbox_account)
    session.request("guard", "GET", "/authorization", idempotent=True)
    with mock.patch("portal.knox.auth.cache.get", wraps=cache.get) as cache_get:
        for _ in range(3):
            KnoxSession(sandbox_account).request("guard", "GET", "/authorization", idempotent=True)
    assert cache_get.call_count == 0


def test_a_rate_limit_slot_is_one_statement(db):
    store = DatabaseSlotStore()
    store.reserve("acct:guard", 0.01, now=1000.0)
    with CaptureQueriesContext(connection) as queries:
        assert store.reserve("acct:guard", 0.01, now=1000.0) == pytest.approx(1000.01)
    assert len(queries.captured_queries) == 1


# --- a drained job whose worker is killed mid-request ------------------------------------------------------------

SETUP = """
import json, sys
from datetime import timedelta
import django
django.setup()
from django.core.management import call_command
from django.utils import timezone
from guard.client import ActionParams
from guard.models import GuardDevice, queue_action
from guard.tasks import sync_devices
from portal.models import Job, KnoxAccount
call_command("import_sandbox_account", sys.argv[1])
account = KnoxAccount.objects.get(name="Sandbox")
sync_devices(Job.objects.create(kind="guard.sync", account=account).pk)
first, second = GuardDevice.objects.filter(account=account, state="Enrolled").order_by("id")[:2]
params = ActionParams(message="Payment overdue", tel="+44 20 7946 0000")
delivered = queue_action(account, "message", params, user=None, devices=[first.pk])
drained = queue_action(account, "lock", params, user=None, devices=[second.pk])
Job.objects.filter(pk__in=[delivered.pk, drained.pk]).update(created_at=timezone.now() - timedelta(seconds=30))
print(json.dumps({"delivered": delivered.pk, "drained": drained.pk, "uid": second.device_uid}))
"""

# A worker whose answer to the lock never comes back: the request reaches Knox and is applied, then the worker
# hangs (as on a dead network) until it is killed. The patch is at the network edge, in the child only.
WORKER = """
import sys, time
import django
django.setup()
from guard.client import GuardClient
from guard.tasks import run_actions
real_act = GuardClient.act
def act(self, action, ref, params, *, transaction_id):
    real_act(self, action, ref, params, transaction_id=transaction_id)
    if action == "lock":
        open(sys.argv[2], "w").close()
        time.sleep(600)
GuardClient.act = act
run_actions(int(sys.argv[1]))
"""

RESUME = """
import sys
import django
django.setup()
from guard.tasks import run_actions
from portal.workers import resume_orphaned_jobs
print(resume_orphaned_jobs())
run_actions(int(sys.argv[1]))
"""


@pytest.mark.slow
def test_a_drained_job_whose_worker_is_killed_mid_request_resumes_without_a_second_send(knox_sandbox, tmp_path):
    env = child_env(tmp_path, knox_sandbox, database="drain.sqlite3")
    migrated_database(tmp_path / "drain.sqlite3")

    def python(script: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", script, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )

    def sql(query: str, *args: object) -> list[tuple]:
        with sqlite3.connect(tmp_path / "drain.sqlite3") as db:
            return db.execute(query, args).fetchall()

    setup = python(SETUP, str(knox_sandbox.credentials_path.parent))
    jobs = json.loads(setup.communicate(timeout=120)[0].splitlines()[-1])
    sent = tmp_path / "lock-sent"
    worker = python(WORKER, str(jobs["delivered"]), str(sent))
    deadline = time.monotonic() + 120
    while not sent.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sent.exists(), "the worker never sent the drained job's lock"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    # What the kill left: the delivered job done; the drained one held by the dead worker, its lock sent.
    assert sql("SELECT status FROM portal_job WHERE id = ?", jobs["delivered"]) == [("succeeded",)]
    [(status, owner)] = sql("SELECT status, lease_owner FROM portal_job WHERE id = ?", jobs["drained"])
    assert status == "running" and owner.split("-")[1] == str(worker.pid)
    [(outcome, sent_at)] = sql("SELECT outcome, sent_at FROM guard_guardaction WHERE job_id = ?", jobs["drained"])
    assert outcome == "pending" and sent_at is not None

    resume = python(RESUME, str(jobs["drained"]))
    assert resume.communicate(timeout=120)[0].split()[0] == "1"  # the dead worker's job, released at once
    assert resume.returncode == 0
    [(status,)] = sql("SELECT status FROM portal_job WHERE id = ?", jobs["drained"])
    [(outcome, reason)] = sql("SELECT outcome, reason FROM guard_guardaction WHERE job_id = ?", jobs["drained"])
    assert (status, outcome) == ("succeeded", "succeeded") and reason.startswith("confirmed by the device's state")
    assert calls(knox_sandbox, "devices/lock") == 1  # read from Knox, never sent again
    assert sql("SELECT count(*) FROM guard_guarddevice WHERE pending_job_id IS NOT NULL") == [(0,)]
