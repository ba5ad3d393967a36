"""KDP records: customers and their KME profile aliases (synced from Knox), staged spreadsheets, devices,
Knox transactions (one per chunk) and each device's outcome in each transaction, and reconcile reports.

Scale: built for a million devices. Device lists page by keyset (never COUNT/OFFSET), identifier search is a
range scan on an index, and per-customer device counts are kept on the customer row by the jobs that change them.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from portal.engine import KnoxRequest
from portal.knox import errors
from portal.models import AuditEvent, Job, KnoxAccount, Upload, UploadRow


class Customer(models.Model):
    account = models.ForeignKey(KnoxAccount, models.CASCADE, related_name="kdp_customers")
    customer_id = models.CharField("Knox customer ID", max_length=50)
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=40, blank=True, help_text="As Knox reports it, e.g. Verified or Pending.")
    # Kept up to date by upload/delete jobs, so pages never count a million devices.
    device_count = models.PositiveIntegerField(default=0)
    last_upload_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    present_in_knox = models.BooleanField(default=True, help_text="False when the last sync no longer found it.")

    class Meta:
        ordering = ["name", "customer_id"]
        constraints = [
            # sync_customers upserts on this pair.
            models.UniqueConstraint(fields=["account", "customer_id"], name="kdp_customer_account_id_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.customer_id} ({self.customer_id})"

    @property
    def is_pending(self) -> bool:
        return self.status.lower() == "pending"

    def recount(self) -> None:
        self.device_count = Device.objects.filter(customer=self, state=Device.State.REGISTERED).count()
        self.save(update_fields=["device_count"])


class ProfileAlias(models.Model):
    customer = models.ForeignKey(Customer, models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=200)
    profile_id = models.CharField(max_length=100, blank=True)
    synced_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "KME profile alias"
        verbose_name_plural = "KME profile aliases"
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["customer", "name"], name="kdp_alias_customer_name_uniq")]

    def __str__(self) -> str:
        return self.name


class DeviceQuerySet(models.QuerySet["Device"]):
    def matching(self, account: KnoxAccount | None, filters: dict[str, Any]) -> DeviceQuerySet:
        """The device-list filter, from plain values (they are stored in job params for "delete all matching").

        Keys: ids (device pks), q (identifier prefix), customer (pk), state, model, job (last upload/delete job), date_from and
        date_to (ISO dates, on registered_at).
        """
        qs = self.filter(account=account) if account is not None else self.all()
        if filters.get("ids"):
            qs = qs.filter(pk__in=[int(i) for i in filters["ids"]])
        if filters.get("q"):
            qs = qs.search(str(filters["q"]))
        if filters.get("customer"):
            qs = qs.filter(customer_id=int(filters["customer"]))
        if filters.get("state"):
            qs = qs.filter(state=filters["state"])
        if filters.get("model"):
            qs = qs.filter(model=filters["model"])
        if filters.get("job"):
            qs = qs.filter(last_transaction__job_id=int(filters["job"]))
        tz = timezone.get_current_timezone()
        if filters.get("date_from"):
            start = datetime.combine(date.fromisoformat(filters["date_from"]), time.min, tz)
            qs = qs.filter(registered_at__gte=start)
        if filters.get("date_to"):
            end = datetime.combine(date.fromisoformat(filters["date_to"]) + timedelta(days=1), time.min, tz)
            qs = qs.filter(registered_at__lt=end)
        return qs

    def search(self, text: str) -> DeviceQuerySet:
        """Identifier prefix search as a range scan, which every database serves from the unique index."""
        prefix = "".join(ch for ch in text.upper() if ch.isalnum())
        if not prefix:
            return self
        return self.filter(identifier__gte=prefix, identifier__lt=prefix + "\uffff")


class Device(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Being registered"
        REGISTERED = "registered", "Registered"
        FAILED = "failed", "Not registered"
        DELETED = "deleted", "Deleted"

    class Kind(models.TextChoices):
        IMEI = "imei", "IMEI"
        SERIAL = "serial", "Serial number"

    account = models.ForeignKey(KnoxAccount, models.CASCADE, related_name="kdp_devices")
    identifier = models.CharField(max_length=20, help_text="The IMEI or serial number registered with Knox.")
    kind = models.CharField(max_length=6, choices=Kind.choices)
    imei = models.CharField(max_length=20, blank=True)
    serial_number = models.CharField(max_length=20, blank=True)
    meid = models.CharField(max_length=20, blank=True)
    model = models.CharField(max_length=60, blank=True)
    customer = models.ForeignKey(Customer, models.SET_NULL, null=True, blank=True, related_name="devices")
    profile_alias = models.CharField(max_length=200, blank=True)
    order_no = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    knox_state = models.CharField(max_length=40, blank=True, help_text="Knox's own state, e.g. Verified.")
    # The job currently working on this device (upload, delete), so a second job does not race it.
    pending_job = models.ForeignKey(Job, models.SET_NULL, null=True, blank=True, related_name="+")
    last_transaction = models.ForeignKey("Transaction", models.SET_NULL, null=True, blank=True, related_name="+")
    last_code = models.CharField(max_length=20, blank=True)
    last_message = models.CharField(max_length=400, blank=True)
    # Stamped by reconcile jobs: a registered device not stamped by a run was not in Knox's list.
    seen_in_knox_at = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = DeviceQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Upserts from jobs and the identifier prefix search (DeviceQuerySet.search) rely on this index.
            models.UniqueConstraint(fields=["account", "identifier"], name="kdp_device_account_ident_uniq"),
        ]
        indexes = [
            # Device list: newest first, optionally one customer and/or state (keyset on id).
            models.Index(fields=["customer", "state", "-id"], name="kdp_device_cust_state_idx"),
            models.Index(fields=["state", "-id"], name="kdp_device_state_idx"),
            # Search across accounts by identifier prefix.
            models.Index(fields=["identifier"], name="kdp_device_identifier_idx"),
            models.Index(fields=["model", "-id"], name="kdp_device_model_idx"),
            models.Index(fields=["registered_at"], name="kdp_device_registered_idx"),
        ]

    def __str__(self) -> str:
        return self.identifier

    @property
    def last_explanation(self) -> str:
        """Knox's last answer for this device in words (errors.explain), or ""."""
        return errors.explain(self.last_code, fallback=self.last_message) if self.last_code else ""


