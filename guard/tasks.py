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

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from guard import single
from guard.client import ACTIONS, ActionParams, DeviceRef, GuardClient, ListedDevice
from guard.constants import KG_ASYNC_MAX_DEVICES, KG_UPLOAD_MAX_DEVICES
from guard.models import GuardAction, GuardChunk, GuardDevice, GuardUpload
from portal.db import db_datetime, insert_rows
from portal.knox import errors
from portal.models import Job, Upload, UploadRow
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
    recorded as failed without being sent; devices the portal has never seen are sent by IMEI/serial and Knox
    decides. All of it in one database transaction, before anything is sent.
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
            a = GuardAction(
                account_id=job.account_id, job=job, device=d, device_uid=identifier, row_number=row, action=action,
                params={**params, "row_approve_id": row_approve_id} if row_approve_id and action == "approve" else params,
                actor_id=job.created_by_id, state_before=d.state if d else "",
            )  # fmt: skip
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
            elif d is not None and not d.allows(action):
                a.outcome, a.code = GuardAction.Outcome.FAILED, "STATE"
                a.reason = f"the device is {d.state} ({d.console_state}); “{spec.label}” is possible from {', '.join(spec.allowed_from)}"
            actions.append(a)
        pending = [a for a in actions if a.outcome == GuardAction.Outcome.PENDING]
        if len(pending) > 1:
            for seq, start in enumerate(range(0, len(pending), KG_ASYNC_MAX_DEVICES), start=1):
                chunk = GuardChunk.objects.create(
                    job=job,
                    sequence=seq,
                    action=action,
                    device_count=len(pending[start : start + KG_ASYNC_MAX_DEVICES]),
                )
                for a in pending[start : start + KG_ASYNC_MAX_DEVICES]:
                    a.chunk = chunk
                    a.transaction_id = chunk.transaction_id
        GuardAction.objects.bulk_create(actions, batch_size=2000)
        GuardDevice.objects.filter(pk__in=[a.device_id for a in pending if a.device_id]).update(pending_job=job)
        failed = len(actions) - len(pending)
        Job.objects.filter(pk=job.pk).update(total=len(actions), failed=failed, version=F("version") + 1)


# --- running ------------------------------------------------------------------------------------------------


def run_actions(job_pk: int) -> None:
    run_job(job_pk, _run_actions)


def _run_actions(job: Job, owner: str) -> None:
    if single.run_lean(job):  # one device, never planned: planned, sent and ended by guard.single
        return
    if not job.guard_actions.exists():
        plan(job)
    if not job.guard_chunks.exists():  # one device: a synchronous request (guard.single)
        single.run(job, owner)
        return
    client = GuardClient(job.account)
    params = params_from(job)
    try:
        _run_chunks(client, job, owner, params)
    except errors.KnoxError as e:
        _end_unfinished(job, e.explain())
        GuardDevice.objects.filter(pending_job=job).update(pending_job=None)
        raise
    # Released only when this worker ends the job: after a LeaseLost the new holder still needs the devices held.
    GuardDevice.objects.filter(pending_job=job).update(pending_job=None)
    job.finish()


def _run_chunks(client: GuardClient, job: Job, owner: str, params: ActionParams) -> None:
    while True:
        job.heartbeat(owner)
        now = timezone.now()
        prepared = GuardChunk.objects.filter(job=job, state=GuardChunk.State.PREPARED).order_by("sequence").first()
        due = (
            GuardChunk.objects.filter(job=job, state=GuardChunk.State.SUBMITTED, next_poll_at__lte=now)
            .order_by("next_poll_at")
            .first()
        )
        if due is not None:
            _poll_chunk(client, job, due)
        elif prepared is not None:
            _send_chunk(client, job, prepared, params)
        else:
            waiting = (
                GuardChunk.objects.filter(job=job, state=GuardChunk.State.SUBMITTED).order_by("next_poll_at").first()
            )
            if waiting is None:
                return
            time.sleep(min(max((waiting.next_poll_at - timezone.now()).total_seconds(), 0.05), 5.0))


