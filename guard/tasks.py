"""Knox Guard background work (django-q2 tasks taking a Job primary key).

- `run_actions`: one action (approve, lock, blink, …) on one or many devices. A single device uses the
  synchronous endpoint; several go in asynchronous requests of at most KG_ASYNC_MAX_DEVICES, each with an
  x-knox-transactionId stored before it is sent, and their results are read back with POST /transaction.
- `sync_devices`: page through Knox's device list into GuardDevice records.
- `run_upload`: POST devices/uploads from a staged spreadsheet, at most KG_UPLOAD_MAX_DEVICES a call.

Exactly once: a synchronous action is not repeatable (a second lock of a Locking device fails), so its
`sent_at` is committed before the call and, if the answer is lost (or a worker dies), the device's state is read
from Knox to decide what happened. It is sent again only when that state proves the first request had no effect
(the device is exactly as before), and never after a worker died mid-call. Asynchronous requests are keyed on their stored
transactionId, which Knox does not apply twice.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from guard import single
from guard.client import ACTIONS, ActionParams, DeviceRef, GuardClient, ListedDevice, UploadResults, upload_results
from guard.constants import KG_ASYNC_MAX_DEVICES, KG_MAX_PAGE_SIZE, KG_UPLOAD_MAX_DEVICES
from guard.models import (
    GuardAction,
    GuardChunk,
    GuardDevice,
    GuardUpload,
    GuardUploadDevice,
    follow_upload_part,
    sendable_devices,
)
from portal import engine
from portal.db import db_datetime, insert_rows
from portal.engine import ABSENT, UNKNOWN, Absent, Protocol, Timings, drive, record_outcomes
from portal.knox import errors
from portal.models import AuditEvent, Job, UploadRow
from portal.tasks import run_job

logger = logging.getLogger(__name__)

ACTIVE = (Job.Status.QUEUED, Job.Status.RUNNING)
POLL_FIRST_DELAY_SECONDS = 0.5
POLL_BACKOFF = 1.5
POLL_MAX_INTERVAL_SECONDS = 15.0
RESULT_TIMEOUT_SECONDS = 1800


def params_from(job: Job) -> ActionParams:
    p = dict(job.params.get("action_params") or {})
    for key in ("time_limit", "days_limit"):
        if p.get(key) is not None:
            p[key] = tuple(p[key])
    return ActionParams(**p)


# --- planning -----------------------------------------------------------------------------------------------


def _targets(job: Job) -> list[tuple[str, int | None, str]]:
    """(IMEI/serial, spreadsheet row, approve ID from the row) for every device the job acts on."""
    p = job.params
    if "upload" in p:
        rows = UploadRow.objects.filter(upload_id=p["upload"], status=UploadRow.Status.VALID).order_by("row_number")
        return list(rows.values_list("value", "row_number", "approve_id"))
    devices = GuardDevice.objects.filter(pk__in=p.get("devices") or [], account_id=job.account_id)
    return [(uid, None, "") for uid in devices.values_list("device_uid", flat=True)]


def params_for(a: GuardAction, job_params: ActionParams) -> ActionParams:
    """A bulk approve assigns each row's own approve ID (they must be unique per device)."""
    if a.action == "approve" and a.params.get("row_approve_id") and not job_params.approve_id:
        return ActionParams(**{**vars(job_params), "approve_id": a.params["row_approve_id"]})
    return job_params


