"""Knox Guard single-device actions: one synchronous request per job (approve, lock, blink, … on one device).

Exactly once: a synchronous action is not repeatable (a second lock of a Locking device fails), so its `sent_at`
is committed before the call and, if the answer is lost (or a worker dies), the device's state is read from Knox
to decide what happened. It is sent again only when that state proves the first request had no effect (the
device is exactly as before), and never after a worker died mid-call.

The lean path (`run_lean`), for a job on one device that was never planned: Knox Guard allows 100 requests/s
per token, and a one-device job is one request, so the job machinery around it must cost a few milliseconds.
After the claim it is three steps: (1) take the device and store the action with its `sent_at` (planning and
"about to send" in one transaction; one statement on PostgreSQL), (2) the request, paced by the shared rate
limiter, (3) the outcome, the device's new state, the device released and the job ended, in one transaction
(one statement on PostgreSQL). Anything unusual (a busy device, a state that does not allow the action, a
resumed job) goes to the general planner in guard.tasks. Then the worker `drain`s: it claims further queued
one-device Guard jobs of the same account and runs them the same way, each under its own lease, instead of
waiting for their deliveries (which then find them held or finished and do nothing).
"""

from __future__ import annotations

import contextvars
import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from guard.client import ACTIONS, ActionParams, DeviceRef, GuardClient, ListedDevice
from guard.models import GuardAction, GuardDevice, state_label
from portal.knox import errors
from portal.knox.http import backoff_delay
from portal.models import END_JOB_SET, END_JOB_WHERE, Job, LeaseLost, lease_seconds
from portal.workers import check_lease, new_owner

logger = logging.getLogger(__name__)

RUN_ACTIONS = "guard.tasks.run_actions"
# A worker that finished a one-device job runs at most this many more queued ones, for at most this long, before
# it takes its next delivery: enough to make the queue's own cost per job small, short enough that a worker
# returns to the queue (other kinds of job, other accounts) within seconds.
DRAIN_BATCH = 10
DRAIN_SECONDS = 2.0
# Only a backlog is drained: a job queued in the last seconds is about to reach a worker through its own delivery
# (and a caller running it itself, as a CLI or a test does, expects to find it unrun).
DRAIN_MIN_AGE_SECONDS = 2.0
_draining: contextvars.ContextVar[bool] = contextvars.ContextVar("guard_single_draining", default=False)


def run(job: Job, owner: str) -> None:
    """Run a planned single-device job: send its one action (unless planning already refused it), end the job."""
    from guard.tasks import params_for, params_from

    a = job.guard_actions.select_related("device").filter(outcome=GuardAction.Outcome.PENDING).first()
    try:
        if a is not None:
            _act_one(GuardClient(job.account), job, a, params_for(a, params_from(job)))
    except errors.KnoxError as e:
        if a is not None:
            a.refresh_from_db(fields=["sent_at"])
            record(job, a, ok=False, code="UNKNOWN" if a.sent_at else "NOT_SENT", reason=e.explain())
        GuardDevice.objects.filter(pending_job=job).update(pending_job=None)
        raise
    GuardDevice.objects.filter(pending_job=job).update(pending_job=None)
    job.finish()


def run_lean(job: Job) -> bool:
    """Plan, send and end a one-device job that was never planned, then drain; False (having done nothing) when
    the job is not one: several devices, a spreadsheet, a device the portal does not have, or a job planned
    before (a resumed one), which guard.tasks runs the general way."""
    if not _one_device(job):
        return False
    a = _plan_one(job)
    if a is None:
        return False
    _send_planned(job, a)
    if job.is_finished and not job.error_summary:
        drain(job)
    return True


def _one_device(job: Job) -> bool:
    p = job.params
    return "upload" not in p and len(p.get("devices") or []) == 1 and p.get("action") in ACTIONS


