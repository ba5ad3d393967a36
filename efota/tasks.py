"""E-FOTA background work (django-q2 tasks taking a Job primary key): group registration, licence change and
force updates. Quick reads (licence info, firmware list, summaries) run in the page, through efota.models."""

from __future__ import annotations

import logging

from django.utils import timezone

from efota.client import EfotaClient, EfotaValidationError, explain, fud_category
from efota.constants import EFOTA_MAX_DEVICES_PER_CALL
from efota.models import EfotaCall, EfotaGroup, ForceUpdate, ForceUpdateDevice
from portal.knox import errors
from portal.models import Job
from portal.tasks import run_job

logger = logging.getLogger(__name__)


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
    refused = job.efota_force_updates.exclude(last_code="").order_by("sequence").first()
    job.finish(f"{refused.last_error} [{refused.last_code}]" if refused else "")


def refresh_force_update(fu: ForceUpdate) -> ForceUpdate:
    """Read the summary and detail of a started force update into the record (used by the page and the poller)."""
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