def plan(job: Job) -> None:
    """Create a GuardAction per device (and the async chunks), checking each against the portal's records first.

    A device the portal knows in a state that does not allow the action, or one another job is acting on, is
    recorded as failed without being sent. A device the portal has never seen is recorded as not sent
    (NOT_FOUND) when the job came from the web's spreadsheet preview (`only_known`), which said so before
    confirming; otherwise (the guard_action command) it is sent by IMEI/serial and Knox decides. All of it in one
    database transaction, before anything is sent.
    """
    action = job.params["action"]
    spec = ACTIONS[action]
    params = job.params.get("action_params") or {}
    with transaction.atomic():
        targets = _targets(job)
        keys = [t for t, _, _ in targets]
        local = {}
        for d in (
            GuardDevice.objects.select_for_update()
            .filter(account_id=job.account_id)
            .filter(Q(device_uid__in=keys) | Q(approve_id__in=keys))
        ):
            local[d.device_uid] = d
            if d.approve_id:
                local.setdefault(d.approve_id, d)
        actions: list[GuardAction] = []
        for identifier, row, row_approve_id in targets:
            d = local.get(identifier)
            approving_a_row = row_approve_id and action == "approve"
            a = GuardAction(
                account_id=job.account_id,
                job=job,
                device=d,
                device_uid=identifier,
                row_number=row,
                action=action,
                params={**params, "row_approve_id": row_approve_id} if approving_a_row else params,
                actor_id=job.created_by_id,
                state_before=d.state if d else "",
            )
            if (
                d is not None
                and d.pending_job_id
                and d.pending_job_id != job.pk
                and Job.objects.filter(pk=d.pending_job_id, status__in=ACTIVE).exists()
            ):
                a.outcome, a.code, a.reason = (
                    GuardAction.Outcome.FAILED,
                    "BUSY",
                    f"job #{d.pending_job_id} is acting on it",
                )
            elif d is None and job.params.get("only_known"):
                a.outcome, a.code = GuardAction.Outcome.FAILED, "NOT_FOUND"
                a.reason = "not in the portal's records: sync devices or check the IMEI"
            elif d is not None and not d.allows(action):
                a.outcome, a.code = GuardAction.Outcome.FAILED, "STATE"
                a.reason = (
                    f"the device is {d.console_state}; “{spec.label}” is possible only while it is {spec.allowed_label}"
                )
            actions.append(a)
        pending = [a for a in actions if a.outcome == GuardAction.Outcome.PENDING]
        if len(pending) > 1:
            for seq, part in enumerate(_async_parts(pending), start=1):
                chunk = GuardChunk.objects.create(job=job, sequence=seq, action=action, device_count=len(part))
                for a in part:
                    a.chunk = chunk
                    a.transaction_id = chunk.transaction_id
        GuardAction.objects.bulk_create(actions, batch_size=2000)
        GuardDevice.objects.filter(pk__in=[a.device_id for a in pending if a.device_id]).update(pending_job=job)
        failed = len(actions) - len(pending)
        Job.objects.filter(pk=job.pk).update(total=len(actions), failed=failed, version=F("version") + 1)


# Devices planned per transaction when a job acts on a filter (plan_matching).
PLAN_BATCH = 5000


def plan_matching(job: Job, owner: str = "") -> None:
    """plan() for a job on every device matching the device list's filter (guard.models.queue_action_matching),
    in batches of PLAN_BATCH devices by id, each its own transaction: memory stays flat at a million devices.

    Resumable: a batch is committed whole, so a job resumed after a worker died carries on after the highest
    device it planned; once every device is planned this is one query that finds nothing. Devices whose state no
    longer allows the action, or that another job took meanwhile, are not taken (sendable_devices): the review page
    counted them as refused."""
    action = job.params["action"]
    params = job.params.get("action_params") or {}
    devices = sendable_devices(GuardDevice.objects.matching(job.account, job.params.get("filter") or {}), action)
    last = job.guard_actions.aggregate(m=Max("device_id"))["m"] or 0
    sequence = job.guard_chunks.aggregate(m=Max("sequence"))["m"] or 0
    while True:
        with transaction.atomic():
            # OF self: the filter may outer-join the device's pending job, which PostgreSQL cannot lock.
            batch = list(devices.select_for_update(of=("self",)).filter(id__gt=last).order_by("id")[:PLAN_BATCH])
            if not batch:
                break
            # sendable_devices already left out, in this transaction, the devices another job is acting on.
            pending = [
                GuardAction(
                    account_id=job.account_id,
                    job=job,
                    device=d,
                    device_uid=d.device_uid,
                    action=action,
                    params=params,
                    actor_id=job.created_by_id,
                    state_before=d.state,
                )
                for d in batch
            ]
            # One device in all (the first batch is the last): a synchronous request, as plan() does.
            if len(pending) > 1 or (pending and (sequence or len(batch) == PLAN_BATCH)):
                for part in _async_parts(pending):
                    sequence += 1
                    chunk = GuardChunk.objects.create(job=job, sequence=sequence, action=action, device_count=len(part))
                    for a in part:
                        a.chunk = chunk
                        a.transaction_id = chunk.transaction_id
            GuardAction.objects.bulk_create(pending, batch_size=2000)
            GuardDevice.objects.filter(pk__in=[a.device_id for a in pending]).update(pending_job=job)
            last = batch[-1].pk
        if owner:
            job.heartbeat(owner)
    planned = job.guard_actions.count()
    Job.objects.filter(pk=job.pk).update(total=planned, version=F("version") + 1)
    job.refresh_from_db()