def _plan_one(job: Job) -> GuardAction | None:
    """guard.tasks.plan for one device that is free and whose state allows the action, in one transaction of two
    statements (one statement on PostgreSQL): take the device for the job (`pending_job`) on exactly those
    conditions, and only if the job was never planned, returning the device; store the GuardAction with its
    `sent_at` and transactionId, committed before the request leaves. None when the device is not taken: the
    general planner decides then (BUSY, STATE, a device the portal does not have, a resumed job)."""
    action = job.params["action"]
    allowed = ACTIONS[action].allowed_from
    take = _TAKE_DEVICE.replace("{allowed}", ", ".join(["%s"] * len(allowed)))
    take_params = [job.pk, job.params["devices"][0], job.account_id, *allowed, job.pk, job.pk]
    a = GuardAction(account_id=job.account_id, job=job, action=action, actor_id=job.created_by_id)
    a.params, a.sent_at, a.transaction_id = job.params.get("action_params") or {}, timezone.now(), _txid()
    if connection.vendor == "postgresql":
        # One round trip: the INSERT takes the device's columns from the UPDATE's RETURNING.
        columns, values = _insert_values(a, skip=_FROM_DEVICE)
        rows = _fetch_all(
            f"WITH d AS ({take}), a AS (INSERT INTO {_q(GuardAction._meta.db_table)} "  # noqa: S608 - names from the model
            f'({columns}, "device_id", "device_uid", "state_before") '
            f'SELECT {", ".join(["%s"] * len(values))}, d."id", d."device_uid", d."state" FROM d RETURNING "id") '
            "SELECT a.*, d.* FROM a, d",
            [*take_params, *values],
        )
        if not rows:
            return None
        pk, *device = rows[0]
        _as_taken(a, device)
    else:
        with transaction.atomic():
            rows = _fetch_all(take, take_params)
            if not rows:
                return None
            _as_taken(a, rows[0])
            columns, values = _insert_values(a)
            sql = f"INSERT INTO {_q(GuardAction._meta.db_table)} ({columns}) "
            pk = _fetch_all(sql + f'VALUES ({", ".join(["%s"] * len(values))}) RETURNING "id"', values)[0][0]
    a.pk, a._state.adding, a._state.db = pk, False, connection.alias
    return a


def _as_taken(a: GuardAction, device: Any) -> None:
    """Fill `a` from the device row _TAKE_DEVICE returned."""
    d = GuardDevice.from_db(connection.alias, _DEVICE_FIELDS, list(device))
    a.device, a.device_uid, a.state_before = d, d.device_uid, d.state


def _insert_values(a: GuardAction, skip: tuple[str, ...] = ()) -> tuple[str, list[Any]]:
    """The columns and database values of an INSERT of `a`, from the model's fields (so a field added later, with
    its default, is included): what Model.save sends, without compiling a query for it."""
    fields = [f for f in GuardAction._meta.local_concrete_fields if not f.primary_key and f.attname not in skip]
    values = [f.get_db_prep_save(f.pre_save(a, True), connection) for f in fields]
    return ", ".join(_q(f.column) for f in fields), values


def _send_planned(job: Job, a: GuardAction) -> None:
    """The request for an action `_plan_one` stored (sent_at committed); its outcome ends the job."""
    from guard.tasks import params_for, params_from

    try:
        _act_one(GuardClient(job.account), job, a, params_for(a, params_from(job)), marked=True, end=True)
    except errors.KnoxError as e:
        a.refresh_from_db(fields=["sent_at"])
        record(job, a, ok=False, code="UNKNOWN" if a.sent_at else "NOT_SENT", reason=e.explain())
        GuardDevice.objects.filter(pending_job=job).update(pending_job=None)
        raise
    if not job.is_finished:  # the outcome was recorded by someone else, or the lease was lost: end it the usual way
        check_lease()
        GuardDevice.objects.filter(pending_job=job).update(pending_job=None)
        job.finish()


