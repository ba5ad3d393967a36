"""Knox Guard records: devices mirroring Knox (state from seed 003), every action taken on them with its outcome,
the asynchronous requests that carry bulk actions, uploads to Knox Guard and licences.

Only actions valid in a device's current state are offered (ActionSpec.allowed_from); Knox stays the judge and
a refusal is recorded with its code and a plain reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from guard.client import ACTIONS, ActionParams, ActionSpec, DeviceRef
from guard.constants import KG_CONSOLE_LABELS, KG_DEVICE_STATES
from portal.engine import KnoxRequest
from portal.knox import errors
from portal.models import AuditEvent, Job, KnoxAccount, Upload


def new_transaction_id() -> str:
    return uuid.uuid4().hex  # 32 alphanumerics: KG_TRANSACTION_ID_MAX_LENGTH


class DeviceQuerySet(models.QuerySet["GuardDevice"]):
    def search(self, text: str) -> DeviceQuerySet:
        """Prefix search on IMEI/serial or approve ID, as range scans on their indexes."""
        text = text.strip()
        if not text:
            return self
        upper = "".join(ch for ch in text.upper() if ch.isalnum())
        by_approve_id = models.Q(approve_id__gte=text, approve_id__lt=text + "\uffff")
        if not upper:  # no letters or digits: it can only be an approve ID
            return self.filter(by_approve_id)
        return self.filter(models.Q(device_uid__gte=upper, device_uid__lt=upper + "\uffff") | by_approve_id)

    def matching(self, account: KnoxAccount | None, filters: dict[str, Any]) -> DeviceQuerySet:
        qs = self.filter(account=account) if account is not None else self.all()
        if filters.get("q"):
            qs = qs.search(str(filters["q"]))
        if filters.get("state"):
            qs = qs.filter(state=filters["state"])
        if filters.get("licence"):
            qs = qs.filter(licence=filters["licence"])
        if filters.get("approve_id"):
            qs = qs.filter(approve_id=filters["approve_id"])
        return qs


class GuardDevice(models.Model):
    State = models.TextChoices("State", [(s, s) for s in KG_DEVICE_STATES])

    account = models.ForeignKey(KnoxAccount, models.CASCADE, related_name="guard_devices")
    object_id = models.CharField("objectId", max_length=40, blank=True)
    device_uid = models.CharField("IMEI / serial", max_length=20)
    approve_id = models.CharField("approve ID", max_length=50, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default="Pending")
    model = models.CharField(max_length=60, blank=True)
    upload_id = models.CharField(max_length=64, blank=True)
    licence = models.CharField(max_length=100, blank=True, help_text="Knox Guard licence key, where known.")
    # The job currently acting on this device, so a second one does not race it.
    pending_job = models.ForeignKey(Job, models.SET_NULL, null=True, blank=True, related_name="+")
    last_action = models.CharField(max_length=12, blank=True)
    last_action_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=10, blank=True)
    last_code = models.CharField(max_length=20, blank=True)
    last_message = models.CharField(max_length=400, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = DeviceQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Sync and upload upsert on this pair; the IMEI/serial prefix search uses it too.
            models.UniqueConstraint(fields=["account", "device_uid"], name="guard_device_account_uid_uniq"),
        ]
        indexes = [
            # Device list: newest first, filtered by state (keyset on id), at a million rows.
            models.Index(fields=["account", "state", "-id"], name="guard_device_state_idx"),
            models.Index(fields=["state", "-id"], name="guard_device_state_only_idx"),
            models.Index(fields=["device_uid"], name="guard_device_uid_idx"),
            models.Index(fields=["approve_id"], name="guard_device_approve_idx"),
            models.Index(fields=["licence", "-id"], name="guard_device_licence_idx"),
        ]

    def __str__(self) -> str:
        return self.device_uid

    @property
    def console_state(self) -> str:
        return KG_CONSOLE_LABELS.get(self.state, self.state)

    @property
    def ref(self) -> DeviceRef:
        return DeviceRef(object_id=self.object_id, device_uid=self.device_uid, approve_id=self.approve_id)

    @property
    def last_action_label(self) -> str:
        spec = ACTIONS.get(self.last_action)
        return spec.label if spec is not None else self.last_action

    @property
    def last_outcome_label(self) -> str:
        return dict(GuardAction.Outcome.choices).get(self.last_outcome, self.last_outcome)

    def allowed_actions(self) -> list[ActionSpec]:
        """The actions Knox Guard accepts in the device's current state (seed 003 life cycle)."""
        return [spec for spec in ACTIONS.values() if self.state in spec.allowed_from]

    def allows(self, action: str) -> bool:
        return self.state in ACTIONS[action].allowed_from


