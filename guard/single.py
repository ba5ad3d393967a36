"""Knox Guard single-device actions: one synchronous request per job (approve, lock, blink, … on one device).

Exactly once: a synchronous action is not repeatable (a second lock of a Locking device fails), so its `sent_at`
is committed before the call and, if the answer is lost (or a worker dies), the device's state is read from Knox
to decide what happened. It is sent again only when that state proves the first request had no effect (the
device is exactly as before), and never after a worker died mid-call.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from guard.client import ACTIONS, ActionParams, DeviceRef, GuardClient, ListedDevice
from guard.models import GuardAction, GuardDevice
from portal.knox import errors
from portal.knox.http import backoff_delay
from portal.models import Job


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


def single_action_attempts() -> int:
    """How many times a single-device action may be sent: as many as an idempotent call's attempts
    (KNOX_MAX_RETRIES + 1), since it is sent again only when Knox shows the device provably untouched."""
    return settings.KNOX_MAX_RETRIES + 1


def _act_one(client: GuardClient, job: Job, a: GuardAction, params: ActionParams) -> None:
    ref = a.device.ref if a.device else DeviceRef(device_uid=a.device_uid)
    if a.sent_at is not None:
        # A worker died after sending: Knox's state says whether it was applied. Never send it again: the dead
        # process's request may still be in flight, so an untouched device stays UNKNOWN.
        applied, found = _knox_state(client, job, a)
        if not applied:
            _record_unknown(job, a, found)
        return
    attempts = single_action_attempts()
    for attempt in range(1, attempts + 1):
        GuardAction.objects.filter(pk=a.pk).update(sent_at=timezone.now(), transaction_id=a.transaction_id or _txid())
        a.refresh_from_db()
        try:
            client.act(a.action, ref, params, transaction_id=a.transaction_id)
        except (errors.KnoxOutcomeUnknown, errors.KnoxBadResponse):
            # The answer was lost or unreadable: Knox's state says whether it was applied. Only when the device is
            # provably untouched (still in the state it had before) is the action sent again.
            applied, found = _knox_state(client, job, a)
            if applied:
                return
            if not _untouched(a, found):
                _record_unknown(job, a, found)
                return
            if attempt == attempts:
                record(job, a, ok=False, code="NOT_APPLIED", message="NOT_APPLIED",
                        reason=f"Knox's answers were lost {attempts} times and the device is still {found.state}")  # fmt: skip
                return
            time.sleep(backoff_delay(attempt))
            continue
        except (errors.KnoxUnavailable, errors.KnoxServerError, errors.KnoxRateLimited, errors.KnoxAuthError) as e:
            if type(e) is errors.KnoxUnavailable:
                # For a non-repeatable call the HTTP layer raises this only when the connection was never made.
                GuardAction.objects.filter(pk=a.pk).update(sent_at=None)
            raise
        except errors.KnoxError as e:
            if attempt > 1 and _knox_state(client, job, a)[0]:
                return  # an earlier attempt whose answer was lost did apply; this refusal is its echo
            record(
                job, a, ok=False, code=e.code or f"HTTP{e.status}", message=e.message, reason=e.detail or e.explain()
            )
            return
        record(job, a, ok=True)
        return


def _knox_state(client: GuardClient, job: Job, a: GuardAction) -> tuple[bool, ListedDevice | None]:
    """Read the device from Knox; when its state shows the action applied, record the success.
    Returns (applied, the device as Knox lists it)."""
    spec = ACTIONS[a.action]
    found = client.find(a.device.device_uid if a.device else a.device_uid)
    if spec.becomes == "" and found is None:
        record(job, a, ok=True, reason="confirmed: Knox no longer lists the device")
        return True, None
    if found is not None and found.state in {spec.becomes, SETTLES_TO.get(spec.becomes or "", "")} - {None, ""}:
        record(
            job, a, ok=True, reason=f"confirmed by the device's state in Knox ({found.state})", knox_state=found.state
        )
        return True, found
    return False, found


def _untouched(a: GuardAction, found: ListedDevice | None) -> bool:
    """Knox shows the device exactly as it was before the action: the request provably had no effect."""
    return found is not None and bool(a.state_before) and found.state == a.state_before


def _record_unknown(job: Job, a: GuardAction, found: ListedDevice | None) -> None:
    record(job, a, ok=False, code="UNKNOWN", message="OUTCOME_UNKNOWN",
            reason=f"Knox shows the device as {found.state if found else 'absent'}")  # fmt: skip


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
    job: Job, a: GuardAction, *, ok: bool, code: str = "", message: str = "", reason: str = "", knox_state: str = ""
) -> None:
    """Store one device's outcome, its new state and the job's counters together."""
    spec = ACTIONS[a.action]
    now = timezone.now()
    with transaction.atomic():
        n = GuardAction.objects.filter(pk=a.pk, outcome=GuardAction.Outcome.PENDING).update(
            outcome=GuardAction.Outcome.SUCCEEDED if ok else GuardAction.Outcome.FAILED,
            code=code[:20], message=message[:100], reason=reason[:400], finished_at=now,
            state_after=(knox_state or (spec.becomes if ok and spec.becomes is not None else a.state_before))[:20],
        )  # fmt: skip
        if n != 1:
            return  # recorded already (a resumed worker)
        update_device(a, ok=ok, code=code, message=message or reason, knox_state=knox_state, now=now)
        job.add_progress(succeeded=1 if ok else 0, failed=0 if ok else 1)


def update_device(a: GuardAction, *, ok: bool, code: str, message: str, knox_state: str, now: Any) -> None:
    spec = ACTIONS[a.action]
    devices = GuardDevice.objects.filter(
        account_id=a.account_id, device_uid=a.device.device_uid if a.device else a.device_uid
    )
    fields: dict[str, Any] = {
        "last_action": a.action, "last_action_at": now, "last_outcome": "succeeded" if ok else "failed",
        "last_code": code[:20], "last_message": message[:400], "updated_at": now,
    }  # fmt: skip
    if ok and spec.becomes == "":
        devices.delete()  # deleted from Knox Guard: the history stays in GuardAction (device set to NULL)
        return
    if ok and (knox_state or spec.becomes):
        fields["state"] = knox_state or spec.becomes
    devices.update(**fields)


def _txid() -> str:
    from guard.models import new_transaction_id

    return new_transaction_id()