def _async_parts(pending: list[GuardAction]) -> list[list[GuardAction]]:
    """The asynchronous requests of a bulk job: at most KG_ASYNC_MAX_DEVICES devices each, and one set of
    parameters per request (an `…Async` body carries the parameters once for its list of deviceUids; only a bulk
    approve with each row's own approve ID differs per device)."""
    groups: dict[str, list[GuardAction]] = {}
    for a in pending:
        groups.setdefault(json.dumps(a.params, sort_keys=True), []).append(a)
    return [
        group[start : start + KG_ASYNC_MAX_DEVICES]
        for group in groups.values()
        for start in range(0, len(group), KG_ASYNC_MAX_DEVICES)
    ]


# --- running ------------------------------------------------------------------------------------------------


def run_actions(job_pk: int) -> None:
    run_job(job_pk, _run_actions)


def _run_actions(job: Job, owner: str) -> None:
    if single.run_lean(job):  # one device, never planned: planned, sent and ended by guard.single
        return
    if "filter" in job.params:  # “all matching the filter” of the device list: planned in batches
        plan_matching(job, owner)
    elif not job.guard_actions.exists():
        plan(job)
    if not job.guard_chunks.exists():  # one device (or none left to send): a synchronous request (guard.single)
        single.run(job, owner)
        return
    drive(job, owner, BulkAction(job))


class BulkAction(Protocol):
    """A bulk action in asynchronous requests (…Async, knox-api.md §4.7), read back with POST /transaction by the
    request's stored x-knox-transactionId, which Knox applies once: repeatable."""

    model = GuardChunk
    client_class = GuardClient
    timings = Timings(POLL_FIRST_DELAY_SECONDS, POLL_BACKOFF, POLL_MAX_INTERVAL_SECONDS, RESULT_TIMEOUT_SECONDS)
    repeatable = True

    @cached_property
    def params(self) -> ActionParams:
        return params_from(self.job)

    def plan(self) -> None:
        if "filter" in self.job.params:
            plan_matching(self.job, self.owner)
        else:
            plan(self.job)

    def send(self, chunk: GuardChunk) -> None:
        actions = chunk.actions.select_related("device").filter(outcome=GuardAction.Outcome.PENDING).order_by("id")
        items = [(_ref(a), params_for(a, self.params)) for a in actions]
        GuardAction.objects.filter(chunk=chunk, sent_at=None).update(sent_at=chunk.send_attempted_at)
        self.client.act_async(chunk.action, items, transaction_id=chunk.transaction_id)

    def poll(self, chunk: GuardChunk) -> dict[str, tuple[str, str, str]] | None:
        result = self.client.result(chunk.transaction_id)
        return result.failures if result.count >= chunk.device_count else None

    def not_yet(self, e: errors.KnoxError, chunk: GuardChunk) -> bool:
        return e.status in (400, 404)  # Knox has no result for the id yet: it may still be processing it

    def apply(self, chunk: GuardChunk, failures: dict[str, tuple[str, str, str]]) -> None:
        now = timezone.now()
        with transaction.atomic():
            chunk = GuardChunk.objects.select_for_update().get(pk=chunk.pk)
            if chunk.is_terminal:
                return
            actions = list(chunk.actions.select_related("device").filter(outcome=GuardAction.Outcome.PENDING))
            for a in actions:
                failure = failures.get(_ref(a).requested_id) or failures.get(a.device_uid)
                if failure is None:
                    a.outcome, a.state_after = (
                        GuardAction.Outcome.SUCCEEDED,
                        ACTIONS[a.action].becomes or a.state_before,
                    )
                else:
                    a.outcome, a.state_after = GuardAction.Outcome.FAILED, a.state_before
                    a.code, a.message, a.reason = failure[0][:20], failure[1][:100], failure[2][:400]
                a.finished_at = now
                single.update_device(a, ok=failure is None, code=a.code, message=a.message, knox_state="", now=now)
            GuardAction.objects.bulk_update(
                actions, ["outcome", "code", "message", "reason", "state_after", "finished_at"], batch_size=1000
            )
            ok = sum(a.outcome == GuardAction.Outcome.SUCCEEDED for a in actions)
            record_outcomes(self.job, chunk, GuardChunk.State.COMPLETE, ok, len(actions) - ok)

    def fail(self, chunk: GuardChunk, state: str, code: str, message: str, detail: str = "") -> None:
        now = timezone.now()
        with transaction.atomic():
            chunk = GuardChunk.objects.select_for_update().get(pk=chunk.pk)
            if chunk.is_terminal:
                return
            n = chunk.actions.filter(outcome=GuardAction.Outcome.PENDING).update(
                outcome=GuardAction.Outcome.FAILED, code=code[:20], reason=(detail or message)[:400], finished_at=now
            )
            record_outcomes(self.job, chunk, state, 0, n, code=code, message=message)

    def finish(self, summary: str) -> None:
        # Released only when this worker ends the job: after a LeaseLost the new holder still needs the devices.
        GuardDevice.objects.filter(pending_job=self.job).update(pending_job=None)
        self.job.finish(summary)