def new_transaction_id() -> str:
    return uuid.uuid4().hex  # 32 characters: KDP_TRANSACTION_ID_MAX_LENGTH


class Transaction(KnoxRequest):
    """One Knox transaction: a chunk of at most KDP_MAX_DEVICES_PER_REQUEST devices (a portal.engine request).

    The transactionId is generated and stored (state PREPARED) before anything is sent, so a retry after a crash
    re-sends the same id instead of creating a second registration.
    """

    State = KnoxRequest.State

    account = models.ForeignKey(KnoxAccount, models.PROTECT, related_name="kdp_transactions")
    job = models.ForeignKey(Job, models.CASCADE, related_name="kdp_transactions")
    transaction_id = models.CharField(max_length=32, default=new_transaction_id)
    operation = models.CharField(max_length=6, choices=[("upload", "Register devices"), ("delete", "Delete devices")])
    generation = models.CharField(max_length=4)
    customer = models.ForeignKey(Customer, models.PROTECT, related_name="transactions")
    device_type = models.CharField(max_length=4)
    profile_alias = models.CharField(max_length=200, blank=True)
    order_no = models.CharField(max_length=100, blank=True)
    order_time = models.BigIntegerField(null=True, blank=True)
    knox_state = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    raw_status = models.JSONField(null=True, blank=True, help_text="Knox's last status answer for this transaction.")

    class Meta:
        verbose_name = "Knox transaction"
        ordering = ["-created_at", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["account", "transaction_id"], name="kdp_tx_account_txid_uniq"),
            models.UniqueConstraint(fields=["job", "sequence"], name="kdp_tx_job_sequence_uniq"),
        ]
        indexes = [
            # The dashboard chart sums registrations per day.
            models.Index(fields=["operation", "completed_at"], name="kdp_tx_op_completed_idx"),
        ]

    def __str__(self) -> str:
        return self.transaction_id

    @property
    def device_type_label(self) -> str:
        """The device type in words (Knox says IMEI or SN)."""
        return "IMEI" if self.device_type == "IMEI" else "Serial number"


