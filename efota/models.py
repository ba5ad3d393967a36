"""E-FOTA records: groups registered to licences, licences as E-FOTA reports them, force updates with their
per-device status, and every call's outcome (the audit log records who asked)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from efota.constants import EFOTA_FIRMWARE_VERSION_MAX_LENGTH, EFOTA_MODEL_MAX_LENGTH, EFOTA_SALES_CODE_MAX_LENGTH
from portal.engine import KnoxRequest
from portal.models import AuditEvent, Job, KnoxAccount


class EfotaLicence(models.Model):
    account = models.ForeignKey(KnoxAccount, models.CASCADE, related_name="efota_licences")
    customer_id = models.CharField(max_length=50)
    key = models.CharField("licence", max_length=100)
    max_devices = models.PositiveIntegerField(null=True, blank=True)
    expiration_date = models.DateField(null=True, blank=True)
    last_error = models.CharField(max_length=400, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["account", "customer_id", "key"], name="efota_licence_uniq")]
        verbose_name = "E-FOTA licence"
        verbose_name_plural = "E-FOTA licences"

    def __str__(self) -> str:
        return self.key

    @property
    def is_expired(self) -> bool:
        return bool(self.expiration_date and self.expiration_date < timezone.localdate())


class EfotaGroup(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Being registered"
        REGISTERED = "registered", "Registered"
        FAILED = "failed", "Not registered"

    account = models.ForeignKey(KnoxAccount, models.CASCADE, related_name="efota_groups")
    customer_id = models.CharField(max_length=50)
    group_id = models.CharField(max_length=50, help_text="Stored upper-case, as E-FOTA treats it.")
    licence = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    last_code = models.CharField(max_length=20, blank=True)
    last_error = models.CharField(max_length=400, blank=True)
    registered_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["group_id"]
        constraints = [models.UniqueConstraint(fields=["account", "customer_id", "group_id"], name="efota_group_uniq")]
        verbose_name = "E-FOTA group"
        verbose_name_plural = "E-FOTA groups"

    def __str__(self) -> str:
        return self.group_id


class ForceUpdate(KnoxRequest):
    """One forceUpdate call of at most EFOTA_MAX_DEVICES_PER_CALL devices (a portal.engine request), then the
    following of its status. `force_update_id` is E-FOTA's id for it; `downloaded`, `download_failed` and
    `processing` are E-FOTA's own figures, read by the job and by "Refresh status". `knox_code`/`knox_message` say
    why the call was refused or, on a started part, why its last status check was.

    Not repeatable: E-FOTA starts a new update on every call and has no id of ours to find one by, so a part whose
    answer was lost is reported, never sent again (efota.tasks.ForceUpdates).
    """

    State = KnoxRequest.State

    account = models.ForeignKey(KnoxAccount, models.CASCADE, related_name="efota_force_updates")
    job = models.ForeignKey(Job, models.SET_NULL, null=True, blank=True, related_name="efota_force_updates")
    customer_id = models.CharField(max_length=50)
    licence = models.CharField(max_length=100)
    model = models.CharField(max_length=EFOTA_MODEL_MAX_LENGTH)
    sales_code = models.CharField(max_length=EFOTA_SALES_CODE_MAX_LENGTH)
    network_type = models.CharField(max_length=20, default="WIFIONLY")
    target_version = models.CharField(max_length=EFOTA_FIRMWARE_VERSION_MAX_LENGTH, default="Latest")
    serials = models.JSONField(default=list)
    force_update_id = models.CharField(max_length=64, blank=True)
    downloaded = models.PositiveIntegerField(default=0)
    download_failed = models.PositiveIntegerField(default=0, help_text="Devices whose download failed (E-FOTA).")
    processing = models.PositiveIntegerField(default=0)
    checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "sequence"]
        verbose_name = "E-FOTA force update"
        verbose_name_plural = "E-FOTA force updates"

    def __str__(self) -> str:
        return self.force_update_id or f"force update {self.pk}"

    @property
    def is_in_progress(self) -> bool:
        """Started, E-FOTA still counts devices as processing, and its last status check was not refused for good
        (a FUD processing error: asking again gets the same answer). The force update job polls these parts."""
        from efota.client import fud_category

        refused_for_good = bool(self.knox_code) and fud_category(self.knox_code) == "processing"
        return bool(self.force_update_id) and self.processing > 0 and not refused_for_good


# A device's status in a force update, as E-FOTA spells it (forceUpdateSummary), in words.
DEVICE_STATUS_LABELS = {"DOWNLOADED": "Downloaded", "PROCESSING": "Processing", "FAILED": "Download failed"}


class ForceUpdateDevice(models.Model):
    force_update = models.ForeignKey(ForceUpdate, models.CASCADE, related_name="devices")
    serial = models.CharField(max_length=20)
    status = models.CharField(max_length=20, blank=True, help_text="As E-FOTA reports it (DOWNLOADED, ...).")
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["serial"]
        constraints = [models.UniqueConstraint(fields=["force_update", "serial"], name="efota_fu_device_uniq")]
        verbose_name = "E-FOTA force update device"
        verbose_name_plural = "E-FOTA force update devices"

    def __str__(self) -> str:
        return f"{self.serial}: {self.status_label}"

    @property
    def status_label(self) -> str:
        """The status in words; a status E-FOTA added since is shown as it sent it, capitalised."""
        return DEVICE_STATUS_LABELS.get(self.status, self.status.replace("_", " ").capitalize())


# E-FOTA's operation names (what EfotaCall.operation stores) in words, for the pages and the admin.
OPERATION_LABELS = {
    "groupRegister": "Register a group",
    "groupLicenseChange": "Change a group's licence",
    "licenseInfo": "Check a licence",
    "firmwareList": "List firmware",
    "forceUpdate": "Force update",
    "forceUpdateSummary": "Force update status",
    "abnormalDeviceList": "Abnormal devices",
}


class EfotaCall(models.Model):
    """The outcome of every E-FOTA call the portal made."""

    account = models.ForeignKey(KnoxAccount, models.CASCADE, related_name="+")
    # The choices give the admin's filter and get_operation_display() words; a new operation still saves.
    operation = models.CharField(max_length=30, choices=list(OPERATION_LABELS.items()))
    summary = models.CharField(max_length=300, blank=True)
    ok = models.BooleanField(default=True)
    code = models.CharField(max_length=20, blank=True)
    message = models.CharField(max_length=400, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    job = models.ForeignKey(Job, models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["account", "-id"], name="efota_call_account_idx")]
        verbose_name = "E-FOTA call"
        verbose_name_plural = "E-FOTA calls"

    def __str__(self) -> str:
        return f"{self.operation_label}: {'ok' if self.ok else self.code}"

    @property
    def operation_label(self) -> str:
        """The operation in words ("Check a licence"); one the table doesn't know is shown as E-FOTA names it."""
        return OPERATION_LABELS.get(self.operation, self.operation)