def _ref(a: GuardAction) -> DeviceRef:
    return a.device.ref if a.device else DeviceRef(device_uid=a.device_uid)


# --- device sync --------------------------------------------------------------------------------------------

SYNC_BATCH = 1000


def sync_devices(job_pk: int) -> None:
    run_job(job_pk, _sync_devices)


def _sync_devices(job: Job, owner: str) -> None:
    client = GuardClient(job.account)
    batch: list[ListedDevice] = []
    seen = 0
    for listed in client.iter_devices():
        batch.append(listed)
        if len(batch) >= SYNC_BATCH:
            seen += upsert_devices(job.account_id, batch)
            job.add_progress(succeeded=len(batch))
            job.heartbeat(owner)
            batch = []
    seen += upsert_devices(job.account_id, batch)
    job.add_progress(succeeded=len(batch))
    job.set_total(seen)
    job.finish()


# New GuardDevice rows made by a sync (every non-null column without a database default), in insert order.
NEW_DEVICE_FIELDS = (
    "account",
    "object_id",
    "device_uid",
    "approve_id",
    "state",
    "model",
    "upload_id",
    "licence",
    "last_action",
    "last_outcome",
    "last_code",
    "last_message",
    "synced_at",
    "created_at",
    "updated_at",
)


def upsert_devices(account_id: int, listed: list[ListedDevice]) -> int:
    """Create or refresh GuardDevice rows from Knox's list (one SELECT, one INSERT batch, per-state UPDATEs)."""
    listed = [d for d in listed if d.device_uid]
    if not listed:
        return 0
    now = timezone.now()
    existing = set(
        GuardDevice.objects.filter(account_id=account_id, device_uid__in=[d.device_uid for d in listed]).values_list(
            "device_uid", flat=True
        )
    )
    stamp = db_datetime(now)
    blank = ("",) * 5  # licence, last_action, last_outcome, last_code, last_message
    rows = (
        (account_id, d.object_id, d.device_uid, d.approve_id, d.state, d.model, d.upload_id, *blank, *(stamp,) * 3)
        for d in listed
        if d.device_uid not in existing
    )
    insert_rows(
        GuardDevice,
        NEW_DEVICE_FIELDS,
        rows,
        ignore_conflicts=True,
    )
    by_values: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    for d in listed:
        if d.device_uid in existing:
            by_values[(d.state, d.object_id, d.approve_id, d.model)].append(d.device_uid)
    for (state, object_id, approve_id, model), uids in by_values.items():
        # Only what Knox told us: an upload answer has no objectId or model, and must not blank them.
        known = {"state": state, "object_id": object_id, "approve_id": approve_id, "model": model}
        GuardDevice.objects.filter(account_id=account_id, device_uid__in=uids).update(
            **{k: v for k, v in known.items() if v}, synced_at=now, updated_at=now
        )
    return len(listed)