class TransactionDevice(models.Model):
    """A device's outcome in one transaction (and so in one job)."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    transaction = models.ForeignKey(Transaction, models.CASCADE, related_name="devices")
    job = models.ForeignKey(Job, models.CASCADE, related_name="+")
    identifier = models.CharField(max_length=20)
    row_number = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=9, choices=Outcome.choices, default=Outcome.PENDING)
    code = models.CharField(max_length=20, blank=True)
    message = models.CharField(max_length=100, blank=True)
    data = models.CharField(max_length=400, blank=True)

    class Meta:
        verbose_name = "device outcome"
        ordering = ["id"]
        indexes = [
            # Job results table: one job's devices, filtered by outcome, in order.
            models.Index(fields=["job", "outcome", "id"], name="kdp_txdev_job_outcome_idx"),
            models.Index(fields=["transaction", "outcome"], name="kdp_txdev_tx_outcome_idx"),
            # Device timeline.
            models.Index(fields=["identifier"], name="kdp_txdev_identifier_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.identifier}: {self.outcome}"

    def explanation(self) -> str:
        from portal.knox.errors import explain

        if self.outcome != self.Outcome.FAILED:
            return ""
        return explain(self.code, fallback=self.message or self.data)


class ReconcileItem(models.Model):
    """One difference between Knox's device list and the portal's, found by a reconcile job."""

    class Drift(models.TextChoices):
        ONLY_IN_KNOX = "knox_only", "In Knox, not in the portal"
        ONLY_LOCAL = "local_only", "In the portal, not in Knox"
        OTHER_CUSTOMER = "customer", "Different customer"

    job = models.ForeignKey(Job, models.CASCADE, related_name="kdp_drift")
    identifier = models.CharField(max_length=20)
    drift = models.CharField(max_length=10, choices=Drift.choices)
    knox_customer_id = models.CharField(max_length=50, blank=True)
    local_customer_id = models.CharField(max_length=50, blank=True)
    model = models.CharField(max_length=60, blank=True)

    class Meta:
        verbose_name = "reconcile difference"
        ordering = ["drift", "identifier"]
        indexes = [models.Index(fields=["job", "drift", "identifier"], name="kdp_drift_job_idx")]

    def __str__(self) -> str:
        return f"{self.identifier}: {self.get_drift_display()}"


class RowCustomer(models.Model):
    """The customer a row of a KDP spreadsheet names in its customer column (the multi-customer upload).

    Written by kdp.tasks.check_rows while the file is read, one per row that names a customer (valid or not: a row
    whose suggested value is used later becomes valid; readers count the valid rows only); only KDP reads
    it, so it lives here rather than on the shared UploadRow. `parse_job` is the reading that wrote it (choosing
    another sheet reads the file again, and the older rows are then ignored and deleted).
    """

    upload = models.ForeignKey(Upload, models.CASCADE, related_name="+")
    parse_job = models.PositiveBigIntegerField(default=0, help_text="Upload.parse_job of the reading (0: none).")
    row_number = models.PositiveIntegerField()
    text = models.CharField(max_length=200, help_text="The customer as written in the file.")

    class Meta:
        verbose_name = "customer of a spreadsheet row"
        indexes = [
            # The preview groups by text; a job selects its rows by text (kdp.tasks.plan_items).
            models.Index(fields=["upload", "parse_job", "text"], name="kdp_rowcust_upload_idx"),
        ]

    def __str__(self) -> str:
        return f"row {self.row_number}: {self.text}"


@dataclass
class CustomerGroup:
    """The valid rows of a multi-customer spreadsheet that name one customer (or one unresolved text)."""

    texts: list[str] = field(default_factory=list)
    rows: int = 0
    customer: Customer | None = None
    problem: str = ""
    warning: str = ""

    @property
    def label(self) -> str:
        if self.customer is not None:
            return str(self.customer)
        return ", ".join(f"“{t}”" for t in self.texts) or "No customer given"

    @property
    def field_name(self) -> str:
        """The confirm form's profile-alias field for this customer."""
        return f"alias_{self.customer.pk}" if self.customer is not None else ""