def _send_chunk(client: GuardClient, job: Job, chunk: GuardChunk, params: ActionParams) -> None:
    actions = list(chunk.actions.select_related("device").filter(outcome=GuardAction.Outcome.PENDING).order_by("id"))
    items = [(a.device.ref if a.device else DeviceRef(device_uid=a.device_uid), params_for(a, params)) for a in actions]
    now = timezone.now()
    GuardChunk.objects.filter(pk=chunk.pk).update(send_attempted_at=now)
    GuardAction.objects.filter(chunk=chunk).update(sent_at=now)
    try:
        # Safe to repeat after a crash: the same transactionId with the same body is applied once.
        client.act_async(chunk.action, items, transaction_id=chunk.transaction_id)
    except (errors.KnoxUnavailable, errors.KnoxServerError, errors.KnoxRateLimited, errors.KnoxAuthError):
        raise
    except errors.KnoxError as e:
        _fail_chunk(job, chunk, e.code or f"HTTP{e.status}", e.explain())
        return
    GuardChunk.objects.filter(pk=chunk.pk).update(
        state=GuardChunk.State.SUBMITTED,
        submitted_at=now,
        next_poll_at=now + timedelta(seconds=POLL_FIRST_DELAY_SECONDS),
    )


def _poll_chunk(client: GuardClient, job: Job, chunk: GuardChunk) -> None:
    try:
        result = client.result(chunk.transaction_id)
    except errors.KnoxError as e:
        if e.status in (400, 404) and (timezone.now() - chunk.submitted_at).total_seconds() < RESULT_TIMEOUT_SECONDS:
            result = None  # not known yet: Knox may still be processing the request
        else:
            raise
    if result is not None and result.count >= chunk.device_count:
        _apply_chunk(job, chunk, result.failures)
        return
    if (timezone.now() - chunk.submitted_at).total_seconds() > RESULT_TIMEOUT_SECONDS:
        _fail_chunk(job, chunk, "UNKNOWN", "Knox did not report the result of this request in time")
        return
    interval = min(POLL_MAX_INTERVAL_SECONDS, POLL_FIRST_DELAY_SECONDS * POLL_BACKOFF ** (chunk.polls + 1))
    GuardChunk.objects.filter(pk=chunk.pk).update(
        polls=F("polls") + 1, next_poll_at=timezone.now() + timedelta(seconds=interval)
    )


def _apply_chunk(job: Job, chunk: GuardChunk, failures: dict[str, tuple[str, str, str]]) -> None:
    now = timezone.now()
    with transaction.atomic():
        chunk = GuardChunk.objects.select_for_update().get(pk=chunk.pk)
        if chunk.state != GuardChunk.State.SUBMITTED:
            return
        actions = list(chunk.actions.select_related("device").filter(outcome=GuardAction.Outcome.PENDING))
        ok = bad = 0
        for a in actions:
            ref = a.device.ref if a.device else DeviceRef(device_uid=a.device_uid)
            failure = failures.get(ref.requested_id) or failures.get(a.device_uid)
            if failure is None:
                a.outcome, a.state_after = (
                    GuardAction.Outcome.SUCCEEDED,
                    (ACTIONS[a.action].becomes or a.state_before or ""),
                )
                ok += 1
            else:
                a.outcome, a.code, a.message, a.reason = (
                    GuardAction.Outcome.FAILED,
                    failure[0][:20],
                    failure[1][:100],
                    failure[2][:400],
                )
                a.state_after = a.state_before
                bad += 1
            a.finished_at = now
            single.update_device(a, ok=failure is None, code=a.code, message=a.message, knox_state="", now=now)
        GuardAction.objects.bulk_update(
            actions, ["outcome", "code", "message", "reason", "state_after", "finished_at"], batch_size=1000
        )
        GuardChunk.objects.filter(pk=chunk.pk).update(
            state=GuardChunk.State.COMPLETE, succeeded=ok, failed=bad, completed_at=now
        )
        job.add_progress(succeeded=ok, failed=bad)


