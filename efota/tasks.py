"""E-FOTA background work (django-q2 tasks taking a Job primary key): group registration, licence change, force
updates and the following of their status, and the reads pages ask for (licence check, firmware list, abnormal
devices: portal.lookups). No web request calls E-FOTA: a page queues one of these and follows the job."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.db.models import Max
from django.utils import timezone

from efota.client import EfotaClient, EfotaValidationError, chunks, explain, failure_of, fud_category
from efota.constants import EFOTA_MAX_DEVICES_PER_CALL
from efota.models import EfotaCall, EfotaGroup, ForceUpdate, ForceUpdateDevice, check_licence
from portal.knox import errors
from portal.models import AuditEvent, Job, lease_seconds
from portal.tasks import run_job

logger = logging.getLogger(__name__)

# After sending, a force update job follows its parts' status at E-FOTA (watch_status): first this long after
# sending, then doubling up to STATUS_MAX_INTERVAL_SECONDS, until no device is processing or STATUS_WATCH_SECONDS
# after the last part was sent. It holds a worker meanwhile: the window stays well under Q_TIMEOUT (3600 s by
# default), and "Refresh status" on the job page asks again afterwards.
STATUS_FIRST_DELAY_SECONDS = 5.0
STATUS_MAX_INTERVAL_SECONDS = 60.0
STATUS_WATCH_SECONDS = 900


def log_call(
    job: Job | None,
    account_id: int,
    operation: str,
    summary: str,
    error: Exception | None = None,
    actor_id: int | None = None,
) -> None:
    if error is None:
        EfotaCall.objects.create(
            account_id=account_id, operation=operation, summary=summary[:300], ok=True, job=job, actor_id=actor_id
        )
        return
    code = getattr(error, "code", "") or (
        "VALIDATION" if isinstance(error, EfotaValidationError) else type(error).__name__
    )
    message = explain(error) if isinstance(error, errors.KnoxError) else str(error)
    EfotaCall.objects.create(
        account_id=account_id, operation=operation, summary=summary[:300], ok=False, code=code[:20], message=message[:400],
        job=job, actor_id=actor_id,
    )  # fmt: skip


# --- groups -------------------------------------------------------------------------------------------------


def register_group(job_pk: int) -> None:
    run_job(job_pk, _register_group)


def _register_group(job: Job, owner: str) -> None:
    group = EfotaGroup.objects.get(pk=job.params["group"])
    client = EfotaClient(job.account)
    change = job.params.get("change_licence")
    operation = "groupLicenseChange" if change else "groupRegister"
    licence = change or group.licence
    try:
        if change:
            client.group_license_change(group.customer_id, group.group_id, licence)
        else:
            client.group_register(group.customer_id, group.group_id, licence)
    except (EfotaValidationError, errors.KnoxError) as e:
        retryable = isinstance(e, errors.KnoxError) and (
            fud_category(e.code) == "service" or isinstance(e, errors.KnoxUnavailable)
        )
        code = getattr(e, "code", "") or ("VALIDATION" if isinstance(e, EfotaValidationError) else type(e).__name__)
        message = explain(e) if isinstance(e, errors.KnoxError) else str(e)
        log_call(job, job.account_id, operation, f"{group.group_id} → {licence}", e, job.created_by_id)
        EfotaGroup.objects.filter(pk=group.pk).update(
            status=group.status if change else EfotaGroup.Status.FAILED, last_code=code[:20], last_error=message[:400], updated_at=timezone.now()
        )  # fmt: skip
        job.add_progress(failed=1)
        job.fail(f"{message} [{code}]" + (" The portal retried; try again later." if retryable else ""))
        return
    log_call(job, job.account_id, operation, f"{group.group_id} → {licence}", None, job.created_by_id)
    EfotaGroup.objects.filter(pk=group.pk).update(
        status=EfotaGroup.Status.REGISTERED, licence=licence, last_code="", last_error="", registered_at=timezone.now(), updated_at=timezone.now()
    )  # fmt: skip
    job.add_progress(succeeded=1)
    job.finish()


# --- force updates ------------------------------------------------------------------------------------------


def run_force_update(job_pk: int) -> None:
    run_job(job_pk, _force_update)


def plan_force_update(job: Job) -> None:
    """One ForceUpdate per call of at most EFOTA_MAX_DEVICES_PER_CALL devices, created before anything is sent."""
    p = job.params
    serials = p["serials"]
    for seq, start in enumerate(range(0, len(serials), EFOTA_MAX_DEVICES_PER_CALL), start=1):
        ForceUpdate.objects.create(
            account=job.account, job=job, customer_id=p["customer_id"], licence=p["licence"], model=p["model"],
            sales_code=p["sales_code"], network_type=p.get("network_type", "WIFIONLY"), target_version=p.get("target", "Latest"),
            sequence=seq, serials=serials[start : start + EFOTA_MAX_DEVICES_PER_CALL],
        )  # fmt: skip


def _force_update(job: Job, owner: str) -> None:
    """Start each part; a part whose call may already have reached E-FOTA is never sent again (a force update is
    not idempotent): it is reported as unknown."""
    if not job.efota_force_updates.exists():
        plan_force_update(job)
    client = EfotaClient(job.account)
    for fu in job.efota_force_updates.order_by("sequence"):
        job.heartbeat(owner)
        if fu.force_update_id or fu.last_code:
            continue
        if fu.send_attempted_at is not None:
            ForceUpdate.objects.filter(pk=fu.pk).update(
                last_code="UNKNOWN",
                last_error="the call may have reached E-FOTA before the worker stopped; check the E-FOTA console before repeating it",
            )
            job.add_progress(failed=len(fu.serials))
            continue
        ForceUpdate.objects.filter(pk=fu.pk).update(send_attempted_at=timezone.now())
        summary = f"{fu.model}/{fu.sales_code} → {fu.target_version}, {len(fu.serials)} devices"
        try:
            force_id = client.force_update(
                fu.customer_id,
                fu.licence,
                fu.model,
                fu.sales_code,
                fu.serials,
                network_type=fu.network_type,
                target=fu.target_version,
            )
        except (EfotaValidationError, errors.KnoxError) as e:
            log_call(job, job.account_id, "forceUpdate", summary, e, job.created_by_id)
            code = getattr(e, "code", "") or ("VALIDATION" if isinstance(e, EfotaValidationError) else type(e).__name__)
            if isinstance(e, errors.KnoxOutcomeUnknown):
                code = "UNKNOWN"  # it may have reached E-FOTA: never repeated automatically
            ForceUpdate.objects.filter(pk=fu.pk).update(
                last_code=code[:20], last_error=(explain(e) if isinstance(e, errors.KnoxError) else str(e))[:400]
            )
            job.add_progress(failed=len(fu.serials))
            if isinstance(e, errors.KnoxUnavailable):
                raise
            continue
        log_call(job, job.account_id, "forceUpdate", summary, None, job.created_by_id)
        ForceUpdate.objects.filter(pk=fu.pk).update(force_update_id=force_id, processing=len(fu.serials))
        ForceUpdateDevice.objects.bulk_create(
            [ForceUpdateDevice(force_update=fu, serial=s, status="PROCESSING") for s in fu.serials],
            ignore_conflicts=True,
        )
        job.add_progress(succeeded=len(fu.serials))
    watch_status(job, owner)
    refused = job.efota_force_updates.filter(force_update_id="").exclude(last_code="").order_by("sequence").first()
    job.finish(f"{refused.last_error} [{refused.last_code}]" if refused else "")


def watch_status(job: Job, owner: str, *, sleep: Callable[[float], None] = time.sleep) -> int:
    """Follow the job's started parts at E-FOTA after sending, so the job page shows live figures without asking
    E-FOTA itself (its polled section only reads the database).

    1. Stop when no part is in progress (ForceUpdate.is_in_progress: started, devices processing, status check
       not refused for good), or STATUS_WATCH_SECONDS after the last part was sent. The window is counted from
       the stored send time, so a worker that resumes the job (after a crash, or after django-q2's timeout killed
       it) does not start a new window.
    2. Otherwise wait (STATUS_FIRST_DELAY_SECONDS, then doubling up to STATUS_MAX_INTERVAL_SECONDS), renewing
       the lease while waiting, then ask E-FOTA for the summary and detail of each part in progress.
    After the window the job ends; the page says devices are still processing and "Refresh status" asks again
    (refresh_force_update_status). Returns how many rounds of status calls were made."""
    sent = job.efota_force_updates.aggregate(last=Max("send_attempted_at"))["last"] or timezone.now()
    deadline = sent + timedelta(seconds=STATUS_WATCH_SECONDS)
    interval = STATUS_FIRST_DELAY_SECONDS
    rounds = 0
    while True:
        parts = [
            fu for fu in job.efota_force_updates.select_related("account").order_by("sequence") if fu.is_in_progress
        ]
        remaining = (deadline - timezone.now()).total_seconds()
        if not parts or remaining <= 0:
            if parts:
                logger.info("job %s: E-FOTA still processing %s part(s) after the watch window", job.pk, len(parts))
            return rounds
        _wait(job, owner, min(interval, remaining), sleep)
        for fu in parts:
            check_part(job, fu, actor_id=None)
            job.heartbeat(owner)
        rounds += 1
        interval = min(interval * 2, STATUS_MAX_INTERVAL_SECONDS)


def _wait(job: Job, owner: str, seconds: float, sleep: Callable[[float], None]) -> None:
    """Sleep `seconds`, renewing the job's lease at least three times per lease period (LeaseLost stops us)."""
    step = max(lease_seconds() / 3, 0.01)
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sleep(min(step, left))
        job.heartbeat(owner)