def _resolve_customer(
    text: str, by_id: dict[str, Customer], by_name: dict[str, list[Customer]], operation: str, account: KnoxAccount
) -> tuple[Customer | None, str]:
    """A customer cell's customer: its Knox customer ID, or a name only one customer has; else why not."""
    key = text.strip().casefold()
    customer = by_id.get(key)
    if customer is None:
        named = by_name.get(key, [])
        if len(named) > 1:
            ids = ", ".join(c.customer_id for c in named)
            return None, (
                f"{len(named)} customers of {account} are called “{text}” (Knox customer IDs {ids}); write the Knox "
                "customer ID in the file instead of the name"
            )
        customer = named[0] if named else None
    if customer is None:
        return None, (
            f"{account} has no customer with the Knox customer ID or name “{text}”; check the spelling, or refresh "
            "the customer list if the customer was just created in Knox"
        )
    if customer.is_pending and operation == Upload.Operation.UPLOAD:
        return customer, (
            f"{customer.name or customer.customer_id} is still pending verification in Knox; its devices can be "
            "registered once Samsung verifies the customer"
        )
    return customer, ""


def file_customers(upload: Upload) -> list[CustomerGroup] | None:
    """The valid rows of a spreadsheet with a customer column, grouped by the customer each names, resolved
    against the portal's customer list now (so a refresh of the list fixes an unknown name without a new upload).
    Groups that cannot be sent carry a `problem`. None when no valid row names a customer (a one-customer file).
    """
    valid = UploadRow.objects.filter(upload=upload, status=UploadRow.Status.VALID).values("row_number")
    staged = RowCustomer.objects.filter(upload=upload, parse_job=upload.parse_job_id or 0, row_number__in=valid)
    counts = dict(staged.values_list("text").annotate(n=models.Count("id")).order_by())
    if not counts:
        return None
    known = list(Customer.objects.filter(account=upload.account, present_in_knox=True))
    by_id = {c.customer_id.strip().casefold(): c for c in known}
    by_name: dict[str, list[Customer]] = defaultdict(list)
    for c in known:
        if c.name.strip():
            by_name[c.name.strip().casefold()].append(c)
    groups: dict[Any, CustomerGroup] = {}
    for text, n in sorted(counts.items()):
        customer, problem = _resolve_customer(text, by_id, by_name, upload.operation, upload.account)
        key = customer.pk if customer is not None else ("?", text)
        group = groups.setdefault(key, CustomerGroup(customer=customer, problem=problem))
        group.texts.append(text)
        group.rows += n
    unnamed = upload.valid - sum(counts.values())
    if unnamed > 0:
        groups[("?", "")] = CustomerGroup(
            rows=unnamed,
            problem="the customer column is empty on these rows; write the Knox customer ID (or name) of each device",
        )
    if upload.operation == Upload.Operation.DELETE:
        for group in groups.values():
            if group.customer is not None and not group.problem:
                other = mismatched_devices(upload, group.customer, texts=group.texts).count()
                if other:
                    group.warning = (
                        f"{other} of these device{'s are' if other != 1 else ' is'} registered to another customer "
                        "in the portal's records; Knox will refuse to delete them from this one (40000044)"
                    )
    return sorted(groups.values(), key=lambda g: (bool(g.problem), g.label.casefold()))