class GuardChunk(KnoxRequest):
    """One asynchronous Knox Guard request (…Async) carrying up to KG_ASYNC_MAX_DEVICES devices of a bulk job
    (a portal.engine request).

    The x-knox-transactionId is generated and stored before the request is sent; Knox does not apply the same id
    with the same body twice, so a resumed job can send it again safely, then read the result by that id.
    """

    State = KnoxRequest.State

    job = models.ForeignKey(Job, models.CASCADE, related_name="guard_chunks")
    action = models.CharField(max_length=12)
    transaction_id = models.CharField(max_length=32, default=new_transaction_id)

    class Meta:
        ordering = ["job", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["job", "sequence"], name="guard_chunk_job_seq_uniq"),
            models.UniqueConstraint(fields=["transaction_id"], name="guard_chunk_txid_uniq"),
        ]

    def __str__(self) -> str:
        return self.transaction_id


class GuardAction(models.Model):
    """One action on one device: its parameters, the request that carried it and Knox's answer. The device's
    history and a job's per-device results are both read from here."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    account = models.ForeignKey(KnoxAccount, models.CASCADE, related_name="+")
    job = models.ForeignKey(Job, models.CASCADE, null=True, blank=True, related_name="guard_actions")
    chunk = models.ForeignKey(GuardChunk, models.CASCADE, null=True, blank=True, related_name="actions")
    device = models.ForeignKey(GuardDevice, models.SET_NULL, null=True, blank=True, related_name="actions")
    device_uid = models.CharField(max_length=50, help_text="The identifier as given (IMEI, serial or approve ID).")
    row_number = models.PositiveIntegerField(null=True, blank=True)
    action = models.CharField(max_length=12)
    params = models.JSONField(default=dict, blank=True)
    transaction_id = models.CharField(max_length=32, blank=True, help_text="x-knox-transactionId of the request.")
    outcome = models.CharField(max_length=9, choices=Outcome.choices, default=Outcome.PENDING)
    code = models.CharField(max_length=20, blank=True)
    message = models.CharField(max_length=100, blank=True)
    reason = models.CharField(max_length=400, blank=True)
    state_before = models.CharField(max_length=20, blank=True)
    state_after = models.CharField(max_length=20, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    sent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # A job's results table: filtered by outcome, in order, or all of them in order.
            models.Index(fields=["job", "outcome", "id"], name="guard_action_job_idx"),
            models.Index(fields=["job", "id"], name="guard_action_job_id_idx"),
            # A device's timeline.
            models.Index(fields=["device", "-id"], name="guard_action_device_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.device_uid}: {self.outcome}"

    @property
    def spec(self) -> ActionSpec:
        return ACTIONS[self.action]

    def state_change(self) -> str:
        """The device's state before and after, in the console's words: "Active → Locking", "Active (unchanged)",
        "Active (waiting for Knox)"; never a bare "?" or "…"."""
        before = state_label(self.state_before) if self.state_before else "not in the portal's records"
        if self.outcome == self.Outcome.PENDING:
            return f"{before} (waiting for Knox)"
        if self.outcome == self.Outcome.FAILED:
            return f"{before} (unchanged)" if self.state_before else before
        if self.state_after:
            return f"{before} → {state_label(self.state_after)}"
        if ACTIONS[self.action].becomes == "":
            return f"{before} → removed from Knox Guard"
        return before

    def explanation(self) -> str:
        from portal.knox.errors import explain

        if self.outcome != self.Outcome.FAILED:
            return ""
        if self.code in LOCAL_CODES:
            return LOCAL_CODES[self.code]
        return explain(self.code, fallback=self.reason or self.message)


# Outcomes the portal records itself, without a Knox answer.
LOCAL_CODES = {
    "NOT_FOUND": "The portal has no Knox Guard device with this identifier; sync devices from Knox first.",
    "STATE": "The device's state does not allow this action (checked before sending).",
    "BUSY": "Another job is already acting on this device.",
    "NOT_SENT": "Not sent: Knox refused the job or could not be reached.",
    "NOT_APPLIED": "Knox's answers were lost each time and the device is unchanged: the action was not applied. "
    "Send it again once Knox is healthy.",
    "UNKNOWN": "Sent, but Knox's answer could not be read; check the device's state before trying again.",
}


class GuardUpload(KnoxRequest):
    """One POST devices/uploads of at most KG_UPLOAD_MAX_DEVICES devices: a part of an upload job (a portal.engine
    request), the staged upload's valid rows `first_row`..`last_row`. Knox answers it at once: `knox_status` is
    Knox's uploadStatus (Progress, Complete), `state` the portal's. Not repeatable (a second upload registers the
    devices again): a part whose answer was lost is settled by looking its devices up (guard.tasks.GuardUploads).
    """

    State = KnoxRequest.State

    account = models.ForeignKey(KnoxAccount, models.CASCADE, related_name="guard_uploads")
    job = models.ForeignKey(Job, models.SET_NULL, null=True, blank=True, related_name="guard_uploads")
    upload_id = models.CharField("Knox uploadID", max_length=64, blank=True)
    transaction_id = models.CharField(max_length=32, default=new_transaction_id)
    knox_status = models.CharField(max_length=20, blank=True, help_text="Knox's uploadStatus, e.g. Progress.")
    valid = models.PositiveIntegerField(default=0)
    invalid = models.PositiveIntegerField(default=0)
    invalid_reasons = models.JSONField(default=list, blank=True)
    flags = models.JSONField(default=dict, blank=True)
    first_row = models.PositiveIntegerField(null=True, blank=True, help_text="The part's first spreadsheet row.")
    last_row = models.PositiveIntegerField(null=True, blank=True, help_text="The part's last spreadsheet row.")
    created_at = models.DateTimeField(default=timezone.now)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.upload_id or f"upload {self.pk}"

    def flags_on(self) -> list[str]:
        """The labels of the policy flags this upload asked for."""
        return [label for label, on in upload_flags_display(self.flags) if on]


class GuardUploadDevice(models.Model):
    """One device of a GuardUpload as Knox Guard reports it once it has processed the upload (GET
    devices/uploads/{uploadId}, read by guard.tasks.read_upload_results). Knox's answer to the upload itself only
    counts the devices and lists the invalid ones; this is its verdict per device, with the code and reason it
    gives, shown on the upload job's page. Read again on "Refresh results": a device's row is updated in place,
    so the page's `?after=` paging stays valid."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        UNKNOWN = "unknown", "Not stated"

    upload = models.ForeignKey(GuardUpload, models.CASCADE, related_name="device_results")
    # The upload's job, copied so the job page pages its results on one index, without a join.
    job = models.ForeignKey(Job, models.SET_NULL, null=True, blank=True, related_name="+")
    device_uid = models.CharField("IMEI / serial", max_length=50)
    approve_id = models.CharField("approve ID", max_length=50, blank=True)
    row_number = models.PositiveIntegerField(null=True, blank=True, help_text="The device's spreadsheet row.")
    outcome = models.CharField(max_length=9, choices=Outcome.choices, default=Outcome.UNKNOWN)
    result = models.CharField(max_length=20, blank=True, help_text="Knox's own word, e.g. SUCCESS or FAIL.")
    code = models.CharField(max_length=20, blank=True)
    message = models.CharField(max_length=100, blank=True)
    reason = models.CharField(max_length=400, blank=True)
    read_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            # A second read of the same upload updates the rows it stored the first time.
            models.UniqueConstraint(fields=["upload", "device_uid"], name="guard_upload_device_uniq"),
        ]
        indexes = [
            # The job page's table: filtered by outcome, in order, or all of them in order (keyset on id).
            models.Index(fields=["job", "outcome", "id"], name="guard_upload_dev_job_idx"),
            models.Index(fields=["job", "id"], name="guard_upload_dev_job_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.device_uid}: {self.outcome}"

    def explanation(self) -> str:
        """Knox's refusal in plain words (portal.knox.errors); Knox's own reason when its code is not known."""
        if self.outcome != self.Outcome.FAILED:
            return ""
        return errors.explain(self.code, fallback=self.reason or self.message or "Knox Guard did not say why.")


class GuardLicence(models.Model):
    """Knox Guard licences. Knox documents no licence endpoint (knox-api.md §6 q22), so these are kept by staff
    in the admin until it does; devices are filtered by the key."""

    class State(models.TextChoices):
        REGISTERED = "Registered", "Registered"
        ACTIVE = "Active", "Active"
        EXPIRED = "Expired", "Expired"

    account = models.ForeignKey(KnoxAccount, models.CASCADE, related_name="guard_licences")
    key = models.CharField(max_length=100)
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    max_devices = models.PositiveIntegerField(null=True, blank=True)
    expires_on = models.DateField(null=True, blank=True)
    notes = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["account", "key"], name="guard_licence_account_key_uniq")]

    def __str__(self) -> str:
        return self.key

    @property
    def is_expired(self) -> bool:
        return self.state == self.State.EXPIRED or bool(self.expires_on and self.expires_on < timezone.localdate())