def check_part(job: Job, fu: ForceUpdate, actor_id: int | None) -> dict[str, str] | None:
    """Ask E-FOTA for one started part's status (refresh_force_update) and log the call against the force update
    job; a refusal is kept on the part, so the page says why its figures are stale and a permanent one stops the
    watching. Returns the refusal (failure_of), or None."""
    try:
        fu = refresh_force_update(fu)
    except errors.KnoxError as e:
        log_call(job, fu.account_id, "forceUpdateSummary", fu.force_update_id, e, actor_id)
        ForceUpdate.objects.filter(pk=fu.pk).update(
            last_code=e.code[:20], last_error=explain(e)[:400], checked_at=timezone.now()
        )
        return failure_of(e)
    figures = f"{fu.force_update_id}: {fu.downloaded} downloaded, {fu.failed} failed, {fu.processing} processing"
    log_call(job, fu.account_id, "forceUpdateSummary", figures, None, actor_id)
    if fu.last_code:
        ForceUpdate.objects.filter(pk=fu.pk).update(last_code="", last_error="")
    return None


def refresh_force_update_status(job_pk: int) -> None:
    """The “Refresh status” of a force update (efota.models.queue_status_refresh): one round of status calls for
    every started part, whoever asked and whatever the force update job is doing."""
    run_job(job_pk, _refresh_status)