def _rows_naming(upload: Upload, texts: list[str]) -> models.QuerySet[RowCustomer]:
    return RowCustomer.objects.filter(upload=upload, parse_job=upload.parse_job_id or 0, text__in=texts)


def mismatched_devices(
    upload: Upload, customer: Customer, *, texts: list[str] | None = None
) -> models.QuerySet[Device]:
    """The devices of a delete's valid rows (or of the rows naming `texts`) that the portal's records show
    registered to a customer other than `customer`: Knox refuses to delete those from `customer` (40000044).

    Driven from the spreadsheet's rows (at most SPREADSHEET_MAX_ROWS) into the unique (account, identifier) index,
    never from the account's devices (a million)."""
    rows = UploadRow.objects.filter(upload=upload, status=UploadRow.Status.VALID)
    if texts is not None:
        rows = rows.filter(row_number__in=_rows_naming(upload, texts).values("row_number"))
    return (
        Device.objects.filter(
            account=upload.account, identifier__in=rows.values("value"), state=Device.State.REGISTERED
        )
        .exclude(customer=customer)
        .exclude(customer=None)
    )


@dataclass
class RecordedCustomers:
    """Who the portal's records say the valid rows of a delete are registered to."""

    by_customer: list[tuple[Customer, int]]
    unregistered: int  # devices the portal has no registration for (unknown, deleted or never registered)


def recorded_customers(upload: Upload) -> RecordedCustomers:
    values = UploadRow.objects.filter(upload=upload, status=UploadRow.Status.VALID).values("value")
    registered = Device.objects.filter(
        account=upload.account, identifier__in=values, state=Device.State.REGISTERED
    ).exclude(customer=None)
    counts = dict(registered.values_list("customer").annotate(n=models.Count("id")).order_by())
    customers = Customer.objects.in_bulk(list(counts))
    by_customer = sorted(((customers[pk], n) for pk, n in counts.items()), key=lambda cn: (-cn[1], str(cn[0])))
    return RecordedCustomers(by_customer, max(0, upload.valid - sum(counts.values())))


def mismatch_sample(upload: Upload, customer: Customer, limit: int = 20) -> tuple[int, list[dict[str, Any]]]:
    """How many valid rows of a delete are registered to another customer than `customer`, and a few of them (row,
    device, the customer the portal has it under), in row order, for the preview and the refusal."""
    devices = mismatched_devices(upload, customer)
    n = devices.count()
    owners = dict(devices.order_by("id").values_list("identifier", "customer")[:limit])
    names = Customer.objects.in_bulk([pk for pk in owners.values() if pk])
    rows = UploadRow.objects.filter(upload=upload, status=UploadRow.Status.VALID, value__in=list(owners))
    sample = [
        {"row_number": number, "value": value, "customer": names.get(owners[value])}
        for number, value in rows.order_by("row_number").values_list("row_number", "value")
    ]
    return n, sample


def mismatch_refusal(upload: Upload, customer: Customer) -> str:
    """Why deleting a spreadsheet's devices from `customer` is refused before Knox (the web form and kdp_delete
    say the same), or "" when the portal's records do not contradict it."""
    n, sample = mismatch_sample(upload, customer, limit=3)
    if not n:
        return ""
    examples = "; ".join(
        f"row {r['row_number']} ({r['value']}) is registered to {r['customer'] or 'another customer'}" for r in sample
    )
    return (
        f"{n} of the {upload.valid} devices {'are' if n != 1 else 'is'} registered to another customer than "
        f"{customer.name or customer.customer_id} in the portal's records ({examples}). Knox refuses to delete a "
        "device from a customer it is not registered to. Choose that customer, or delete each device from the "
        "customer it is registered to"
    )