def state_label(state: str) -> str:
    """A device state as staff read it: the Knox Guard console's word (seed 003), never the API's spelling."""
    return KG_CONSOLE_LABELS.get(state, state) if state else "unknown"


def states_label(states: Iterable[str]) -> str:
    return ", ".join(state_label(s) for s in states)


WEEKDAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
PARAM_LABELS = {
    "message": "Message shown on the phone",
    "email": "Contact email",
    "tel": "Contact phone",
    "interval": "Repeat every",
    "time_limit": "Quiet hours",
    "days_limit": "Quiet days",
    "approve_id": "Approve ID",
    "approve_comment": "Comment",
}


def _seconds(n: int) -> str:
    for unit, size in (("hour", 3600), ("minute", 60)):
        if n >= size and n % size == 0:
            k = n // size
            return f"{k} {unit}{'s' if k != 1 else ''}"
    return f"{n} second{'s' if n != 1 else ''}"


def action_params_display(params: dict[str, Any]) -> list[tuple[str, str]]:
    """A job's action parameters (ActionParams.summary) as staff read them: labels, not field names, and the
    quiet period as hours and days."""
    out = []
    for key, value in params.items():
        if key == "row_approve_id" or value in ("", None):
            continue
        if key == "interval" and isinstance(value, int):
            shown = _seconds(value)
        elif key == "time_limit" and isinstance(value, list | tuple) and len(value) == 2:
            shown = f"{value[0]:02d}:00 to {value[1]:02d}:00"
        elif key == "days_limit" and isinstance(value, list | tuple) and len(value) == 2:
            shown = " to ".join(WEEKDAY_NAMES[v] if isinstance(v, int) and 0 <= v <= 6 else str(v) for v in value)
        else:
            shown = str(value)
        out.append((PARAM_LABELS.get(key, key.replace("_", " ").capitalize()), shown))
    return out