def _refresh_status(job: Job, owner: str) -> None:
    target = Job.objects.get(pk=job.params["job"])
    parts = [fu for fu in ForceUpdate.objects.filter(job=target).select_related("account").order_by("sequence")]
    parts = [fu for fu in parts if fu.force_update_id]
    job.set_total(len(parts))
    failures = []
    for fu in parts:
        job.heartbeat(owner)
        failure = check_part(target, fu, job.created_by_id)
        if failure:
            failures.append(failure)
        job.add_progress(succeeded=0 if failure else 1, failed=1 if failure else 0)
    AuditEvent.objects.record(
        "efota.force_update_refresh",
        actor=job.created_by,
        target=target,
        summary={
            "parts": len(parts),
            "failed": len(failures),
            "codes": sorted({f["code"] for f in failures}),
            "job": job.pk,
        },
    )
    job.set_result({"parts": len(parts), "failures": failures})
    job.finish("; ".join(_sentence(f) for f in failures))


def _sentence(failure: dict[str, str]) -> str:
    return failure["message"] + (f" [{failure['code']}]" if failure["code"] else "")


# --- lookups (portal.lookups): the E-FOTA reads pages ask for -------------------------------------------------


def _refused(job: Job, e: Exception, *, failed: int = 1) -> None:
    """A read E-FOTA (or the client's field rules) refused: the answer shows the sentence and code, the job fails."""
    failure = failure_of(e)
    job.set_result({"failure": failure})
    job.add_progress(failed=failed)
    job.fail(_sentence(failure))