def upload_jobs(upload: Upload) -> models.QuerySet[Job]:
    """The upload/delete jobs a staged spreadsheet was submitted as (one per customer), oldest first."""
    return Job.objects.filter(kind__in=("kdp.upload", "kdp.delete"), params__upload=upload.pk).order_by("pk")


def can_choose_again(upload: Upload) -> bool:
    """A submitted spreadsheet whose every job ended with devices that failed (Knox refused them: wrong customer,
    a customer pending verification) can be read again and submitted anew: the rows that succeeded are then
    flagged by the row checks, and the staff pick the customer again."""
    if upload.status != Upload.Status.SUBMITTED or upload.file_deleted_at is not None:
        return False
    jobs = list(upload_jobs(upload).values_list("status", "failed"))
    return bool(jobs) and all(status in Job.FINISHED for status, _ in jobs) and any(failed for _, failed in jobs)


def failed_by_code(job: Job) -> dict[str, int]:
    """A transfer job's failed devices counted by Knox's (or the portal's) code."""
    if job.kind not in ("kdp.upload", "kdp.delete"):
        return {}
    rows = TransactionDevice.objects.filter(job=job, outcome=TransactionDevice.Outcome.FAILED)
    return dict(rows.values_list("code").annotate(n=models.Count("id")).order_by())


def retryable_failures(job: Job) -> models.QuerySet[TransactionDevice]:
    """The failed devices a retry can fix: not those Knox refused for good (portal.knox.errors.PERMANENT)."""
    failed = TransactionDevice.objects.filter(job=job, outcome=TransactionDevice.Outcome.FAILED)
    return failed.exclude(code__in=list(errors.PERMANENT))


def queue_retry(job: Job, *, user: Any, request: Any = None) -> tuple[Job, bool]:
    """Queue a new job for just the failed devices of a finished upload/delete job that a retry can fix, once:
    returns (the retry, created); a job already retried returns its existing retry and False (Job.create_retry)."""
    failed = retryable_failures(job).count()
    if not job.is_finished or job.kind not in ("kdp.upload", "kdp.delete") or not failed:
        raise ValueError(
            "Only a finished upload or delete job with failed devices can be retried, and only failures a retry can "
            "fix (not devices already registered, unknown to Knox or registered to another customer)."
        )
    first = job.kdp_transactions.order_by("sequence").first()
    params = {
        "retry_of": job.pk,
        "profile_alias": first.profile_alias if first else "",
        "order_no": job.params.get("order_no", ""),
        "order_time": job.params.get("order_time"),
    }
    retry, created = job.create_retry(
        kind=job.kind,
        account=job.account,
        created_by=user,
        params=params,
        total=failed,
        title=f"Retry {failed} failed device{'s' if failed != 1 else ''} of job #{job.pk}",
    )
    if created:
        AuditEvent.objects.record(
            "kdp.retry", request=request, actor=user, target=retry, summary={"retry_of": job.pk, "devices": failed}
        )
        retry.enqueue("kdp.tasks.run_transfer")
    return retry, created


def queue_delete_matching(account: KnoxAccount, filters: dict[str, Any], *, user: Any, request: Any = None) -> Job:
    """Queue the deletion of every registered device matching the device-list filter."""
    n = Device.objects.matching(account, filters).filter(state=Device.State.REGISTERED).exclude(customer=None).count()
    if not n:
        raise ValueError("No registered device matches this filter.")
    job = Job.objects.create(
        kind="kdp.delete",
        account=account,
        created_by=user,
        params={"filter": filters},
        total=n,
        title=f"Delete {n} device{'s' if n != 1 else ''} from the device list",
    )
    AuditEvent.objects.record(
        "kdp.delete", request=request, actor=user, target=job, summary={"filter": filters, "devices": n}
    )
    job.enqueue("kdp.tasks.run_transfer")
    return job