# --- operations (used by the pages and the commands) --------------------------------------------------------


def queue_register(
    account: KnoxAccount, customer_id: str, group_id: str, licence: str, *, user: Any, request: Any = None
) -> Job:
    """Validate (E-FOTA's byte limits) and queue the registration of a group to a licence."""
    from efota.client import EfotaValidationError, Ids, check_ids

    group_id = group_id.strip().upper()
    check_ids(Ids(account.efota_mdm_id, customer_id.strip(), licence.strip()).normalised(), group_id=group_id)
    existing = EfotaGroup.objects.filter(account=account, customer_id=customer_id.strip(), group_id=group_id).first()
    if existing is not None and existing.status == EfotaGroup.Status.REGISTERED and existing.licence != licence.strip():
        # Registering it again would be refused (FUD_3019) and must not overwrite what E-FOTA still has.
        raise EfotaValidationError(
            {"group_id": f"{group_id} is registered to {existing.licence}; use “Change licence” to move it."}
        )
    group, _ = EfotaGroup.objects.update_or_create(
        account=account,
        customer_id=customer_id.strip(),
        group_id=group_id,
        defaults={"licence": licence.strip(), "status": EfotaGroup.Status.PENDING, "updated_at": timezone.now()},
    )
    job = Job.objects.create(
        kind="efota.register",
        account=account,
        created_by=user,
        total=1,
        params={"group": group.pk},
        title=f"Register E-FOTA group {group_id} to {licence.strip()}",
    )
    AuditEvent.objects.record(
        "efota.register_group",
        request=request,
        actor=user,
        target=group,
        summary={"group": group_id, "licence": licence.strip(), "job": job.pk},
    )
    job.enqueue("efota.tasks.register_group")
    return job