# --- uploads to Knox Guard (a portal.engine protocol) ---------------------------------------------------------


def run_upload(job_pk: int) -> None:
    run_job(job_pk, lambda job, owner: drive(job, owner, GuardUploads(job)))


# Refusals of the credentials or the tenant: every part would get the same one.
UPLOAD_JOB_LEVEL_CODES = frozenset({"4010000", "4040100", "4040900", "4042101", "4002102"})


class GuardUploads(Protocol):
    """POST devices/uploads, one part at a time. Knox answers at once: the answer is kept on the part before the
    engine marks it submitted, then applied (Knox's figures on the part, the valid devices in the portal's list).

    Not repeatable, and Knox keeps no transaction id for an upload: a part whose answer was lost is settled by
    looking its devices up (`lookup`): none in Knox Guard, it never arrived and is sent again; all of them, it
    arrived; some, nobody can tell (UNKNOWN, check Knox Guard's list of uploads).
    """

    model = GuardUpload
    client_class = GuardClient
    job_level_codes = UPLOAD_JOB_LEVEL_CODES

    def plan(self) -> None:
        """One GuardUpload per KG_UPLOAD_MAX_DEVICES valid rows of the staged spreadsheet, all committed before any
        is sent."""
        job = self.job
        rows = list(
            UploadRow.objects.filter(upload_id=job.params["upload"], status=UploadRow.Status.VALID)
            .order_by("row_number")
            .values_list("row_number", flat=True)
        )
        with transaction.atomic():
            for sequence, start in enumerate(range(0, len(rows), KG_UPLOAD_MAX_DEVICES), start=1):
                numbers = rows[start : start + KG_UPLOAD_MAX_DEVICES]
                GuardUpload.objects.create(
                    account_id=job.account_id,
                    job=job,
                    sequence=sequence,
                    flags=job.params.get("flags") or {},
                    device_count=len(numbers),
                    first_row=numbers[0],
                    last_row=numbers[-1],
                )
            job.set_total(len(rows))

    def devices(self, up: GuardUpload) -> list[tuple[str, str]]:
        """The part's (IMEI/serial, approve ID) pairs, in spreadsheet order."""
        rows = UploadRow.objects.filter(
            upload_id=self.job.params["upload"],
            status=UploadRow.Status.VALID,
            row_number__gte=up.first_row,
            row_number__lte=up.last_row,
        )
        return list(rows.order_by("row_number").values_list("value", "approve_id"))

    def send(self, up: GuardUpload) -> dict[str, Any]:
        """Upload the part; Knox's answer is kept on it before the engine marks it submitted."""
        doc = self.client.upload(self.devices(up), up.flags, transaction_id=up.transaction_id)
        invalid = [r for r in doc.get("invalidReasons") or [] if isinstance(r, dict)]
        answer = {
            "upload_id": str(doc.get("uploadID") or doc.get("uploadId") or "")[:64],  # Knox spells it uploadID here
            "knox_status": str(doc.get("uploadStatus") or "")[:20],
            "valid": int(doc.get("validDeviceCount") or 0),
            "invalid": int(doc.get("invalidDeviceCount") or len(invalid)),
            "invalid_reasons": invalid[:1000],
        }
        GuardUpload.objects.filter(pk=up.pk).update(**answer)  # kept: a worker stopping now still applies it
        return answer

    def poll(self, up: GuardUpload) -> dict[str, Any]:
        """Submitted only with Knox's answer kept (`send`): apply it (a worker stopped before it did)."""
        return kept_answer(up)

    def lookup(self, up: GuardUpload) -> dict[str, Any] | Absent | None:
        """After a lost answer (or a worker killed mid-call): Knox's kept answer if there is one, else what Knox
        Guard lists of the part's devices (ABSENT: none; an answer: all; None: some)."""
        up.refresh_from_db()
        if up.upload_id or up.knox_status:
            return kept_answer(up)  # answered; the worker stopped before the engine recorded it
        uids = [uid for uid, _ in self.devices(up)]
        known = self.known(uids)
        if not known:
            return ABSENT
        if len(known) < len(uids):
            return None
        uploads = {d.upload_id for d in known.values()}
        logger.info("job %s: upload part %s found at Knox Guard after its answer was lost", self.job.pk, up.sequence)
        return {
            "upload_id": uploads.pop() if len(uploads) == 1 else "",
            "knox_status": "",
            "valid": len(uids),
            "invalid": 0,
            "invalid_reasons": [],
            "knox_message": f"the answer was lost; all {len(uids)} devices were found in Knox Guard",
        }

    def known(self, uids: list[str]) -> dict[str, ListedDevice]:
        """Which of `uids` Knox Guard lists: by reading its whole device list when that takes fewer calls than
        one search per device; else device by device, stopping once some are known and some are not."""
        total, _ = self.client.list_devices(0, 1)
        if not total:
            return {}
        wanted = set(uids)
        if math.ceil(total / KG_MAX_PAGE_SIZE) <= len(uids):
            return {d.device_uid: d for d in self.client.iter_devices() if d.device_uid in wanted}
        known: dict[str, ListedDevice] = {}
        for asked, uid in enumerate(uids, start=1):
            listed = self.client.find(uid)
            if listed is not None:
                known[uid] = listed
            if 0 < len(known) < asked:
                break  # some known, some not: the answer is already "cannot tell"
        return known

    def apply(self, up: GuardUpload, answer: dict[str, Any]) -> None:
        """Knox's figures on the part; its valid devices join the portal's list (Accepted with autoAccept, else
        Pending), the ones Knox called invalid count as failed."""
        bad = {str(r.get("deviceUid")) for r in answer["invalid_reasons"] if isinstance(r, dict)}
        state = "Accepted" if up.flags.get("autoAccept") else "Pending"
        good = [ListedDevice("", uid, aid, state) for uid, aid in self.devices(up) if uid not in bad]
        with transaction.atomic():
            failed = up.device_count - len(good)
            if record_outcomes(self.job, up, GuardUpload.State.COMPLETE, len(good), failed, **answer):
                upsert_devices(self.job.account_id, good)
                if answer["upload_id"]:  # Knox's per-device verdicts come later: a follow-up job reads them
                    follow_upload_part(self.job)

    def fail(self, up: GuardUpload, state: str, code: str, message: str, detail: str = "") -> None:
        """Every device of the part fails with the reason; the portal's device list is left as it was."""
        if code == UNKNOWN:
            message = f"{message}; Knox Guard's list of uploads (Uploads, “Read from Knox”) may show it"
        with transaction.atomic():
            record_outcomes(self.job, up, state, 0, up.device_count, code=code, message=message)

    def finish(self, summary: str) -> None:
        self.job.finish(summary)


