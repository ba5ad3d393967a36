"""The engine's invariants (portal/engine.py), tested once, for every service that runs on it, against the real
sandbox over loopback. Each service is a `Case`: how to make a job of several requests, which client method puts
a request on the wire (the network edge the tests wrap), and how to read from Knox that every device was applied
exactly once.

1. Recorded before sent: when a request leaves, its row is committed SENDING with its send time.
2. Never sent twice: a lost answer is settled by reading Knox, and Knox applies every device once.
3. Resumable after kill -9: a worker that dies just before or just after a request leaves is resumed by the next
   one, which finishes the job with every device applied once.
4. Knox unreachable: the job waits (and says so on the job), then resumes; nothing is failed or sent twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from portal.engine import KnoxRequest
from portal.knox import errors
from portal.models import Job
from tests.base import expire_lease, fresh_imeis, sandbox_state


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _polls_match_the_test_sandbox(monkeypatch):
    """The test sandbox settles a KDP transaction in 0.2 s, not in the 2 s the portal assumes of Knox."""
    monkeypatch.setattr("kdp.tasks.POLL_FIRST_DELAY_SECONDS", 0.3)


class Killed(BaseException):
    """What kill -9 looks like from inside the worker: nothing after it runs (not even `except Exception`)."""


@dataclass
class Case:
    name: str
    # The client method that puts one request on the wire, and how to find its row from that call's arguments.
    send_path: str
    row_of: Callable[[tuple, dict], KnoxRequest]
    make: Callable[[Any], Job]  # (pytest request) → a queued job of at least two requests
    run: Callable[[int], None]
    # Knox's side: every device of the job applied exactly once; raises AssertionError otherwise.
    applied_once: Callable[[Any, Job], None]
    repeatable: bool
    rows: Callable[[Job], list[KnoxRequest]]
    # Knox keeps nothing to find the request by (E-FOTA): a request whose answer was lost, or whose worker died
    # mid-call, is never sent again and ends UNKNOWN, in words; the rest of the job goes on.
    settles_unknown: bool = False


# --- KDP -----------------------------------------------------------------------------------------------------


def make_kdp(request) -> Job:
    from kdp.models import submit_upload
    from tests.kdp.helpers import imei_csv, make_upload

    settings = request.getfixturevalue("settings")
    settings.KDP_CHUNK_SIZE = 4
    cust = request.getfixturevalue("customer")
    upload = make_upload(cust.account, imei_csv(fresh_imeis(10, "35710000")), "engine.csv")
    return submit_upload(upload, user=None, customer=cust)


def kdp_row(args: tuple, kwargs: dict) -> KnoxRequest:
    from kdp.models import Transaction

    return Transaction.objects.get(transaction_id=args[1].transaction_id)


def kdp_applied_once(server, job: Job) -> None:
    from kdp.models import Device, Transaction

    state = sandbox_state(server)
    assert state["counters"]["duplicate_device_submissions"] == 0
    ours = set(Transaction.objects.filter(job=job).values_list("transaction_id", flat=True))
    knox = [k for k in state["kdp"]["transactions"] if any(k.endswith(t) for t in ours)]
    assert len(knox) == len(ours) == 3, (knox, ours)
    registered = Device.objects.filter(account=job.account, state=Device.State.REGISTERED)
    assert registered.count() == 10


def run_kdp(pk: int) -> None:
    from kdp.tasks import run_transfer

    run_transfer(pk)


KDP = Case(
    "kdp",
    "kdp.client.KdpClient.submit",
    kdp_row,
    make_kdp,
    run_kdp,
    kdp_applied_once,
    repeatable=False,
    rows=lambda job: list(job.kdp_transactions.all()),
)


# --- Knox Guard bulk actions -----------------------------------------------------------------------------------


def make_guard_bulk(request) -> Job:
    from guard.client import ActionParams
    from guard.models import GuardDevice, queue_action

    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setattr("guard.tasks.KG_ASYNC_MAX_DEVICES", 2)
    account = request.getfixturevalue("guard_synced")
    enrolled = list(GuardDevice.objects.filter(account=account, state="Enrolled").order_by("id")[:3])
    assert len(enrolled) == 3
    params = ActionParams(message="Payment overdue", tel="+44 20 7946 0000")
    return queue_action(account, "lock", params, user=None, devices=[d.pk for d in enrolled])


def guard_row(args: tuple, kwargs: dict) -> KnoxRequest:
    from guard.models import GuardChunk

    return GuardChunk.objects.get(transaction_id=kwargs["transaction_id"])


def guard_applied_once(server, job: Job) -> None:
    from guard.models import GuardAction, GuardChunk

    knox = sandbox_state(server)["guard"]
    txids = list(GuardChunk.objects.filter(job=job).values_list("transaction_id", flat=True))
    applied = [knox["transactions"][t] for t in txids]
    # A second lock of a Locking device fails: 3 successes and no failure means each device was locked once.
    assert sum(t["success"] for t in applied) == 3 and sum(t["fail"] for t in applied) == 0, applied
    uids = GuardAction.objects.filter(job=job).values_list("device_uid", flat=True)
    assert {knox["devices"][u]["state"] for u in uids} <= {"Locking", "Locked"}


def run_guard(pk: int) -> None:
    from guard.tasks import run_actions

    run_actions(pk)


GUARD_BULK = Case(
    "guard-bulk",
    "guard.client.GuardClient.act_async",
    guard_row,
    make_guard_bulk,
    run_guard,
    guard_applied_once,
    repeatable=True,
    rows=lambda job: list(job.guard_chunks.all()),
)

# --- Knox Guard uploads ----------------------------------------------------------------------------------------


def make_guard_upload(request) -> Job:
    from guard.models import queue_upload
    from tests.guard.helpers import guard_upload

    request.getfixturevalue("monkeypatch").setattr("guard.tasks.KG_UPLOAD_MAX_DEVICES", 2)
    account = request.getfixturevalue("guard_synced")
    return queue_upload(guard_upload(account, fresh_imeis(5, "35860000")), {"autoAccept": True}, user=None)


def sending_row(model_path: str) -> Callable[[tuple, dict], KnoxRequest]:
    """The request being sent: exactly one row is SENDING while its call is on the wire."""

    def row(args: tuple, kwargs: dict) -> KnoxRequest:
        import importlib

        module, name = model_path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name).objects.get(state=KnoxRequest.State.SENDING)

    return row


def guard_upload_applied_once(server, job: Job) -> None:
    from guard.models import GuardUpload

    uploads = sandbox_state(server)["guard"]["uploads"]
    ours = fresh_imeis(5, "35860000")
    per_device = [sum(1 for u in uploads.values() for d in u["devices"] if d["deviceUid"] == i) for i in ours]
    assert per_device == [1] * 5, per_device  # every device uploaded once
    assert GuardUpload.objects.filter(job=job).count() == 3


def run_guard_upload(pk: int) -> None:
    from guard.tasks import run_upload

    run_upload(pk)


GUARD_UPLOAD = Case(
    "guard-upload",
    "guard.client.GuardClient.upload",
    sending_row("guard.models.GuardUpload"),
    make_guard_upload,
    run_guard_upload,
    guard_upload_applied_once,
    repeatable=False,
    rows=lambda job: list(job.guard_uploads.all()),
)


# --- E-FOTA force updates --------------------------------------------------------------------------------------


def make_force_update(request) -> Job:
    from efota.models import queue_force_update

    monkeypatch = request.getfixturevalue("monkeypatch")
    settings = request.getfixturevalue("settings")
    settings.KNOX_EFOTA_RATE_LIMIT = 0
    monkeypatch.setattr("efota.tasks.EFOTA_MAX_DEVICES_PER_CALL", 2)
    monkeypatch.setattr("efota.tasks.STATUS_FIRST_DELAY_SECONDS", 0.3)
    monkeypatch.setattr("efota.tasks.STATUS_MAX_INTERVAL_SECONDS", 0.5)
    monkeypatch.setattr("efota.tasks.STATUS_WATCH_SECONDS", 30)
    account = request.getfixturevalue("sandbox_account")
    efota = request.getfixturevalue("knox_sandbox").credentials["efota"]
    return queue_force_update(
        account, customer_id=efota["customer_id"], licence=efota["license"], model="SM-G991B", sales_code="BTU",
        serials=efota["device_serials"][:4], user=None,
    )  # fmt: skip


def force_update_applied_once(server, job: Job) -> None:
    started = sandbox_state(server)["efota"]["forceUpdates"]
    per_serial: dict[str, int] = {}
    for fu in started.values():
        for serial in fu["devices"]:  # serial → E-FOTA's outcome for it
            per_serial[serial] = per_serial.get(serial, 0) + 1
    assert per_serial and set(per_serial.values()) == {1}, per_serial  # no device started twice
    assert len(started) <= len(job.efota_force_updates.all())


def run_force_update(pk: int) -> None:
    from efota.tasks import run_force_update as run

    run(pk)


FORCE_UPDATE = Case(
    "efota-force-update",
    "efota.client.EfotaClient.force_update",
    sending_row("efota.models.ForceUpdate"),
    make_force_update,
    run_force_update,
    force_update_applied_once,
    repeatable=False,
    rows=lambda job: list(job.efota_force_updates.all()),
    settles_unknown=True,
)

CASES = [KDP, GUARD_BULK, GUARD_UPLOAD, FORCE_UPDATE]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request) -> Case:
    return request.param


def wrap_send(monkeypatch, case: Case, around: Callable[[Callable, tuple, dict, int], Any]) -> list[KnoxRequest]:
    """Replace the client's send with `around(real, args, kwargs, call_number)`; returns the rows seen, in order."""
    module_path, cls_name, method = case.send_path.rsplit(".", 2)
    import importlib

    cls = getattr(importlib.import_module(module_path), cls_name)
    real = getattr(cls, method)
    seen: list[KnoxRequest] = []

    def send(*args, **kwargs):
        seen.append(case.row_of(args, kwargs))
        return around(lambda: real(*args, **kwargs), args, kwargs, len(seen))

    monkeypatch.setattr(cls, method, send)
    return seen