def lookup_licence(job: Job, owner: str) -> None:
    """How many devices a licence covers and when it expires; stored as an EfotaLicence by check_licence."""
    p = job.params
    assert job.account is not None  # lookups always have one
    try:
        record = check_licence(job.account, p["customer_id"], p["licence"], user=job.created_by, job=job)
    except (EfotaValidationError, errors.KnoxError) as e:
        _refused(job, e)
        return
    job.set_result(
        {
            "key": record.key,
            "max_devices": record.max_devices,
            "expiration_date": record.expiration_date.isoformat() if record.expiration_date else None,
            "expired": record.is_expired,
        }
    )
    job.add_progress(succeeded=1)


def lookup_firmware(job: Job, owner: str) -> None:
    """The firmware versions E-FOTA offers for a model and sales code (newer than `current`, when given)."""
    p = job.params
    account = job.account
    assert account is not None
    what = f"{p['model']}/{p['sales_code']}" + (f" after {p['current']}" if p["current"] else "")
    versions: list[str] = []
    error: Exception | None = None
    try:
        versions = EfotaClient(account).firmware_list(
            p["customer_id"], p["licence"], p["model"], p["sales_code"], p["current"]
        )
    except (EfotaValidationError, errors.KnoxError) as e:
        error = e
    log_call(job, account.pk, "firmwareList", what, error, job.created_by_id)
    AuditEvent.objects.record(
        "efota.firmware_list",
        actor=job.created_by,
        target=account,
        summary={
            "customer_id": p["customer_id"],
            "licence": p["licence"],
            "model": p["model"],
            "sales_code": p["sales_code"],
            "current": p["current"],
            "ok": error is None,
            "code": getattr(error, "code", "") if error else "",
            "versions": len(versions),
            "job": job.pk,
        },
    )
    if error is not None:
        _refused(job, error)
        return
    job.set_result({"versions": versions})
    job.add_progress(succeeded=1)


def lookup_abnormal(job: Job, owner: str) -> None:
    """Which of the devices E-FOTA cannot update, and why, asked 100 devices per call (the progress counts them)."""
    p = job.params
    account = job.account
    assert account is not None
    serials: list[str] = p["serials"]
    client = EfotaClient(account)
    found: dict[str, list[str]] = {}
    asked = 0
    error: Exception | None = None
    for part in chunks(serials, EFOTA_MAX_DEVICES_PER_CALL):
        job.heartbeat(owner)
        try:
            answer = client.abnormal_devices(p["customer_id"], p["licence"], part)
        except (EfotaValidationError, errors.KnoxError) as e:
            error = e
            break
        for title, listed in answer.items():
            found.setdefault(title, []).extend(listed)
        asked += len(part)
        job.add_progress(succeeded=len(part))
    log_call(job, account.pk, "abnormalDeviceList", f"{len(serials)} devices", error, job.created_by_id)
    AuditEvent.objects.record(
        "efota.abnormal_devices",
        actor=job.created_by,
        target=account,
        summary={
            "customer_id": p["customer_id"],
            "licence": p["licence"],
            "devices": len(serials),
            "ok": error is None,
            "code": getattr(error, "code", "") if error else "",
            "abnormal": 0 if error else sum(len(v) for v in found.values()),
            "job": job.pk,
        },
    )
    if error is not None:
        _refused(job, error, failed=len(serials) - asked)
        return
    job.set_result({"report": [[title, listed] for title, listed in sorted(found.items())], "asked": len(serials)})


def refresh_force_update(fu: ForceUpdate) -> ForceUpdate:
    """Read the summary and detail of a started force update into the record (check_part, in a worker)."""
    if not fu.force_update_id:
        return fu
    client = EfotaClient(fu.account)
    summary = client.force_update_summary(fu.customer_id, fu.licence, fu.force_update_id)
    detail = {
        serial: (status, reason)
        for serial, status, reason in client.force_update_detail(fu.customer_id, fu.licence, fu.force_update_id)
    }
    for device in fu.devices.all():
        # The detail lists devices still processing or failed; the others have downloaded the firmware.
        status, reason = detail.get(device.serial, ("DOWNLOADED", ""))
        if (device.status, device.reason) != (status, reason):
            ForceUpdateDevice.objects.filter(pk=device.pk).update(status=status, reason=reason[:200])
    ForceUpdate.objects.filter(pk=fu.pk).update(
        downloaded=summary.downloaded, failed=summary.failed, processing=summary.processing, checked_at=timezone.now()
    )
    fu.refresh_from_db()
    return fu