def kept_answer(up: GuardUpload) -> dict[str, Any]:
    """Knox's answer to the part as `send` kept it."""
    fields = ("upload_id", "knox_status", "valid", "invalid", "invalid_reasons")
    return {name: getattr(up, name) for name in fields}


# --- Knox Guard's per-device results of an upload (GET devices/uploads/{uploadId}) --------------------------------


def read_upload_results(job_pk: int) -> None:
    """Read Knox Guard's per-device results of an upload job's parts into GuardUploadDevice rows.

    Queued when a part is applied (guard.models.follow_upload_part) and by “Refresh results” on the job's page
    (guard.models.queue_upload_results); `params["job"]` names the upload job.

    Why a follow-up job and not more steps of the upload job: Knox answers POST devices/uploads at once with counts
    and status "Progress", then works on the upload; its per-device results come from another endpoint, and only
    once its status moves on. The upload part is not repeatable and the engine ends it at Knox's answer (that is
    what a worker that died mid-call settles by looking the devices up); keeping it open until Knox finished
    processing would hold the job's figures back and tie a harmless, repeatable read to a call that must never be
    repeated. A separate job reads with its own loop, can be run again from the page with the same code, and a read
    Knox refuses does not make the upload fail. One read follows a job's parts as they are applied.
    """
    run_job(job_pk, _read_upload_results)