def upload_flags_display(flags: dict[str, Any]) -> list[tuple[str, bool]]:
    """An upload's policy flags with their labels (guard.forms.UPLOAD_FLAGS), never Knox's field names, in the
    form's order (PostgreSQL's jsonb does not keep the order they were stored in)."""
    from guard.forms import UPLOAD_FLAGS

    order = {name: i for i, name in enumerate(UPLOAD_FLAGS)}
    ordered = sorted(flags.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    return [(UPLOAD_FLAGS[k][0] if k in UPLOAD_FLAGS else k, bool(v)) for k, v in ordered]


def refusal(device: GuardDevice | None, action: str, *, busy: bool = False) -> str:
    """Why the portal will not send `action` to this device, in words ("" when it can): the same rules the job's
    planner applies before sending (guard.tasks.plan), so the preview and the device list say in advance what the
    job would record."""
    spec = ACTIONS[action]
    if device is None:
        return (
            "not in the portal's records: sync devices or check the IMEI (Knox would answer that it has no such device)"
        )
    if not device.allows(action):
        return (
            f"recorded as {state_label(device.state)}: “{spec.label}” is possible only from "
            f"{states_label(spec.allowed_from)} (Knox would refuse it for the device's state)"
        )
    if busy:
        return "another job is acting on it; wait for that job to finish"
    return ""


@dataclass
class ActionCheck:
    """How many of a set of devices (a staged spreadsheet's valid rows, a device-list selection) the portal will
    send an action to, and why it will not send the others (guard.models.refusal)."""

    action: str
    total: int
    unknown: int = 0
    busy: int = 0
    wrong_state: dict[str, int] = field(default_factory=dict)  # recorded state -> devices

    @property
    def spec(self) -> ActionSpec | None:
        return ACTIONS.get(self.action)

    @property
    def refused(self) -> int:
        return self.unknown + self.busy + sum(self.wrong_state.values())

    @property
    def sendable(self) -> int:
        return self.total - self.refused

    def reasons(self) -> list[tuple[int, str]]:
        """(devices, reason) for each kind of refusal, most first, in words."""
        spec = ACTIONS[self.action] if self.action else None
        out = [
            (
                n,
                f"recorded as {state_label(state)}, and “{spec.label}” is possible only from "
                f"{states_label(spec.allowed_from)}",
            )
            for state, n in self.wrong_state.items()
            if spec is not None
        ]
        if self.unknown:
            out.append((self.unknown, "not in the portal's records: sync devices or check the IMEI"))
        if self.busy:
            out.append((self.busy, "busy: another job is acting on them"))
        return sorted(out, key=lambda r: -r[0])


ACTIVE_JOB = (Job.Status.QUEUED, Job.Status.RUNNING)


def check_staged(upload: Upload, action: str) -> ActionCheck:
    """The staged spreadsheet's valid rows against the portal's records for `action` (or, with action "", only
    for devices the portal does not have), counted in the database: a 100,000-row file is never loaded.

    Rows are matched as the job's planner matches them (guard.tasks.plan): by IMEI/serial, one lookup per row on
    the (account, device_uid) unique index, grouped by the device's state; then the few rows that name a device by
    its approve ID instead, found with one IN (…) over the approve IDs and classified one by one."""
    from portal.models import UploadRow

    devices = GuardDevice.objects.filter(account_id=upload.account_id).order_by()
    by_uid = devices.filter(device_uid=models.OuterRef("value"))
    rows = UploadRow.objects.filter(upload=upload, status=UploadRow.Status.VALID).annotate(
        d_state=models.Subquery(by_uid.values("state")[:1]),
        # Whether another job holds the device only matters for an action.
        d_job=models.Subquery(by_uid.values("pending_job__status")[:1]) if action else models.Value(""),
    )
    check = ActionCheck(action, total=0)
    allowed = ACTIONS[action].allowed_from if action else tuple(KG_DEVICE_STATES)

    def count(state: str | None, job_status: str | None, n: int) -> None:
        if state is None:
            check.unknown += n
        elif state not in allowed:
            check.wrong_state[state] = check.wrong_state.get(state, 0) + n
        elif job_status in ACTIVE_JOB and action:
            check.busy += n

    for state, job_status, n in rows.values_list("d_state", "d_job").annotate(n=models.Count("id")).order_by():
        check.total += n
        count(state, job_status, n)
    if check.unknown:
        named = rows.filter(d_state=None, value__in=devices.exclude(approve_id="").values("approve_id"))
        values = list(named.values_list("value", flat=True))
        for start in range(0, len(values), 1000):
            part = values[start : start + 1000]
            found = {d.approve_id: d for d in devices.filter(approve_id__in=part).select_related("pending_job")}
            for value in part:
                d = found.get(value)
                if d is not None:
                    check.unknown -= 1
                    count(d.state, d.pending_job.status if d.pending_job else None, 1)
    return check


def refused_rows(upload: Upload, action: str, *, after: int, limit: int) -> list[Any]:
    """The next `limit` valid rows (by row number, after `after`) the portal will not send `action` to: its device
    is not in the portal's records, in a state that does not allow the action, or held by another job (the rows
    check_staged counts as refused), for the preview's “show only these rows”. A row found by its approve ID
    instead is checked again by annotate_refusals, which the caller runs."""
    from portal.models import UploadRow

    devices = GuardDevice.objects.filter(account_id=upload.account_id, device_uid=models.OuterRef("value")).order_by()
    refused = (
        models.Q(d_state=None) | ~models.Q(d_state__in=ACTIONS[action].allowed_from) | models.Q(d_job__in=ACTIVE_JOB)
    )
    return list(
        UploadRow.objects.filter(upload=upload, status=UploadRow.Status.VALID, row_number__gt=after)
        .annotate(
            d_state=models.Subquery(devices.values("state")[:1]),
            d_job=models.Subquery(devices.values("pending_job__status")[:1]),
        )
        .filter(refused)
        .order_by("row_number")[:limit]
    )


def check_devices(devices: models.QuerySet[GuardDevice], action: str) -> ActionCheck:
    """Devices the portal has (a selection or a filter of the device list) against `action`, counted in the
    database: by state on the state index, then the few another job is acting on."""
    check = ActionCheck(action, total=0)
    allowed = ACTIONS[action].allowed_from
    for state, n in devices.values_list("state").annotate(n=models.Count("id")).order_by():
        check.total += n
        if state not in allowed:
            check.wrong_state[state] = check.wrong_state.get(state, 0) + n
    check.busy = devices.filter(state__in=allowed, pending_job__status__in=ACTIVE_JOB).count()
    return check


def sendable_devices(devices: models.QuerySet[GuardDevice], action: str) -> models.QuerySet[GuardDevice]:
    """The devices of `devices` the action can be sent to (check_devices counts the others as refused)."""
    return devices.filter(state__in=ACTIONS[action].allowed_from).exclude(pending_job__status__in=ACTIVE_JOB)


def annotate_refusals(upload: Upload, rows: list[Any], action: str | None) -> None:
    """Give each row of a preview page its recorded device (`row.device`) and, for `action`, why it will not be
    sent (`row.refusal`, "" when it will)."""
    from portal.models import UploadRow

    values = [r.value for r in rows if r.value]
    found: dict[str, GuardDevice] = {}
    for d in (
        GuardDevice.objects.filter(account_id=upload.account_id)
        .filter(models.Q(device_uid__in=values) | models.Q(approve_id__in=values))
        .select_related("pending_job")
    ):
        found[d.device_uid] = d
        if d.approve_id:
            found.setdefault(d.approve_id, d)
    for r in rows:
        r.device = found.get(r.value) if r.value else None
        r.refusal = ""
        if action and r.status == UploadRow.Status.VALID:
            busy = r.device is not None and r.device.pending_job is not None and not r.device.pending_job.is_finished
            r.refusal = refusal(r.device, action, busy=busy)


# Knox Guard's own list of uploads, read by a worker when a page asks (portal.lookups, guard.tasks).
KNOX_UPLOADS_LOOKUP = "guard.knox_uploads"


# --- queueing jobs (used by the pages and the guard_action command) -----------------------------------------


def queue_action(
    account: KnoxAccount,
    action: str,
    params: ActionParams,
    *,
    user: Any,
    devices: list[int] | None = None,
    upload: Upload | None = None,
    request: Any = None,
    confirmation: str = "",
    not_sent: int | None = None,
) -> Job:
    """Queue `action` on the given devices (GuardDevice pks) or on a staged spreadsheet's valid rows.

    The parameters are validated here too (guard.client.validate), so nothing invalid is ever queued.

    `not_sent` (the web review of a spreadsheet): how many of its rows the review said cannot succeed
    (check_staged). The job then sends only the rows of devices the portal has, in a state that allows the action,
    and records the others as not sent: also the devices the portal does not have (`only_known`), which
    otherwise (the guard_action command, which shows no review) are sent by IMEI/serial for Knox to decide.
    """
    job, _ = _queue_action(
        account,
        action,
        params,
        user=user,
        devices=devices,
        upload=upload,
        request=request,
        confirmation=confirmation,
        not_sent=not_sent,
    )
    return job


def _queue_action(
    account: KnoxAccount,
    action: str,
    params: ActionParams,
    *,
    user: Any,
    devices: list[int] | None = None,
    upload: Upload | None = None,
    request: Any = None,
    confirmation: str = "",
    retry_of: Job | None = None,
    not_sent: int | None = None,
) -> tuple[Job, bool]:
    """queue_action, and with `retry_of` a retry created at most once: (the job, whether this call created it)."""
    from guard.client import validate

    validate(action, params)
    spec = ACTIONS[action]
    count = upload.valid if upload is not None else len(devices or [])
    if not count:
        raise ValueError("No device to act on.")
    job_params: dict[str, Any] = {"action": action, "action_params": params.summary()}
    if upload is not None:
        job_params["upload"] = upload.pk
        if not_sent is not None:
            # Rows of devices the portal does not have are recorded as not sent (guard.tasks.plan), never sent
            # to Knox to be refused there: the review said so (check_staged).
            job_params["only_known"] = True
    else:
        job_params["devices"] = list(devices or [])
    sent = count - (not_sent or 0)
    title = f"{spec.label}: {sent} device{'s' if sent != 1 else ''}"
    if not_sent:
        title += f" ({not_sent} more row{'s' if not_sent != 1 else ''} of the file not sent)"
    fields = {
        "kind": f"guard.{action}",
        "account": account,
        "created_by": user,
        "params": job_params,
        "total": count,
        "title": title,
    }
    if retry_of is not None:
        job, created = retry_of.create_retry(**fields)
        if not created:
            return job, False
    else:
        job = Job.objects.create(**fields)
    if upload is not None:
        try:
            upload.mark_submitted(job)
        except ValueError:
            job.delete()
            raise
    summary: dict[str, Any] = {"action": action, "devices": count, "params": params.summary()}
    if not_sent:
        summary["not_sent"] = not_sent
    if confirmation:
        summary["typed_confirmation"] = confirmation
    if retry_of is not None:
        summary["retry_of"] = retry_of.pk
    AuditEvent.objects.record(f"guard.{action}", request=request, actor=user, target=job, summary=summary)
    job.enqueue("guard.tasks.run_actions")
    return job, True


def queue_action_matching(
    account: KnoxAccount,
    action: str,
    params: ActionParams,
    filters: dict[str, Any],
    *,
    count: int,
    user: Any,
    request: Any = None,
    confirmation: str = "",
) -> Job:
    """Queue `action` on every device of `account` matching the device list's filter whose state allows it (the
    “all matching the filter” of the device list). The job keeps the filter, never a list of ids, and plans by it
    in batches (guard.tasks.plan_matching): a million matching devices are never loaded at once. `count` is what
    the page showed and staff confirmed (check_devices(...).sendable)."""
    from guard.client import validate

    validate(action, params)
    spec = ACTIONS[action]
    if not count:
        raise ValueError("No device matching this filter can take this action.")
    job = Job.objects.create(
        kind=f"guard.{action}",
        account=account,
        created_by=user,
        total=count,
        params={"action": action, "action_params": params.summary(), "filter": filters},
        title=f"{spec.label}: {count} device{'s' if count != 1 else ''} matching the device list's filter",
    )
    summary: dict[str, Any] = {"action": action, "devices": count, "params": params.summary(), "filter": filters}
    if confirmation:
        summary["typed_confirmation"] = confirmation
    AuditEvent.objects.record(f"guard.{action}", request=request, actor=user, target=job, summary=summary)
    job.enqueue("guard.tasks.run_actions")
    return job


def failed_by_code(job: Job) -> dict[str, int]:
    """An action job's failed devices counted by Knox's (or the portal's) code."""
    rows = GuardAction.objects.filter(job=job, outcome=GuardAction.Outcome.FAILED)
    return dict(rows.values_list("code").annotate(n=models.Count("id")).order_by())


def retry_devices(job: Job) -> models.QuerySet[GuardDevice]:
    """The devices “Retry the failed devices” sends again: the job's failed devices whose failure a retry can fix
    (portal.knox.errors.PERMANENT) and that the portal still has. The job page counts these for the button and the
    typed confirmation, and queue_retry queues exactly these. A subquery, not a list of ids: a job can have
    100,000 failed devices."""
    failed = (
        GuardAction.objects.filter(job=job, outcome=GuardAction.Outcome.FAILED, device__isnull=False)
        .exclude(code__in=list(errors.PERMANENT))  # a retry cannot fix these (portal.knox.errors)
        .values("device_id")
    )
    return GuardDevice.objects.filter(pk__in=models.Subquery(failed), account=job.account_id)


def retry_outlook(job: Job) -> dict[str, Any]:
    """What an action job's page says about “Retry the failed devices” (templates/portal/_retry_note.html): how many
    devices the retry sends (exactly retry_devices, which queue_retry queues, so the button and the typed
    confirmation count them) and, by reason, the failures it leaves out: those a retry cannot fix
    (portal.knox.errors.PERMANENT), and failed rows the portal has no device for (any more)."""
    if not job.failed or not job.is_finished:
        return {"retryable": 0, "left_out": []}
    fixable, left_out = errors.retry_breakdown(failed_by_code(job))
    sendable = retry_devices(job).count()
    if fixable > sendable:
        left_out = [
            *left_out,
            ("not in the portal's records (sync devices from Knox, then act on them)", fixable - sendable),
        ]
    return {"retryable": sendable, "left_out": left_out}


def retry_device_ids(job: Job) -> list[int]:
    return list(retry_devices(job).order_by("id").values_list("pk", flat=True))


def queue_retry(job: Job, *, user: Any, request: Any = None, confirmation: str = "") -> tuple[Job, bool, int]:
    """Queue `job`'s action again for its failed devices that the portal still knows, once (Job.create_retry).

    Returns (the retry, created, failed rows left out because the portal has no device for them). A job already
    retried returns its existing retry and False. Raises ValueError with a sentence when there is nothing to retry.
    """
    from guard.tasks import params_from

    if not job.is_finished:
        raise ValueError(f"Job #{job.pk} has not finished yet; retry its failed devices when it has.")
    existing = Job.objects.filter(retry_of=job).first()
    if existing is not None:
        return existing, False, 0
    device_ids = retry_device_ids(job)
    if not device_ids:
        raise ValueError(
            "No failed device can be retried: a retry cannot fix failures Knox refused for good (wrong state, "
            "unknown device, already registered), and the others are not in the portal's records (any more); "
            "sync devices from Knox, then act on them from the device list or a spreadsheet."
        )
    retry, created = _queue_action(
        job.account,
        job.params["action"],
        params_from(job),
        user=user,
        devices=device_ids,
        request=request,
        confirmation=confirmation,
        retry_of=job,
    )
    if not created:
        return retry, False, 0
    AuditEvent.objects.record(
        "guard.retry",
        request=request,
        actor=user,
        target=retry,
        summary={"retry_of": job.pk, "devices": len(device_ids)},
    )
    return retry, True, max(0, job.failed - len(device_ids))


def queue_sync(account: KnoxAccount, *, user: Any, request: Any = None) -> Job:
    job = Job.objects.create(
        kind="guard.sync", title=f"Sync Knox Guard devices of {account}", account=account, created_by=user
    )
    AuditEvent.objects.record("guard.sync", request=request, actor=user, target=job, summary={"account": account.pk})
    job.enqueue("guard.tasks.sync_devices")
    return job


def queue_upload(upload: Upload, flags: dict[str, bool], *, user: Any, request: Any = None) -> Job:
    job = Job.objects.create(
        kind="guard.upload",
        account=upload.account,
        created_by=user,
        total=upload.valid,
        params={"upload": upload.pk, "flags": {k: bool(v) for k, v in flags.items()}},
        title=f"Upload {upload.valid} device{'s' if upload.valid != 1 else ''} to Knox Guard",
    )
    try:
        upload.mark_submitted(job)
    except ValueError:
        job.delete()
        raise
    AuditEvent.objects.record(
        "guard.upload", request=request, actor=user, target=job, summary={"devices": upload.valid, "flags": flags}
    )
    job.enqueue("guard.tasks.run_upload")
    return job


# Reads of an upload job's per-device results from Knox Guard (guard.tasks.read_upload_results).
UPLOAD_RESULTS = "guard.upload_results"


def queue_upload_results(job: Job, *, user: Any, request: Any = None) -> tuple[Job | None, bool]:
    """“Refresh results” on an upload job's page: a job that reads Knox Guard's per-device results of every part
    Knox gave an uploadID. (None, False) when no part has one; (the read already queued or running, False)
    instead of a second one; (new job, True) otherwise."""
    parts = GuardUpload.objects.filter(job=job).exclude(upload_id="").count()
    if not parts:
        return None, False
    pending = pending_upload_results(job)
    if pending is not None:
        return pending, False
    read = _new_results_read(job, user=user, parts=parts)
    AuditEvent.objects.record(
        UPLOAD_RESULTS, request=request, actor=user, target=job, summary={"parts": parts, "job": read.pk}
    )
    return read, True


def follow_upload_part(job: Job) -> Job:
    """Called by the upload job, in the transaction that applies a part Knox gave an uploadID
    (guard.tasks.GuardUploads.apply): make sure a read of the job's results will pick the part up.

    A read still queued (not claimed by a worker) reads every applied part when it starts, this one included; the
    conditional update proves it had not started before this transaction commits (a worker's claim updates the same
    row, so it waits for the commit and then sees the part). Otherwise a new read is queued: one that is already
    running may have made its list."""
    queued = (
        Job.objects.filter(kind=UPLOAD_RESULTS, params__job=job.pk, status=Job.Status.QUEUED).order_by("-id").first()
    )
    if queued is not None and Job.objects.filter(pk=queued.pk, status=Job.Status.QUEUED).update(
        version=models.F("version") + 1
    ):
        return queued
    return _new_results_read(job, user=job.created_by, parts=1)


def pending_upload_results(job: Job) -> Job | None:
    """The read of this upload job's results that is queued or running, if any."""
    return Job.objects.unfinished().filter(kind=UPLOAD_RESULTS, params__job=job.pk).order_by("-id").first()


def _new_results_read(job: Job, *, user: Any, parts: int) -> Job:
    read = Job.objects.create(
        kind=UPLOAD_RESULTS,
        account=job.account,
        created_by=user if getattr(user, "pk", None) else None,
        params={"job": job.pk},
        total=parts,
        title=f"Read Knox Guard's per-device results of job #{job.pk}",
    )
    read.enqueue("guard.tasks.read_upload_results")
    return read


def check_rows(upload: Upload, rows: list[Any]) -> None:
    """Guard's rule on staged rows: Knox Guard takes IMEIs, serial numbers or approve IDs, not MEIDs."""
    from guard.constants import KG_APPROVE_ID_MAX_LENGTH
    from portal.models import UploadRow

    for r in rows:
        if r.status == UploadRow.Status.VALID and r.kind == "meid":
            r.status, r.value = UploadRow.Status.INVALID, ""
            r.reason = "this is a MEID; Knox Guard identifies devices by IMEI or serial number"
        elif r.status == UploadRow.Status.VALID and len(r.approve_id) > KG_APPROVE_ID_MAX_LENGTH:
            r.status, r.value = UploadRow.Status.INVALID, ""
            r.reason = f"the approve ID is {len(r.approve_id)} characters; Knox Guard allows {KG_APPROVE_ID_MAX_LENGTH}"