def _fail_chunk(job: Job, chunk: GuardChunk, code: str, message: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        n = chunk.actions.filter(outcome=GuardAction.Outcome.PENDING).update(
            outcome=GuardAction.Outcome.FAILED, code=code[:20], reason=message[:400], finished_at=now
        )
        GuardChunk.objects.filter(pk=chunk.pk).update(
            state=GuardChunk.State.FAILED, failed=n, knox_code=code[:20], knox_message=message, completed_at=now
        )
        job.add_progress(failed=n)


def _end_unfinished(job: Job, reason: str) -> None:
    """Knox unreachable: requests never sent fail as NOT_SENT, sent ones whose result is unread as UNKNOWN."""
    for chunk in GuardChunk.objects.filter(job=job, state=GuardChunk.State.PREPARED):
        if chunk.send_attempted_at is not None:  # it may have reached Knox before the answer was lost
            _fail_chunk(job, chunk, "UNKNOWN", f"sent, but the answer was lost: {reason}")
        else:
            _fail_chunk(job, chunk, "NOT_SENT", f"not sent: {reason}")
    for chunk in GuardChunk.objects.filter(job=job, state=GuardChunk.State.SUBMITTED):
        _fail_chunk(job, chunk, "UNKNOWN", f"sent, but the result could not be read: {reason}")


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
    insert_rows(
        GuardDevice,
        ("account", "object_id", "device_uid", "approve_id", "state", "model", "upload_id", "licence", "last_action", "last_outcome",
         "last_code", "last_message", "synced_at", "created_at", "updated_at"),
        ((account_id, d.object_id, d.device_uid, d.approve_id, d.state, d.model, d.upload_id, "", "", "", "", "", stamp, stamp, stamp)
         for d in listed if d.device_uid not in existing),
        ignore_conflicts=True,
    )  # fmt: skip
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


# --- uploads to Knox Guard ----------------------------------------------------------------------------------


def run_upload(job_pk: int) -> None:
    run_job(job_pk, _upload)


def _upload(job: Job, owner: str) -> None:
    """Upload a staged spreadsheet's devices to Knox Guard, KG_UPLOAD_MAX_DEVICES per call.

    An upload is not idempotent, so each call's GuardUpload row is committed before it is sent; a resumed job
    never sends a call that was already attempted: it reports it as unknown and points to the uploads list.
    """
    upload = Upload.objects.get(pk=job.params["upload"])
    rows = list(
        UploadRow.objects.filter(upload=upload, status=UploadRow.Status.VALID)
        .order_by("row_number")
        .values_list("value", "approve_id")
    )
    job.set_total(len(rows))
    client = GuardClient(job.account)
    flags = job.params.get("flags") or {}
    for index, start in enumerate(range(0, len(rows), KG_UPLOAD_MAX_DEVICES)):
        part = rows[start : start + KG_UPLOAD_MAX_DEVICES]
        # One record per part, found again by its own transactionId when the job resumes.
        record, created = GuardUpload.objects.get_or_create(
            job=job, transaction_id=f"job{job.pk}part{index}",
            defaults={"account": job.account, "status": "Prepared", "total": len(part), "flags": flags},
        )  # fmt: skip
        if not created and record.status == "Sending":
            # Attempted before a crash, answer unknown: never uploaded twice, and counted so the job adds up.
            GuardUpload.objects.filter(pk=record.pk).update(status="Unknown")
            job.add_progress(failed=len(part))
            continue
        if not created and record.status != "Prepared":
            continue  # finished (or already reported unknown) by an earlier run
        GuardUpload.objects.filter(pk=record.pk).update(status="Sending")
        try:
            doc = client.upload(part, flags, transaction_id=record.transaction_id)
        except errors.KnoxOutcomeUnknown:
            GuardUpload.objects.filter(pk=record.pk).update(status="Unknown")
            job.add_progress(failed=len(part))
            continue
        invalid = doc.get("invalidReasons") or []
        GuardUpload.objects.filter(pk=record.pk).update(
            upload_id=str(doc.get("uploadID") or doc.get("uploadId") or ""),  # Knox spells it uploadID (capital D)
            status=str(doc.get("uploadStatus") or ""),
            valid=int(doc.get("validDeviceCount") or 0),
            invalid=int(doc.get("invalidDeviceCount") or len(invalid)),
            invalid_reasons=invalid[:1000],
        )
        bad = {str(r.get("deviceUid")) for r in invalid if isinstance(r, dict)}
        state = "Accepted" if flags.get("autoAccept") else "Pending"
        upsert_devices(job.account_id, [ListedDevice("", uid, aid, state) for uid, aid in part if uid not in bad])
        job.add_progress(succeeded=len(part) - len(bad), failed=len(bad))
        job.heartbeat(owner)
    job.finish()


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