def queue_license_change(group: EfotaGroup, new_licence: str, *, user: Any, request: Any = None) -> Job:
    from efota.client import Ids, check_ids

    check_ids(
        Ids(group.account.efota_mdm_id, group.customer_id, new_licence.strip()).normalised(), group_id=group.group_id
    )
    job = Job.objects.create(
        kind="efota.license_change",
        account=group.account,
        created_by=user,
        total=1,
        params={"group": group.pk, "change_licence": new_licence.strip()},
        title=f"Move E-FOTA group {group.group_id} to {new_licence.strip()}",
    )
    AuditEvent.objects.record(
        "efota.license_change",
        request=request,
        actor=user,
        target=group,
        summary={"from": group.licence, "to": new_licence.strip(), "job": job.pk},
    )
    job.enqueue("efota.tasks.register_group")
    return job


def queue_force_update(
    account: KnoxAccount,
    *,
    customer_id: str,
    licence: str,
    model: str,
    sales_code: str,
    serials: list[str],
    target: str = "Latest",
    network_type: str = "WIFIONLY",
    user: Any,
    request: Any = None,
) -> Job:
    from efota.client import Ids, check_device_fields, check_ids, clean_serials

    check_ids(Ids(account.efota_mdm_id, customer_id.strip(), licence.strip()).normalised())
    devices = clean_serials(serials)
    check_device_fields(model=model, sales_code=sales_code, target=target)
    params = {
        "customer_id": customer_id.strip(),
        "licence": licence.strip(),
        "model": model.strip().upper(),
        "sales_code": sales_code.strip().upper(),
        "serials": devices,
        "target": target.strip() or "Latest",
        "network_type": network_type,
    }
    job = Job.objects.create(
        kind="efota.force_update",
        account=account,
        created_by=user,
        total=len(devices),
        params=params,
        title=f"Force update {len(devices)} device{'s' if len(devices) != 1 else ''} to {params['target']}",
    )
    AuditEvent.objects.record(
        "efota.force_update", request=request, actor=user, target=job, summary={**params, "serials": len(devices)}
    )
    job.enqueue("efota.tasks.run_force_update")
    return job


def check_licence(
    account: KnoxAccount, customer_id: str, licence: str, *, user: Any, request: Any = None, job: Job | None = None
) -> EfotaLicence:
    """Ask E-FOTA about a licence now and store what it says (or why it could not); raises the error after
    recording it so the caller can show it. `job`: the lookup job asking (efota.tasks.lookup_licence), linked
    from the call log and the audit event."""
    import datetime as dt

    from efota.client import EfotaClient, EfotaValidationError, explain
    from efota.tasks import log_call
    from portal.knox.errors import KnoxError

    record, _ = EfotaLicence.objects.get_or_create(
        account=account, customer_id=customer_id.strip(), key=licence.strip()
    )
    try:
        info = EfotaClient(account).license_info(customer_id, licence)
    except (EfotaValidationError, KnoxError) as e:
        message = explain(e) if isinstance(e, KnoxError) else str(e)
        EfotaLicence.objects.filter(pk=record.pk).update(last_error=message[:400], checked_at=timezone.now())
        log_call(job, account.pk, "licenseInfo", licence, e, getattr(user, "pk", None))
        AuditEvent.objects.record(
            "efota.license_info",
            request=request,
            actor=user,
            target=record,
            summary={"ok": False, "code": getattr(e, "code", ""), **({"job": job.pk} if job else {})},
        )
        raise
    try:
        expires = dt.date.fromisoformat(info.expiration_date[:10]) if info.expiration_date else None
    except ValueError:
        expires = None
    EfotaLicence.objects.filter(pk=record.pk).update(
        max_devices=info.max_devices, expiration_date=expires, last_error="", checked_at=timezone.now()
    )
    log_call(job, account.pk, "licenseInfo", licence, None, getattr(user, "pk", None))
    AuditEvent.objects.record(
        "efota.license_info",
        request=request,
        actor=user,
        target=record,
        summary={"ok": True, **({"job": job.pk} if job else {})},
    )
    record.refresh_from_db()
    return record