def drain(job: Job) -> int:
    """Run more queued one-device Guard jobs of `job`'s account in this worker, now, instead of each waiting for
    its own delivery: up to DRAIN_BATCH of them, claimed together in one statement (only jobs still queued and
    never claimed; `Job.claim_unclaimed`), then each run by portal.tasks.run_claimed under a lease of its own,
    exactly as its delivery would run it. A delivery that comes while a job is held here finds it held and does
    nothing; one that comes after finds it finished.

    Stops after DRAIN_SECONDS or at the first job that did not end cleanly (Knox failing, a lost lease); jobs it
    claimed and did not run are handed back (`_hand_back`). Returns how many it ran."""
    if _draining.get() or DRAIN_BATCH < 1:
        return 0  # a drained job does not drain in its turn
    if job.created_at > timezone.now() - timedelta(seconds=DRAIN_MIN_AGE_SECONDS):
        return 0  # jobs queued after this one are younger still: no backlog to look for
    from guard.tasks import _run_actions
    from portal.tasks import run_claimed

    owner = new_owner()
    claimed = Job.claim_unclaimed(_queued_after(job, DRAIN_BATCH), owner)
    deadline = time.monotonic() + DRAIN_SECONDS
    ran = 0
    token = _draining.set(True)
    try:
        for nxt in claimed:
            if time.monotonic() >= deadline or not _still_held(nxt, owner):
                break
            run_claimed(nxt, owner, _run_actions)
            ran += 1
            if not (nxt.is_finished and not nxt.error_summary):
                break
    finally:
        _draining.reset(token)
        _hand_back(claimed[ran:], owner)
    return ran


def _queued_after(job: Job, n: int) -> list[Job]:
    """Up to `n` one-device Guard action jobs of the same account queued after `job` (and more than
    DRAIN_MIN_AGE_SECONDS ago) and never claimed, in order."""
    queued_before = timezone.now() - timedelta(seconds=DRAIN_MIN_AGE_SECONDS)
    queued = (
        Job.objects.filter(pk__gt=job.pk, status=Job.Status.QUEUED, lease_until__isnull=True)
        .filter(func=RUN_ACTIONS, kind__startswith="guard.", account_id=job.account_id)
        .filter(created_at__lte=queued_before)
        .select_related("account")
        .order_by()[:n]  # no sort: an index scan that stops at n rows; roughly oldest first all the same
    )
    return sorted((j for j in queued if _one_device(j)), key=lambda j: j.pk)


def _still_held(job: Job, owner: str) -> bool:
    """Claimed together, the later jobs of a batch wait for the earlier ones; a lease is certainly still ours for
    half its length (nobody can claim a job under a live lease), past that it is claimed again (conditionally)."""
    if job.lease_until and (job.lease_until - timezone.now()).total_seconds() > lease_seconds() / 2:
        return True
    return job.claim(owner)


def _hand_back(jobs: list[Job], owner: str) -> None:
    """Jobs claimed by `drain` that it did not run: their lease is ended and their task queued again, since their
    own delivery may have come (and done nothing) while they were held here."""
    for job in jobs:
        expired = timezone.now() - timedelta(seconds=1)
        if Job.objects.filter(pk=job.pk, lease_owner=owner).update(lease_owner="", lease_until=expired):
            job.send()


def single_action_attempts() -> int:
    """How many times a single-device action may be sent: as many as an idempotent call's attempts
    (KNOX_MAX_RETRIES + 1), since it is sent again only when Knox shows the device provably untouched."""
    return settings.KNOX_MAX_RETRIES + 1