def queue_customer_sync(account: KnoxAccount, *, user: Any, request: Any = None) -> Job:
    job = Job.objects.create(
        kind="kdp.customers", title=f"Refresh customers of {account}", account=account, created_by=user
    )
    AuditEvent.objects.record(
        "kdp.customers_refresh", request=request, actor=user, target=job, summary={"account": account.pk}
    )
    job.enqueue("kdp.tasks.sync_customers")
    return job


def queue_reconcile(account: KnoxAccount, *, user: Any, request: Any = None, via: str = "portal") -> Job:
    job = Job.objects.create(
        kind="kdp.reconcile", title=f"Reconcile {account} with Knox", account=account, created_by=user
    )
    AuditEvent.objects.record(
        "kdp.reconcile", request=request, actor=user, target=job, summary={"account": account.pk, "via": via}
    )
    job.enqueue("kdp.tasks.run_reconcile")
    return job


@dataclass
class Target:
    """One customer a staged spreadsheet's rows go to, as one job.

    `rows` picks the valid rows (kdp.tasks.plan_items); None means all of them:
    {"file_customer": [texts], "parse_job": n}: the rows whose customer column holds one of the texts;
    {"recorded_customer": True}: the rows whose device the portal records as registered to `customer`.
    """

    customer: Customer
    devices: int
    profile_alias: str = ""
    rows: dict[str, Any] | None = None


def submit_upload(
    upload: Upload,
    *,
    user: Any,
    customer: Customer,
    profile_alias: str = "",
    order_no: str = "",
    order_time: int | None = None,
    request: Any = None,
) -> Job:
    """Queue the upload/delete of a staged spreadsheet's valid rows to `customer` (READY uploads only, once)."""
    target = Target(customer, upload.valid, profile_alias)
    return submit_targets(upload, [target], user=user, order_no=order_no, order_time=order_time, request=request)[0]


def submit_targets(
    upload: Upload,
    targets: list[Target],
    *,
    user: Any,
    order_no: str = "",
    order_time: int | None = None,
    request: Any = None,
) -> list[Job]:
    """Queue one upload/delete job per target customer for a READY staged spreadsheet, all or none: the upload
    turns SUBMITTED (once) in the same database transaction that creates the jobs. Raises ValueError if the
    spreadsheet is not READY or no target has a device."""
    targets = [t for t in targets if t.devices > 0]
    if not targets:
        raise ValueError("No customer has a device to send; nothing was queued.")
    verb = "Register" if upload.operation == Upload.Operation.UPLOAD else "Delete"
    with transaction.atomic():
        jobs = []
        for t in targets:
            params: dict[str, Any] = {
                "upload": upload.pk,
                "customer": t.customer.pk,
                "profile_alias": t.profile_alias,
                "order_no": order_no,
                "order_time": order_time,
            }
            if t.rows is not None:
                params["rows"] = t.rows
            name = t.customer.name or t.customer.customer_id
            jobs.append(
                Job.objects.create(
                    kind=f"kdp.{upload.operation}",
                    account=upload.account,
                    created_by=user,
                    params=params,
                    total=t.devices,
                    title=f"{verb} {t.devices} device{'s' if t.devices != 1 else ''} for {name}",
                )
            )
        upload.mark_submitted(jobs[0])  # ValueError: rolls the jobs back with it
        for job, t in zip(jobs, targets, strict=True):
            AuditEvent.objects.record(
                f"kdp.{upload.operation}",
                request=request,
                actor=user,
                target=job,
                summary={
                    "file": upload.filename,
                    "devices": t.devices,
                    "customer": t.customer.customer_id,
                    "profile_alias": t.profile_alias,
                    "order_no": order_no,
                    "skipped_rows": upload.problems + upload.skipped,
                }
                | ({"customers": len(targets)} if len(targets) > 1 else {}),
            )
            job.enqueue("kdp.tasks.run_transfer")
    return jobs