# --- lookups: E-FOTA reads a page asks for, made by a worker (portal.lookups, efota.tasks.lookup_*) ---------

LICENCE_LOOKUP = "efota.licence"
FIRMWARE_LOOKUP = "efota.firmware"
ABNORMAL_LOOKUP = "efota.abnormal"
FORCE_UPDATE_REFRESH = "efota.force_update_refresh"


def queue_licence_check(account: KnoxAccount, customer_id: str, licence: str, *, user: Any) -> Job:
    from portal.lookups import queue_lookup

    params = {"customer_id": customer_id.strip(), "licence": licence.strip()}
    return queue_lookup(
        LICENCE_LOOKUP, account=account, user=user, params=params, title=f"Check E-FOTA licence {params['licence']}"
    )


def queue_firmware_lookup(
    account: KnoxAccount, customer_id: str, licence: str, model: str, sales_code: str, current: str = "", *, user: Any
) -> Job:
    from portal.lookups import queue_lookup

    params = {
        "customer_id": customer_id.strip(),
        "licence": licence.strip(),
        "model": model.strip().upper(),
        "sales_code": sales_code.strip().upper(),
        "current": current.strip(),
    }
    what = f"{params['model']}/{params['sales_code']}" + (f" after {params['current']}" if params["current"] else "")
    return queue_lookup(FIRMWARE_LOOKUP, account=account, user=user, params=params, title=f"Firmware for {what}")


def queue_abnormal_check(account: KnoxAccount, customer_id: str, licence: str, serials: list[str], *, user: Any) -> Job:
    from portal.lookups import queue_lookup

    params = {"customer_id": customer_id.strip(), "licence": licence.strip(), "serials": serials}
    title = f"Abnormal devices among {len(serials)} device{'s' if len(serials) != 1 else ''}"
    return queue_lookup(ABNORMAL_LOOKUP, account=account, user=user, params=params, title=title, total=len(serials))


def queue_status_refresh(job: Job, *, user: Any) -> tuple[Job | None, bool]:
    """The “Refresh status” of a force update: a job that asks E-FOTA for the status of every started part
    (efota.tasks.refresh_force_update_status). (None, False) when no part has started; (the refresh already
    queued or running, False) instead of a second one; (new job, True) otherwise."""
    parts = ForceUpdate.objects.filter(job=job).exclude(force_update_id="").count()
    if not parts:
        return None, False
    pending = pending_status_refresh(job)
    if pending is not None:
        return pending, False
    refresh = Job.objects.create(
        kind=FORCE_UPDATE_REFRESH,
        account=job.account,
        created_by=user,
        params={"job": job.pk},
        total=parts,
        title=f"Refresh the E-FOTA status of job #{job.pk}",
    )
    refresh.enqueue("efota.tasks.refresh_force_update_status")
    return refresh, True


def pending_status_refresh(job: Job) -> Job | None:
    """The status refresh of this force update that is queued or running, if any."""
    return Job.objects.unfinished().filter(kind=FORCE_UPDATE_REFRESH, params__job=job.pk).order_by("-id").first()