def _act_one(
    client: GuardClient, job: Job, a: GuardAction, params: ActionParams, *, marked: bool = False, end: bool = False
) -> None:
    """Send `a` and record its outcome. `marked`: its sent_at was committed just now by this worker (the lean
    path's plan), so the first attempt needs no marking and a set sent_at does not mean an earlier worker died.
    `end`: the outcome also ends the job (see `record`)."""
    ref = a.device.ref if a.device else DeviceRef(device_uid=a.device_uid)
    if a.sent_at is not None and not marked:
        # A worker died after sending: Knox's state says whether it was applied. Never send it again: the dead
        # process's request may still be in flight, so an untouched device stays UNKNOWN.
        applied, found = _knox_state(client, job, a, end=end)
        if not applied:
            _record_unknown(job, a, found, end=end)
        return
    attempts = single_action_attempts()
    for attempt in range(1, attempts + 1):
        if attempt > 1 or not marked:
            _mark_sent(a)
        try:
            client.act(a.action, ref, params, transaction_id=a.transaction_id)
        except (errors.KnoxOutcomeUnknown, errors.KnoxBadResponse):
            # The answer was lost or unreadable: Knox's state says whether it was applied. Only when the device is
            # provably untouched (still in the state it had before) is the action sent again.
            applied, found = _knox_state(client, job, a, end=end)
            if applied:
                return
            if not _untouched(a, found):
                _record_unknown(job, a, found, end=end)
                return
            if attempt == attempts:
                record(
                    job,
                    a,
                    ok=False,
                    code="NOT_APPLIED",
                    message="NOT_APPLIED",
                    end=end,
                    reason=f"Knox's answers were lost {attempts} times and the device is still {state_label(found.state)}",
                )
                return
            time.sleep(backoff_delay(attempt))
            continue
        except (errors.KnoxUnavailable, errors.KnoxServerError, errors.KnoxRateLimited, errors.KnoxAuthError) as e:
            if type(e) is errors.KnoxUnavailable:
                # For a non-repeatable call the HTTP layer raises this only when the connection was never made.
                GuardAction.objects.filter(pk=a.pk).update(sent_at=None)
            raise
        except errors.KnoxError as e:
            if attempt > 1 and _knox_state(client, job, a, end=end)[0]:
                return  # an earlier attempt whose answer was lost did apply; this refusal is its echo
            code = e.code or f"HTTP{e.status}"
            record(job, a, ok=False, code=code, message=e.message, reason=e.detail or e.explain(), end=end)
            return
        record(job, a, ok=True, end=end)
        return


def _mark_sent(a: GuardAction) -> None:
    """Commit `sent_at` (and the transactionId) before the request leaves."""
    a.sent_at, a.transaction_id = timezone.now(), a.transaction_id or _txid()
    GuardAction.objects.filter(pk=a.pk).update(sent_at=a.sent_at, transaction_id=a.transaction_id)


def _knox_state(
    client: GuardClient, job: Job, a: GuardAction, *, end: bool = False
) -> tuple[bool, ListedDevice | None]:
    """Read the device from Knox; when its state shows the action applied, record the success.
    Returns (applied, the device as Knox lists it)."""
    spec = ACTIONS[a.action]
    found = client.find(a.device.device_uid if a.device else a.device_uid)
    if spec.becomes == "" and found is None:
        record(job, a, ok=True, reason="confirmed: Knox no longer lists the device", end=end)
        return True, None
    if found is not None and found.state in {spec.becomes, SETTLES_TO.get(spec.becomes or "", "")} - {None, ""}:
        reason = f"confirmed by the device's state in Knox ({state_label(found.state)})"
        record(job, a, ok=True, reason=reason, knox_state=found.state, end=end)
        return True, found
    return False, found


def _untouched(a: GuardAction, found: ListedDevice | None) -> bool:
    """Knox shows the device exactly as it was before the action: the request provably had no effect."""
    return found is not None and bool(a.state_before) and found.state == a.state_before


def _record_unknown(job: Job, a: GuardAction, found: ListedDevice | None, *, end: bool = False) -> None:
    record(
        job,
        a,
        ok=False,
        code="UNKNOWN",
        message="OUTCOME_UNKNOWN",
        end=end,
        reason=f"Knox shows the device as {found.state if found else 'absent'}",
    )