def ended(job: Job) -> Job:
    job.refresh_from_db()
    assert job.is_finished, job.status
    return job


def all_succeeded(job: Job) -> None:
    job = ended(job)
    assert (job.status, job.failed) == (Job.Status.SUCCEEDED, 0), job.error_summary
    assert job.succeeded == job.total > 0
    assert job.waiting_since is None and job.next_try_at is None


@pytest.fixture
def service(case, request, knox_sandbox) -> tuple[Case, Job]:
    return case, case.make(request)


# 1. ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_request_is_committed_sending_before_it_leaves(service, knox_sandbox, monkeypatch):
    case, job = service

    def around(real, args, kwargs, n):
        row = case.row_of(args, kwargs)
        assert row.state == KnoxRequest.State.SENDING and row.send_attempted_at is not None
        return real()

    seen = wrap_send(monkeypatch, case, around)
    case.run(job.pk)
    all_succeeded(job)
    assert len(seen) == len({r.pk for r in seen}) >= 2  # every request sent, each once
    case.applied_once(knox_sandbox, job)


# 2. ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_lost_answer_is_settled_by_reading_knox_and_nothing_is_applied_twice(service, knox_sandbox, monkeypatch):
    case, job = service

    def around(real, args, kwargs, n):
        answer = real()
        if n == 1:
            raise errors.KnoxOutcomeUnknown("The connection to Knox was reset after sending", service=case.name)
        return answer

    seen = wrap_send(monkeypatch, case, around)
    case.run(job.pk)
    if case.settles_unknown:
        assert_one_unknown(case, job)
    else:
        all_succeeded(job)
    requests_sent = len({r.pk for r in seen})
    # A repeatable request (one transactionId, applied once) is sent again to learn its fate; any other is read back.
    assert len(seen) == requests_sent + (1 if case.repeatable else 0)
    case.applied_once(knox_sandbox, job)


