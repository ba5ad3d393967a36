"""E-FOTA background work (django-q2 tasks taking a Job primary key): group registration, licence change, force
updates and the following of their status, and the reads pages ask for (licence check, firmware list, abnormal
devices: portal.lookups). No web request calls E-FOTA: a page queues one of these and follows the job."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from efota.client import EfotaClient, EfotaValidationError, chunks, explain, failure_of, fud_category
from efota.constants import EFOTA_MAX_DEVICES_PER_CALL
from efota.models import EfotaCall, EfotaGroup, ForceUpdate, ForceUpdateDevice, check_licence
from portal.engine import UNKNOWN, Protocol, Timings, drive, is_outage, record_outcomes
from portal.knox import errors
from portal.models import AuditEvent, Job
from portal.tasks import run_job

logger = logging.getLogger(__name__)

# After sending, a force update job follows each part's status at E-FOTA (ForceUpdates.poll): first this long after
# sending it, then doubling up to STATUS_MAX_INTERVAL_SECONDS, until no device is processing or STATUS_WATCH_SECONDS
# after the part was sent. It holds a worker meanwhile: the window stays well under Q_TIMEOUT (3600 s by
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
        account_id=account_id,
        operation=operation,
        summary=summary[:300],
        ok=False,
        code=code[:20],
        message=message[:400],
        job=job,
        actor_id=actor_id,
    )


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
            status=group.status if change else EfotaGroup.Status.FAILED,
            last_code=code[:20],
            last_error=message[:400],
            updated_at=timezone.now(),
        )
        job.add_progress(failed=1)
        job.fail(f"{message} [{code}]" + (" The portal retried; try again later." if retryable else ""))
        return
    log_call(job, job.account_id, operation, f"{group.group_id} → {licence}", None, job.created_by_id)
    EfotaGroup.objects.filter(pk=group.pk).update(
        status=EfotaGroup.Status.REGISTERED,
        licence=licence,
        last_code="",
        last_error="",
        registered_at=timezone.now(),
        updated_at=timezone.now(),
    )
    job.add_progress(succeeded=1)
    job.finish()


# --- force updates (a portal.engine protocol) -------------------------------------------------------------------


def run_force_update(job_pk: int) -> None:
    run_job(job_pk, lambda job, owner: drive(job, owner, ForceUpdates(job)))


class EfotaRefusal(errors.KnoxError):
    """E-FOTA (or the client's field rules) refused a call: explained in E-FOTA's own words (efota.client.explain)
    wherever the engine shows the reason, on the part and in the job's summary."""

    def explain(self) -> str:
        return self.message


# Refusals that every part of the job would get the same way (they share mdmId, customer, licence): the first one
# ends the job and the other parts are not sent.
JOB_LEVEL_CODES = frozenset({"FUD_1001", "FUD_1002", "FUD_1004", "FUD_3017", "FUD_3018", "VALIDATION"})
NOT_REPEATED = (
    "the call may have reached E-FOTA, but its answer was lost; a force update is not repeated automatically: "
    "check the E-FOTA console before repeating it"
)


class ForceUpdates(Protocol):
    """Start each part (forceUpdate; its devices count as started, the job's succeeded), then follow it
    (forceUpdateSummary/Detail) until no device is processing, E-FOTA refuses its status for good, or
    STATUS_WATCH_SECONDS after it was sent: then the part is COMPLETE, E-FOTA's figures on the part, and "Refresh status" asks
    again later. Not repeatable, and E-FOTA cannot be asked whether a call arrived: a part found SENDING is
    started only if its answer was recorded, else it ends UNKNOWN (NOT_REPEATED)."""

    model = ForceUpdate
    client_class = EfotaClient
    job_level_codes = JOB_LEVEL_CODES

    @property
    def timings(self) -> Timings:  # read when used: tests shorten the watch
        # The watch ends in `poll` at STATUS_WATCH_SECONDS; the engine's own timeout (a part that ends UNKNOWN)
        # lies one interval beyond it, so it never comes first.
        return Timings(
            first_poll=STATUS_FIRST_DELAY_SECONDS,
            backoff=2.0,
            max_interval=STATUS_MAX_INTERVAL_SECONDS,
            timeout=STATUS_WATCH_SECONDS + STATUS_MAX_INTERVAL_SECONDS,
        )

    def plan(self) -> None:
        """One ForceUpdate per call of at most EFOTA_MAX_DEVICES_PER_CALL devices, all committed before any is
        sent."""
        p = self.job.params
        serials = p["serials"]
        with transaction.atomic():
            for seq, start in enumerate(range(0, len(serials), EFOTA_MAX_DEVICES_PER_CALL), start=1):
                part = serials[start : start + EFOTA_MAX_DEVICES_PER_CALL]
                ForceUpdate.objects.create(
                    account=self.job.account,
                    job=self.job,
                    customer_id=p["customer_id"],
                    licence=p["licence"],
                    model=p["model"],
                    sales_code=p["sales_code"],
                    network_type=p.get("network_type", "WIFIONLY"),
                    target_version=p.get("target", "Latest"),
                    sequence=seq,
                    serials=part,
                    device_count=len(part),
                )

    def send(self, fu: ForceUpdate) -> None:
        """Start the part; E-FOTA's id and the devices are recorded before the engine marks it submitted, so a
        worker that stops in between finds the part started (`lookup`)."""
        job = self.job
        what = f"{fu.model}/{fu.sales_code} → {fu.target_version}, {len(fu.serials)} devices"
        try:
            force_id = self.client.force_update(
                fu.customer_id,
                fu.licence,
                fu.model,
                fu.sales_code,
                fu.serials,
                network_type=fu.network_type,
                target=fu.target_version,
            )
        except EfotaValidationError as e:
            log_call(job, job.account_id, "forceUpdate", what, e, job.created_by_id)
            raise EfotaRefusal(str(e), code="VALIDATION", service="efota") from e
        except errors.KnoxError as e:
            log_call(job, job.account_id, "forceUpdate", what, e, job.created_by_id)
            if type(e) is errors.KnoxError:  # a plain refusal; the others tell the engine what happened
                raise EfotaRefusal(explain(e), status=e.status, code=e.code, detail=e.detail, service="efota") from e
            raise
        log_call(job, job.account_id, "forceUpdate", what, None, job.created_by_id)
        with transaction.atomic():
            ForceUpdate.objects.filter(pk=fu.pk).update(force_update_id=force_id, processing=len(fu.serials))
            ForceUpdateDevice.objects.bulk_create(
                [ForceUpdateDevice(force_update=fu, serial=s, status="PROCESSING") for s in fu.serials],
                ignore_conflicts=True,
            )
            # Started devices count as the job's succeeded now, not when following them ends (up to
            # STATUS_WATCH_SECONDS later): staff see progress while E-FOTA updates them.
            job.add_progress(succeeded=len(fu.serials))
        fu.force_update_id = force_id

    def lookup(self, fu: ForceUpdate) -> bool | None:
        """E-FOTA has nothing to find a force update by but its own id: the part started if its answer was
        recorded, else nobody can tell (None: it ends UNKNOWN)."""
        fu.refresh_from_db(fields=["force_update_id"])
        return True if fu.force_update_id else None

    def poll(self, fu: ForceUpdate) -> ForceUpdate | None:
        """E-FOTA's figures for the part; the part itself once the following ends, else None."""
        watched = (timezone.now() - (fu.submitted_at or timezone.now())).total_seconds()
        try:
            fu = read_status(self.job, fu, actor_id=None)
        except errors.KnoxError as e:
            if is_outage(e) and watched < STATUS_WATCH_SECONDS:
                raise  # E-FOTA unreachable or FUD_9xxx past the retries: the engine waits for it
            fu.refresh_from_db()  # refused: kept on the part; a processing error ends the following
        if fu.is_in_progress and watched < STATUS_WATCH_SECONDS:
            return None
        if fu.is_in_progress:
            logger.info("job %s: E-FOTA still processing part %s after the watch window", self.job.pk, fu.sequence)
        return fu

    def apply(self, fu: ForceUpdate, result: ForceUpdate) -> None:
        """The following ended (the job counted the part's devices as started when E-FOTA took them, in `send`;
        E-FOTA's own figures stay on the part)."""
        fu.end(ForceUpdate.State.COMPLETE, succeeded=len(fu.serials))

    def fail(self, fu: ForceUpdate, state: str, code: str, message: str, detail: str = "") -> None:
        """A started part stays started (its devices are updating; only following it stopped); any other part
        fails for all its devices."""
        fu.refresh_from_db(fields=["force_update_id"])
        with transaction.atomic():
            if fu.force_update_id:  # counted as started in `send`
                fu.end(ForceUpdate.State.COMPLETE, succeeded=len(fu.serials), code=code, message=message)
            else:
                why = NOT_REPEATED if code == UNKNOWN else message
                record_outcomes(self.job, fu, state, 0, len(fu.serials), code=code, message=why)

    def finish(self, summary: str) -> None:
        refused = self.requests().filter(state=ForceUpdate.State.FAILED).order_by("sequence").first()
        self.job.finish(summary or (f"{refused.knox_message} [{refused.knox_code}]" if refused else ""))


def read_status(job: Job, fu: ForceUpdate, actor_id: int | None) -> ForceUpdate:
    """Ask E-FOTA for one started part's status (refresh_force_update) and log the call against the force update
    job. A refusal is kept on the part (the page says why its figures are stale; a processing error stops the
    following) and raised."""
    try:
        fu = refresh_force_update(fu)
    except errors.KnoxError as e:
        log_call(job, fu.account_id, "forceUpdateSummary", fu.force_update_id, e, actor_id)
        ForceUpdate.objects.filter(pk=fu.pk).update(
            knox_code=e.code[:20], knox_message=explain(e)[:400], checked_at=timezone.now()
        )
        raise
    figures = (
        f"{fu.force_update_id}: {fu.downloaded} downloaded, {fu.download_failed} failed, {fu.processing} processing"
    )
    log_call(job, fu.account_id, "forceUpdateSummary", figures, None, actor_id)
    if fu.knox_code:
        ForceUpdate.objects.filter(pk=fu.pk).update(knox_code="", knox_message="")
        fu.knox_code = fu.knox_message = ""
    return fu


def check_part(job: Job, fu: ForceUpdate, actor_id: int | None) -> dict[str, str] | None:
    """read_status for "Refresh status": the refusal (failure_of), or None."""
    try:
        read_status(job, fu, actor_id)
    except errors.KnoxError as e:
        return failure_of(e)
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


def _record_read(job: Job, operation: str, what: str, error: Exception | None, audit: str, **figures: Any) -> None:
    """A read's E-FOTA call log line and its audit event (who asked, for which customer and licence, the answer's
    `figures`, whether it succeeded and with which code)."""
    log_call(job, job.account_id, operation, what, error, job.created_by_id)
    AuditEvent.objects.record(
        audit,
        actor=job.created_by,
        target=job.account,
        summary={
            "customer_id": job.params["customer_id"],
            "licence": job.params["licence"],
            **figures,
            "ok": error is None,
            "code": getattr(error, "code", "") if error else "",
            "job": job.pk,
        },
    )


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
    asked = {"model": p["model"], "sales_code": p["sales_code"], "current": p["current"]}
    _record_read(job, "firmwareList", what, error, "efota.firmware_list", **asked, versions=len(versions))
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
    abnormal = 0 if error else sum(len(v) for v in found.values())
    _record_read(
        job,
        "abnormalDeviceList",
        f"{len(serials)} devices",
        error,
        "efota.abnormal_devices",
        devices=len(serials),
        abnormal=abnormal,
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
        downloaded=summary.downloaded,
        download_failed=summary.failed,
        processing=summary.processing,
        checked_at=timezone.now(),
    )
    fu.refresh_from_db()
    return fu