# Transitional state → where it settles (seed 003 life cycle), to recognise an applied action later.
SETTLES_TO = {
    "Accepted": "Enrolled",
    "Locking": "Locked",
    "Unlocking": "Enrolled",
    "StartingReminder": "Blinked",
    "StoppingReminder": "Enrolled",
    "Completing": "Completed",
}


def record(
    job: Job,
    a: GuardAction,
    *,
    ok: bool,
    code: str = "",
    message: str = "",
    reason: str = "",
    knox_state: str = "",
    end: bool = False,
) -> None:
    """Store one device's outcome, its new state and the job's counters together. With `end` (a job of this one
    action, run by the lean path) the same transaction releases the device and ends the job, unless this worker
    has lost its lease: then the outcome is still stored, and the job and device are left to the new holder."""
    now = timezone.now()
    end = end and not _lease_lost()
    outcome = _outcome_values(a, ok, code, message, reason, knox_state, now)
    device = _device_update(a, ok, code, message or reason, knox_state, now, release=job if end else None)
    if end and device is not None and connection.vendor == "postgresql":
        _record_and_end_in_one(job, ok, outcome, device, now)
        return
    with transaction.atomic():
        if _execute(_RECORD_OUTCOME, outcome) != 1:
            return  # recorded already (a resumed worker)
        if device is None:
            # Deleted from Knox Guard: the history stays in GuardAction (device set to NULL).
            GuardDevice.objects.filter(account_id=a.account_id, device_uid=_uid(a)).delete()
        else:
            _execute(*device)
        if end:
            job.end_with(Job.Status.SUCCEEDED if ok else Job.Status.FAILED, succeeded=int(ok), failed=int(not ok))
        else:
            job.add_progress(succeeded=1 if ok else 0, failed=0 if ok else 1)


def _record_and_end_in_one(job: Job, ok: bool, outcome: list[Any], device: tuple[str, list[Any]], now: Any) -> None:
    """`record` with `end` on PostgreSQL: the three updates as one statement (data-modifying CTEs), one round trip
    to the database instead of five (BEGIN, three statements, COMMIT); the device and the job change only if this
    call recorded the outcome."""
    check_lease()  # only the lease holder ends a running job
    status = Job.Status.SUCCEEDED if ok else Job.Status.FAILED
    device_sql, device_params = device
    sql = (
        f"WITH a AS ({_RECORD_OUTCOME} RETURNING 1), "  # noqa: S608 - constant fragments; values are parameters
        f"d AS ({device_sql} AND EXISTS (SELECT 1 FROM a)), "
        f'j AS (UPDATE "portal_job" SET {END_JOB_SET} WHERE {END_JOB_WHERE} AND EXISTS (SELECT 1 FROM a) RETURNING 1) '
        "SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM j)"
    )
    params = [*outcome, *device_params, *job.end_params(status, int(ok), int(not ok), "", now)]
    recorded, ended = _fetch_all(sql, params)[0]
    if recorded and ended:
        job.ended(status, int(ok), int(not ok), "", now)
    elif recorded:
        job.refresh_from_db()  # ended elsewhere: show how


def _lease_lost() -> bool:
    try:
        check_lease()
    except LeaseLost:
        return True
    return False


def _uid(a: GuardAction) -> str:
    return a.device.device_uid if a.device else a.device_uid


def _outcome_values(
    a: GuardAction, ok: bool, code: str, message: str, reason: str, knox_state: str, now: Any
) -> list[Any]:
    """The parameters of _RECORD_OUTCOME."""
    spec = ACTIONS[a.action]
    outcome = GuardAction.Outcome.SUCCEEDED if ok else GuardAction.Outcome.FAILED
    state_after = knox_state or (spec.becomes if ok and spec.becomes is not None else a.state_before)
    return [outcome, code[:20], message[:100], reason[:400], _db_time(now), state_after[:20], a.pk]