# 3. ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_worker_killed_while_sending_is_resumed_without_sending_twice(service, knox_sandbox, monkeypatch, moment):
    case, job = service
    kill = {"armed": True}

    def around(real, args, kwargs, n):
        if n == 2 and kill["armed"]:
            kill["armed"] = False
            if moment == "after":
                real()
            raise Killed
        return real()

    seen = wrap_send(monkeypatch, case, around)
    with pytest.raises(Killed):
        case.run(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING  # the dead worker ended nothing
    assert seen[-1].__class__.objects.get(pk=seen[-1].pk).state == KnoxRequest.State.SENDING
    expire_lease(job)
    case.run(job.pk)  # the next worker
    if case.settles_unknown:
        assert_one_unknown(case, job)
    else:
        all_succeeded(job)
    case.applied_once(knox_sandbox, job)


def assert_one_unknown(case: Case, job: Job) -> None:
    """One request's fate could not be read from Knox: it ends UNKNOWN with what to check, the others succeed."""
    job = ended(job)
    unknown = [r for r in case.rows(job) if r.knox_code == "UNKNOWN"]
    assert len(unknown) == 1 and unknown[0].state == KnoxRequest.State.FAILED and unknown[0].knox_message
    assert job.status == Job.Status.PARTIAL and job.failed == unknown[0].device_count, job.error_summary


# 4. ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_knox_unreachable_pauses_the_job_then_it_resumes(service, knox_sandbox, monkeypatch, settings):
    case, job = service
    settings.KNOX_OUTAGE_PATIENCE = 60
    settings.KNOX_MAX_RETRIES = 1
    settings.KNOX_BACKOFF_BASE = 0.01
    settings.KNOX_BACKOFF_MAX = 0.02
    monkeypatch.setattr("portal.engine.OUTAGE_FIRST_WAIT_SECONDS", 0.3)
    waits: list[tuple[str, Any]] = []
    real_wait = Job.wait_for_knox

    def wait_for_knox(self, reason, *, since, next_try_at):
        waits.append((reason, since))
        return real_wait(self, reason, since=since, next_try_at=next_try_at)

    monkeypatch.setattr(Job, "wait_for_knox", wait_for_knox)
    faults = f"{knox_sandbox.url}/_sandbox/faults"

    def around(real, args, kwargs, n):
        answer = real()
        if n == 2:  # Knox goes away once the second request is sent, and comes back 1.5 s later
            requests.post(faults, json={"error": 1}, timeout=5).raise_for_status()
            threading.Timer(1.5, lambda: requests.post(faults, json={}, timeout=5)).start()
        return answer

    wrap_send(monkeypatch, case, around)
    case.run(job.pk)
    all_succeeded(job)
    assert waits, "the job never said it was waiting for Knox"
    assert len({since for _, since in waits}) == 1  # one outage, one "since"
    case.applied_once(knox_sandbox, job)


@pytest.mark.django_db
def test_knox_away_past_the_patience_ends_what_is_left_with_the_reason(service, knox_sandbox, settings):
    case, job = service
    settings.KNOX_OUTAGE_PATIENCE = 0
    settings.KNOX_MAX_RETRIES = 0
    requests.post(f"{knox_sandbox.url}/_sandbox/faults", json={"error": 1}, timeout=5).raise_for_status()
    case.run(job.pk)
    job = ended(job)
    assert job.status == Job.Status.FAILED and job.failed == job.total and "Knox" in job.error_summary
    assert job.waiting_since is None
    rows = case.rows(job)
    assert {r.state for r in rows} == {KnoxRequest.State.FAILED}
    assert {r.knox_code for r in rows} <= {"NOT_SENT", "UNKNOWN"}


@pytest.mark.django_db
def test_answers_never_readable_end_the_job_instead_of_spinning(service, knox_sandbox, settings):
    """Every answer is a 200 with an HTML page: each request's fate is unknown, so the job waits as for an outage
    and, past the patience, ends with the reason (a repeatable request must not be resent for ever)."""
    case, job = service
    settings.KNOX_OUTAGE_PATIENCE = 0
    settings.KNOX_MAX_RETRIES = 0
    requests.post(f"{knox_sandbox.url}/_sandbox/faults", json={"garbage": 1}, timeout=5).raise_for_status()
    case.run(job.pk)
    job = ended(job)
    assert job.status == Job.Status.FAILED and job.failed == job.total and job.error_summary
    sent = sandbox_state(knox_sandbox)["counters"]["faults"]["garbage"]
    assert sent <= 2 * len(case.rows(job))  # bounded: at most a send and a settling read per request