# How a part still in "Progress" at Knox Guard is asked again: soon at first, then less often (as bulk actions poll).
RESULTS_TIMINGS = Timings(POLL_FIRST_DELAY_SECONDS, POLL_BACKOFF, POLL_MAX_INTERVAL_SECONDS, RESULT_TIMEOUT_SECONDS)


def _read_upload_results(job: Job, owner: str) -> None:
    target = Job.objects.get(pk=job.params["job"])
    reader = ResultsReader(job, target, owner)
    reader.run()
    AuditEvent.objects.record(
        "guard.upload_results",
        actor=job.created_by,
        target=target,
        summary={"job": job.pk, "parts": reader.read, "failed": len(reader.failures)},
    )
    job.finish(
        "; ".join(
            f"part {f['part']}: {f['message']}" + (f" [{f['code']}]" if f["code"] else "") for f in reader.failures
        )
    )


class ResultsReader:
    """The loop of one read: every applied part with an uploadID that this read has not stored yet, each asked
    until Knox Guard's status is no longer Progress (with backoff), at most RESULT_TIMEOUT_SECONDS from the read's
    start. Resumable: a part is done once its results were stored after this read was queued (GuardUpload.synced_at)
    or its failure is in the job's result."""

    def __init__(self, job: Job, target: Job, owner: str) -> None:
        self.job, self.target, self.owner = job, target, owner
        self.client = GuardClient(job.account)
        self.failures: list[dict[str, Any]] = list((job.result or {}).get("failures") or [])
        self.read = 0
        self.polls: dict[int, int] = {}
        self.next_try: dict[int, float] = {}

    def todo(self) -> list[GuardUpload]:
        failed = [f["pk"] for f in self.failures]
        parts = GuardUpload.objects.filter(job=self.target, state=GuardUpload.State.COMPLETE).exclude(upload_id="")
        fresh = Q(synced_at__isnull=True) | Q(synced_at__lt=self.job.created_at)
        return list(parts.filter(fresh).exclude(pk__in=failed).order_by("sequence"))

    def run(self) -> None:
        done = GuardUpload.objects.filter(job=self.target, synced_at__gte=self.job.created_at).count()
        while parts := self.todo():
            self.job.set_total(done + len(self.failures) + len(parts))
            self.job.heartbeat(self.owner)
            due = [p for p in parts if self.next_try.get(p.pk, 0.0) <= time.monotonic()]
            if not due:
                wait = min(self.next_try[p.pk] for p in parts) - time.monotonic()
                engine.nap(self.job, self.owner, min(max(wait, 0.05), engine.MAX_NAP_SECONDS))
                continue
            for part in due:
                if self.read_part(part):
                    done += 1
        self.job.set_total(done + len(self.failures))

    def read_part(self, part: GuardUpload) -> bool:
        """Ask Knox Guard for one part; True once its results are stored."""
        try:
            results = upload_results(self.client, part.upload_id)
        except errors.KnoxError as e:
            if isinstance(e, errors.KnoxAuthError):
                raise  # every part would be refused alike: run_job ends the read with Knox's reason
            if engine.is_outage(e) or isinstance(e, errors.KnoxOutcomeUnknown | errors.KnoxBadResponse):
                return self.later(part, f"Knox Guard could not be asked: {e.explain()}")
            self.fail(part, e.code or f"HTTP{e.status}", e.explain())
            return False
        if results.in_progress:
            return self.later(part, "Knox Guard was still processing the upload")
        n = store_upload_results(part, results)
        self.read += 1
        self.job.add_progress(succeeded=1)
        logger.info("job %s: %s results of upload %s stored", self.job.pk, n, part.upload_id)
        return True

    def later(self, part: GuardUpload, why: str) -> bool:
        started = self.job.started_at or timezone.now()
        if (timezone.now() - started).total_seconds() >= RESULTS_TIMINGS.timeout:
            minutes = int(RESULTS_TIMINGS.timeout // 60)
            self.fail(part, "", f"{why} after {minutes} minutes; “Refresh results” asks again")
            return False
        polls = self.polls.get(part.pk, 0)
        self.polls[part.pk] = polls + 1
        self.next_try[part.pk] = time.monotonic() + RESULTS_TIMINGS.interval(polls)
        return False

    def fail(self, part: GuardUpload, code: str, message: str) -> None:
        self.failures.append(
            {"pk": part.pk, "part": part.sequence, "upload_id": part.upload_id, "code": code, "message": message}
        )
        self.job.set_result({"failures": self.failures})
        self.job.add_progress(failed=1)


def store_upload_results(part: GuardUpload, results: UploadResults) -> int:
    """Upsert the part's per-device results (a device read before keeps its row, so the page's paging holds), with
    each device's spreadsheet row; Knox's status of the upload goes on the part. Returns how many were stored."""
    now = timezone.now()
    rows: dict[str, int] = {}
    upload_pk = part.job.params.get("upload") if part.job_id else None
    if upload_pk and part.first_row is not None and part.last_row is not None:
        rows = dict(
            UploadRow.objects.filter(
                upload_id=upload_pk,
                status=UploadRow.Status.VALID,
                row_number__gte=part.first_row,
                row_number__lte=part.last_row,
            ).values_list("value", "row_number")
        )
    fields = ("approve_id", "outcome", "result", "code", "message", "reason")
    records = [
        GuardUploadDevice(
            upload=part,
            job_id=part.job_id,
            device_uid=d.device_uid,
            row_number=rows.get(d.device_uid),
            read_at=now,
            **{name: getattr(d, name) for name in fields},
        )
        for d in results.devices
    ]
    with transaction.atomic():
        GuardUploadDevice.objects.bulk_create(
            records,
            batch_size=1000,
            update_conflicts=True,
            unique_fields=["upload", "device_uid"],
            update_fields=[*fields, "row_number", "read_at"],
        )
        GuardUpload.objects.filter(pk=part.pk).update(knox_status=results.status, synced_at=now)
    return len(records)


def scheduled_sync(account_pk: int) -> int:
    """Entry point for a django-q2 Schedule: queue a Knox Guard device sync for the account; returns the job id."""
    from guard.models import queue_sync
    from portal.models import KnoxAccount

    return queue_sync(KnoxAccount.objects.get(pk=account_pk), user=None).pk


# --- lookups (portal.lookups): the Knox Guard reads pages ask for ---------------------------------------------

# What the uploads page shows of each upload Knox lists (the rest of Knox's answer is not kept).
UPLOAD_FIELDS = ("uploadId", "channel", "status", "totalDeviceCount", "validDeviceCount", "invalidDeviceCount")


def lookup_knox_uploads(job: Job, owner: str) -> None:
    """Knox Guard's own list of uploads (every channel: this portal, KDP, the Knox console), its first page."""
    account = job.account
    assert account is not None  # lookups always have one
    try:
        doc = GuardClient(account).uploads()
    except errors.KnoxError as e:
        job.set_result({"failure": {"message": e.explain(), "code": e.code}})
        job.add_progress(failed=1)
        job.fail(f"Knox did not list the uploads of {account}: {e.explain()}")
        return
    items = [
        {**{k: u.get(k) for k in UPLOAD_FIELDS}, "created": _local_minute(u.get("createTime"))}
        for u in doc.get("uploads") or []
        if isinstance(u, dict)
    ]
    job.set_result({"account": str(account), "uploads": items, "total": doc.get("totalCount")})
    job.add_progress(succeeded=1)


def _local_minute(value: Any) -> str:
    """Knox times are epoch milliseconds; shown as local "YYYY-MM-DD HH:MM" ("" when not a time)."""
    try:
        when = datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
    return timezone.localtime(when).strftime("%Y-%m-%d %H:%M")