def update_device(
    a: GuardAction, *, ok: bool, code: str, message: str, knox_state: str, now: Any, release: Job | None = None
) -> None:
    """The device's last action, outcome and (when Knox changed it) state; with `release`, its `pending_job` is
    cleared in the same statement when it is that job. A device Knox no longer has is deleted."""
    device = _device_update(a, ok, code, message, knox_state, now, release)
    if device is None:
        # Deleted from Knox Guard: the history stays in GuardAction (device set to NULL).
        GuardDevice.objects.filter(account_id=a.account_id, device_uid=_uid(a)).delete()
    else:
        _execute(*device)


def _device_update(
    a: GuardAction, ok: bool, code: str, message: str, knox_state: str, now: Any, release: Job | None
) -> tuple[str, list[Any]] | None:
    """update_device's UPDATE and its parameters (one plain statement: it runs for every device of every job);
    None when the action deleted the device from Knox Guard."""
    spec = ACTIONS[a.action]
    if ok and spec.becomes == "":
        return None
    values: list[Any] = [a.action, _db_time(now), "succeeded" if ok else "failed", code[:20], message[:400]]
    values.append(_db_time(now))
    sets = _SET_LAST
    state = (knox_state or spec.becomes) if ok else ""
    if state:
        sets += ', "state" = %s'
        values.append(state)
    if release is not None:
        sets += ', "pending_job_id" = CASE WHEN "pending_job_id" = %s THEN NULL ELSE "pending_job_id" END'
        values.append(release.pk)
    sql = f'UPDATE "guard_guarddevice" SET {sets} WHERE "account_id" = %s AND "device_uid" = %s'  # noqa: S608 - fixed names
    return sql, [*values, a.account_id, _uid(a)]


# --- plain SQL for the statements every single-device job runs ---------------------------------------------------
# Compiling an ORM query costs ~0.5 ms of CPU, more than running it, and on PostgreSQL every statement is a round
# trip: at 100 jobs/s, on 2 cores shared with the queue and Knox itself, those were the largest costs of a job.
# Same tables and columns as the models (Django's defaults).

_DEVICE_FIELDS = ["id", "account_id", "object_id", "device_uid", "approve_id", "state", "pending_job_id"]
# Take a device for a job: the device of the account, in a state that allows the action ({allowed}), not held by
# another active job, and the job never planned (no GuardAction); returns the device (RETURNING: SQLite 3.35+).
_TAKE_DEVICE = """
UPDATE "guard_guarddevice" SET "pending_job_id" = %s
WHERE "id" = %s AND "account_id" = %s AND "state" IN ({allowed})
    AND ("pending_job_id" IS NULL OR "pending_job_id" = %s OR NOT EXISTS (
        SELECT 1 FROM "portal_job" j WHERE j."id" = "guard_guarddevice"."pending_job_id"
        AND j."status" IN ('queued', 'running')))
    AND NOT EXISTS (SELECT 1 FROM "guard_guardaction" a WHERE a."job_id" = %s)
RETURNING "id", "account_id", "object_id", "device_uid", "approve_id", "state", "pending_job_id"
"""
_RECORD_OUTCOME = (
    'UPDATE "guard_guardaction" SET "outcome" = %s, "code" = %s, "message" = %s, "reason" = %s, '
    '"finished_at" = %s, "state_after" = %s WHERE "id" = %s AND "outcome" = \'pending\''
)
_SET_LAST = (
    '"last_action" = %s, "last_action_at" = %s, "last_outcome" = %s, "last_code" = %s, "last_message" = %s, '
    '"updated_at" = %s'
)


_FROM_DEVICE = ("device_id", "device_uid", "state_before")  # a GuardAction's columns that _TAKE_DEVICE gives


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _db_time(value: Any) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _execute(sql: str, params: list[Any]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _fetch_all(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """Rows of a query or of an UPDATE … RETURNING (read to the end: SQLite finishes the statement only then)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _txid() -> str:
    from guard.models import new_transaction_id

    return new_transaction_id()
