"""KDP background work (django-q2 tasks; each takes a Job primary key).

- `parse_upload`: read a staged spreadsheet into UploadRow records with verdicts and local-record checks.
- `run_transfer`: upload or delete devices at Knox, chunk by chunk, and record every device's outcome.
- `sync_customers`: refresh customers and their KME profile aliases from Knox.
- `run_reconcile`: page through Knox's device list and report drift from the portal's records.

How a transfer stays exactly-once (knox-api.md §3; issue "crash safety"):
1. Plan: split the devices into chunks of at most KDP_CHUNK_SIZE; in one database transaction per chunk, give
   it a Transaction with a fresh transactionId (state PREPARED) and its TransactionDevice rows, and mark its
   devices as handled by this job. A chunk is sent only once its plan is committed; the first chunk is sent
   while the rest are planned (portal.engine.Planning), and a resumed worker plans on where the last stopped.
2. Send a PREPARED chunk: commit `send_attempted_at` first, then PUT with the stored transactionId. A chunk
   that was being sent when a worker died is first looked up at Knox by its transactionId; if Knox has it, it
   is never sent again.
3. Poll SUBMITTED chunks until Knox says Complete/Rejected, then apply the outcome in one database
   transaction: device outcomes, device records, the chunk's state and the job's counters together.
The job's lease (portal.models.Job.claim) makes sure only one worker does this at a time.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from kdp.client import KdpClient, Submission, TransactionStatus, device_type_for
from kdp.constants import (
    KDP_MAX_DEVICES_PER_REQUEST,
    KDP_POLL_TIMEOUT_SECONDS,
    POLL_BACKOFF,
    POLL_FIRST_DELAY_SECONDS,
    POLL_MAX_INTERVAL_SECONDS,
)
from kdp.models import (
    Customer,
    Device,
    ProfileAlias,
    ReconcileItem,
    RowCustomer,
    Transaction,
    TransactionDevice,
    retryable_failures,
)
from portal.db import db_datetime, insert_rows
from portal.engine import ABSENT, Absent, Protocol, Timings, drive, record_outcomes
from portal.knox import errors
from portal.models import Job, LeaseLost, Upload, UploadRow
from portal.tasks import run_job
from portal.uploads import STAGE_BATCH, StagedRow

logger = logging.getLogger(__name__)

DASHBOARD_STATE_CACHE_KEY = "kdp:dashboard:by_state"
ACTIVE = (Job.Status.QUEUED, Job.Status.RUNNING)
BUSY_MESSAGE = "another job is working on this device"
# Whole-request refusals that will refuse every other chunk of the job the same way.
JOB_LEVEL_CODES = {"40000011", "4042104", "40400001", "40300000", "4002101", "4010000"}


def chunk_size() -> int:
    return max(1, min(settings.KDP_CHUNK_SIZE, KDP_MAX_DEVICES_PER_REQUEST))


# --- checks of staged rows (registered in kdp/apps.py; portal.uploads calls it while staging) -----------------


def check_rows(upload: Upload, rows: list[StagedRow]) -> None:
    """KDP's own rules on valid rows: no MEIDs, and the portal's records (already registered, job in flight)."""
    for r in rows:
        if r.status == UploadRow.Status.VALID and r.kind == "meid":
            # knox-api.md §6 q2: KDP takes IMEIs and serial numbers only.
            r.status, r.value = UploadRow.Status.INVALID, ""
            r.reason = (
                "this is a MEID; Knox Deployment Program registers IMEIs and serial numbers, so use the device's IMEI"
            )
    values = [r.value for r in rows if r.status == UploadRow.Status.VALID]
    if values and _account_has_devices(upload.account_id):
        _check_records(upload, rows, values)
    _keep_customers(upload, rows)


def _keep_customers(upload: Upload, rows: list[StagedRow]) -> None:
    """Record the customer column of every row that names one (the multi-customer upload). Rows that are not
    valid are kept too: using a row's suggested value in the preview (portal.uploads.apply_suggestion) makes it
    valid later, and it must still go to its customer; the readers count valid rows only."""
    parse_job = upload.parse_job_id or 0
    # A reading of another sheet or column starts a new parse job: the older reading's customers go, in batches
    # (one DELETE of 200,000 rows holds SQLite's write lock for seconds; portal.uploads.delete_rows).
    older = RowCustomer.objects.filter(upload=upload).exclude(parse_job=parse_job)
    while ids := list(older.values_list("pk", flat=True)[:STAGE_BATCH]):
        RowCustomer.objects.filter(pk__in=ids).delete()
    named = [r for r in rows if r.status != UploadRow.Status.SKIPPED and r.customer.strip()]
    if named:
        RowCustomer.objects.bulk_create(
            RowCustomer(upload=upload, parse_job=parse_job, row_number=r.row_number, text=r.customer.strip())
            for r in named
        )


def _check_records(upload: Upload, rows: list[StagedRow], values: list[str]) -> None:
    known = {
        d["identifier"]: d
        for d in Device.objects.filter(account=upload.account, identifier__in=values).values(
            "identifier", "state", "customer__name", "customer__customer_id", "pending_job_id", "pending_job__status"
        )
    }
    for r in rows:
        d = known.get(r.value) if r.status == UploadRow.Status.VALID else None
        if d is None:
            continue
        if d["pending_job_id"] and d["pending_job__status"] in ACTIVE:
            r.status = UploadRow.Status.IN_FLIGHT
            r.reason = f"job #{d['pending_job_id']} is already working on this device; wait for it to finish"
        elif upload.operation == Upload.Operation.UPLOAD and d["state"] == Device.State.REGISTERED:
            r.status = UploadRow.Status.REGISTERED
            r.reason = (
                f"already registered to {d['customer__name'] or d['customer__customer_id']} "
                f"({d['customer__customer_id']}); delete it there first to move it"
            )


def _account_has_devices(account_id: int) -> bool:
    # A first upload for an account has nothing to compare with; skip a lookup per batch of 5,000 rows.
    return Device.objects.filter(account_id=account_id).exists()


# --- planning -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanItem:
    identifier: str
    kind: str  # "imei" | "serial"
    customer_pk: int
    row_number: int | None = None
    order_no: str = ""
    model: str = ""


def plan_items(job: Job) -> Iterator[PlanItem]:
    """The devices a transfer job acts on, from its source: a staged upload, a failed-device retry or a selection."""
    p = job.params
    if "upload" in p:
        rows = UploadRow.objects.filter(upload_id=p["upload"], status=UploadRow.Status.VALID).order_by("row_number")
        chosen = p.get("rows") or {}
        if "file_customer" in chosen:
            # One customer of a multi-customer spreadsheet: the rows whose customer column names it.
            named = RowCustomer.objects.filter(
                upload_id=p["upload"], parse_job=chosen.get("parse_job", 0), text__in=chosen["file_customer"]
            )
            rows = rows.filter(row_number__in=named.values("row_number"))
        if chosen.get("recorded_customer"):
            # "Delete each device from the customer it is registered to": this job's customer's devices.
            mine = Device.objects.filter(account=job.account, customer_id=p["customer"], state=Device.State.REGISTERED)
            rows = rows.filter(value__in=mine.values("identifier"))
        for r in rows.values_list("value", "kind", "row_number", "order_no", "model").iterator(chunk_size=5000):
            yield PlanItem(r[0], r[1], p["customer"], r[2], r[3], r[4])
    elif "retry_of" in p:
        failed = retryable_failures(Job(pk=p["retry_of"]))
        rows = failed.values_list("identifier", "row_number", "transaction__customer_id", "transaction__device_type")
        for identifier, row_number, customer_pk, device_type in rows.order_by("id").iterator(chunk_size=5000):
            kind = "imei" if device_type == "IMEI" else "serial"
            yield PlanItem(identifier, kind, p.get("customer") or customer_pk, row_number)
    elif "filter" in p:
        # Delete from the device list: the registered devices matching the filter when the job was queued.
        qs = (
            Device.objects.matching(job.account, p["filter"])
            .filter(state=Device.State.REGISTERED)
            .exclude(customer=None)
        )
        for identifier, kind, customer_pk in (
            qs.values_list("identifier", "kind", "customer_id").order_by("id").iterator(chunk_size=5000)
        ):
            yield PlanItem(identifier, kind, customer_pk)
    else:
        raise ValueError(f"job {job.pk} has no device source")


def plan(job: Job) -> int:
    """Plan every chunk of `job` at once (what `plan_chunks` does a chunk at a time); return the job's total."""
    deque(plan_chunks(job), maxlen=0)  # run the generator to its end: every chunk planned and committed
    return Job.objects.values_list("total", flat=True).get(pk=job.pk)


def plan_chunks(job: Job, owner: str = "") -> Iterator[int]:
    """Create the job's chunks one at a time, each in its own database transaction (its Transaction, its
    TransactionDevice rows and the claim on its devices), yielding each chunk's sequence once it is committed, so
    the first chunk can be sent while the rest are planned.

    1. Devices another active job is working on are recorded as failed outcomes straight away (they are not
       sent), and counted as failed with their chunk, so the job's counters always add up to its total.
    2. Resumable: devices already planned for the job (a worker died mid-plan) are skipped, so no device is in
       two chunks; the job's total is set when the last chunk is planned.
    3. With `owner`, a chunk commits only while `owner` holds the job's lease (LeaseLost otherwise): a worker
       whose job was taken over plans nothing more, so it cannot plan a device the new worker plans too.
    """
    planned = set(TransactionDevice.objects.filter(job=job).values_list("identifier", flat=True))
    sequence = Transaction.objects.filter(job=job).aggregate(last=Max("sequence"))["last"] or 0
    # Read the whole source first: a cursor kept open across the chunks' commits would also see (SQLite) the
    # devices those commits change.
    items = [i for i in plan_items(job) if i.identifier not in planned]
    for (customer_pk, kind), chunk in _chunked(items):
        sequence += 1
        with transaction.atomic():
            _plan_chunk(job, owner, sequence, customer_pk, kind, chunk)
        yield sequence
    total = len(planned) + len(items)
    Job.objects.filter(pk=job.pk).update(total=total, version=F("version") + 1)
    job.total = total


def _chunked(items: list[PlanItem]) -> Iterator[tuple[tuple[int, str], list[PlanItem]]]:
    """The chunks of at most chunk_size() devices, one customer and device kind each, in the order of the source."""
    groups: dict[tuple[int, str], list[PlanItem]] = defaultdict(list)
    for item in items:
        groups[(item.customer_pk, item.kind)].append(item)
    for key, group in groups.items():
        for start in range(0, len(group), chunk_size()):
            yield key, group[start : start + chunk_size()]


def _plan_chunk(job: Job, owner: str, sequence: int, customer_pk: int, kind: str, chunk: list[PlanItem]) -> None:
    """One chunk's rows and device claims (inside the caller's transaction)."""
    now = timezone.now()
    holder = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease_owner=owner) if owner else None
    # The first write of the transaction: it waits for (PostgreSQL: the row lock; SQLite: the write lock) and then
    # sees a takeover committed before it.
    if holder is not None and not holder.update(heartbeat_at=now):
        raise LeaseLost(f"job {job.pk} was taken over by another worker while it was being planned")
    p = job.params
    operation = "upload" if job.kind == "kdp.upload" else "delete"
    busy = _claim_devices(job, job.account, chunk, operation, now)
    tx = Transaction.objects.create(
        account=job.account,
        job=job,
        sequence=sequence,
        operation=operation,
        generation=job.account.kdp_generation,
        customer_id=customer_pk,
        device_type=device_type_for(kind),
        profile_alias=p.get("profile_alias", ""),
        order_no=p.get("order_no", ""),
        order_time=p.get("order_time"),
        device_count=len(chunk) - len(busy),
    )
    insert_rows(
        TransactionDevice,
        ("transaction", "job", "identifier", "row_number", "outcome", "code", "message", "data"),
        _outcome_rows(tx, job, chunk, busy),
    )
    if len(busy) == len(chunk):
        Transaction.objects.filter(pk=tx.pk).update(state=Transaction.State.FAILED, knox_message="nothing to send")
    if busy:
        Job.objects.filter(pk=job.pk).update(failed=F("failed") + len(busy))


def _outcome_rows(tx: Transaction, job: Job, chunk: list[PlanItem], busy: dict[str, str]) -> Iterable[tuple]:
    """A TransactionDevice row per device: pending, or failed at once when another job holds the device."""
    for i in chunk:
        if i.identifier in busy:
            yield (tx.pk, job.pk, i.identifier, i.row_number, "failed", "BUSY", BUSY_MESSAGE, busy[i.identifier])
        else:
            yield (tx.pk, job.pk, i.identifier, i.row_number, "pending", "", "", "")


# New Device rows made while planning (every non-null column without a database default).
DEVICE_FIELDS = (
    "account",
    "identifier",
    "kind",
    "imei",
    "serial_number",
    "meid",
    "model",
    "profile_alias",
    "order_no",
    "state",
    "knox_state",
    "last_code",
    "last_message",
    "created_at",
    "updated_at",
)


def _claim_devices(job: Job, account: Any, chunk: list[PlanItem], operation: str, now: datetime) -> dict[str, str]:
    """Create missing Device rows, mark the chunk's devices as handled by `job`; return those another active job
    already holds (identifier → reason)."""
    identifiers = [i.identifier for i in chunk]
    if operation == "upload":
        stamp = db_datetime(now)
        insert_rows(
            Device,
            DEVICE_FIELDS,
            (
                (
                    account.pk,
                    i.identifier,
                    i.kind,
                    i.identifier if i.kind == "imei" else "",
                    i.identifier if i.kind == "serial" else "",
                    "",
                    i.model,
                    "",
                    i.order_no,
                    Device.State.PENDING.value,
                    "",
                    "",
                    "",
                    stamp,
                    stamp,
                )
                for i in chunk
            ),
            ignore_conflicts=True,
        )
    rows = Device.objects.select_for_update().filter(account=account, identifier__in=identifiers)
    busy = {
        ident: f"job #{pending}"
        for ident, pending in rows.filter(pending_job__status__in=ACTIVE)
        .exclude(pending_job=job)
        .values_list("identifier", "pending_job_id")
    }
    rows.exclude(identifier__in=list(busy)).update(pending_job=job, updated_at=now)
    return busy


# --- transfer (a portal.engine protocol) -------------------------------------------------------------------


def run_transfer(job_pk: int) -> None:
    run_job(job_pk, lambda job, owner: drive(job, owner, Transfer(job)))


class Transfer(Protocol):
    """Upload or delete devices at Knox: one Transaction per chunk, sent with its stored transactionId and read
    back by it (GET transactions?transactionId=…, knox-api.md §3.6)."""

    model = Transaction
    client_class = KdpClient
    job_level_codes = JOB_LEVEL_CODES

    @property  # type: ignore[override]
    def timings(self) -> Timings:
        """How a sent transaction is read back (knox-api.md §3.6: Knox settles one in seconds to minutes). The
        first read waits POLL_FIRST_DELAY_SECONDS, no less than Knox needs (KDP_PROCESSING_SECONDS), so it does not
        spend a rate-limit slot to hear "Progress". Read when used, so a test against a faster sandbox can
        shorten it."""
        return Timings(POLL_FIRST_DELAY_SECONDS, POLL_BACKOFF, POLL_MAX_INTERVAL_SECONDS, KDP_POLL_TIMEOUT_SECONDS)

    def plan(self) -> None:
        plan(self.job)

    def plan_steps(self) -> Iterator[int]:
        return plan_chunks(self.job, self.owner)

    def send_spacing(self) -> float:
        return self.client.session.limiter(self.client.service).interval

    def send(self, tx: Transaction) -> None:
        account = self.job.account
        identifiers = list(
            tx.devices.filter(outcome=TransactionDevice.Outcome.PENDING).values_list("identifier", flat=True)
        )
        self.client.submit(
            Submission(
                transaction_id=tx.transaction_id,
                operation=tx.operation,
                reseller_id=account.reseller_id,
                customer_id=tx.customer.customer_id,
                device_type=tx.device_type,
                devices=identifiers,
                vendor_id=account.vendor_id,
                order_no=tx.order_no,
                order_time=tx.order_time,
                profile_alias=tx.profile_alias,
            )
        )

    def poll(self, tx: Transaction) -> TransactionStatus | None:
        status = self.client.status(tx.transaction_id)
        if status.is_terminal:
            return status
        Transaction.objects.filter(pk=tx.pk).update(knox_state=status.state[:20])
        return None

    def lookup(self, tx: Transaction) -> TransactionStatus | Absent:
        """Knox keys a transaction on our transactionId: it either has it (sent before the answer was lost) or not."""
        status = self.client.status(tx.transaction_id)
        return status if status.found else ABSENT

    def refused_state(self, e: errors.KnoxError) -> str:
        return Transaction.State.REJECTED if e.status == 404 and e.code == "4042104" else Transaction.State.FAILED

    def apply(self, tx: Transaction, status: TransactionStatus) -> None:
        """Record Knox's verdict for every device of a finished transaction, all in one database transaction."""
        with transaction.atomic():
            tx = Transaction.objects.select_for_update().get(pk=tx.pk)
            if tx.is_terminal:
                return  # applied already (a resumed worker polled it again)
            rejected = status.state == "Rejected"
            pending = tx.devices.filter(outcome=TransactionDevice.Outcome.PENDING)
            failed: list[TransactionDevice] = []
            # Pairs, not model instances: 1,000 instances cost more than the rest of the apply (profile, issue 17).
            for pk, identifier in pending.values_list("pk", "identifier"):
                failure = status.failures.get(identifier)
                if rejected or failure is not None:
                    failed.append(_failed_outcome(pk, identifier, failure, tx.knox_code))
            TransactionDevice.objects.bulk_update(failed, ["outcome", "code", "message", "data"], batch_size=1000)
            # Every device of the chunk still pending is one Knox reported no failure for.
            succeeded = pending.update(outcome=TransactionDevice.Outcome.SUCCEEDED)
            _update_devices(tx, succeeded, failed)
            record_outcomes(
                self.job,
                tx,
                Transaction.State.REJECTED if rejected else Transaction.State.COMPLETE,
                succeeded,
                len(failed),
                knox_state=status.state[:20],
                polls=F("polls") + 1,
                raw_status={
                    "state": status.state,
                    "failures": {k: vars(v) for k, v in list(status.failures.items())[:1000]},
                },
            )

    def fail(self, tx: Transaction, state: str, code: str, message: str, detail: str = "") -> None:
        """Every still-pending device of `tx` fails with `code`: Knox refused it, or it could not be asked."""
        with transaction.atomic():
            tx = Transaction.objects.select_for_update().get(pk=tx.pk)
            if tx.is_terminal:
                return
            pending = list(tx.devices.filter(outcome=TransactionDevice.Outcome.PENDING))
            for d in pending:
                d.outcome, d.code, d.message, d.data = (
                    TransactionDevice.Outcome.FAILED,
                    code[:20],
                    message[:100],
                    (detail or message)[:400],
                )
            TransactionDevice.objects.bulk_update(pending, ["outcome", "code", "message", "data"], batch_size=1000)
            _update_devices(tx, 0, pending)
            record_outcomes(self.job, tx, state, 0, len(pending), code=code, message=message)

    def finish(self, summary: str) -> None:
        _recount_customers(self.job)
        self.job.finish(summary)


def _failed_outcome(pk: int, identifier: str, failure: Any, knox_code: str) -> TransactionDevice:
    """A device's failed outcome: Knox's failure for it, or (None) the whole transaction rejected."""
    return TransactionDevice(
        pk=pk,
        identifier=identifier,
        outcome=TransactionDevice.Outcome.FAILED,
        code=(failure.code if failure else knox_code or "REJECTED")[:20],
        message=(failure.message if failure else "REJECTED")[:100],
        data=(failure.data if failure else "Knox rejected the whole transaction")[:400],
    )


def _update_devices(tx: Transaction, succeeded: int, failed: list[TransactionDevice]) -> None:
    """The device records of a chunk's outcomes: its `succeeded` devices (those its TransactionDevice rows say
    succeeded, read in the statement: no 1,000-value IN list) and its `failed` ones."""
    now = timezone.now()
    devices = Device.objects.filter(account_id=tx.account_id)
    if succeeded:
        ok = devices.filter(
            identifier__in=tx.devices.filter(outcome=TransactionDevice.Outcome.SUCCEEDED).values("identifier")
        )
        if tx.operation == "upload":
            ok.update(
                state=Device.State.REGISTERED,
                customer_id=tx.customer_id,
                profile_alias=tx.profile_alias,
                registered_at=now,
                last_transaction=tx,
                last_code="",
                last_message="",
                updated_at=now,
                **({"order_no": tx.order_no} if tx.order_no else {}),
            )
        else:
            ok.update(state=Device.State.DELETED, last_transaction=tx, last_code="", last_message="", updated_at=now)
    by_code: dict[tuple[str, str], list[str]] = defaultdict(list)
    for d in failed:
        by_code[(d.code, d.message)].append(d.identifier)
    for (code, message), identifiers in by_code.items():
        # A failed upload leaves an earlier registration as it was; a device never registered is "not registered".
        devices.filter(identifier__in=identifiers).update(
            last_transaction=tx, last_code=code, last_message=message, updated_at=now
        )
        if tx.operation == "upload":
            devices.filter(identifier__in=identifiers, state=Device.State.PENDING).update(state=Device.State.FAILED)


def _recount_customers(job: Job) -> None:
    """Release the job's devices and refresh the device counts of the customers it touched."""
    now = timezone.now()
    Device.objects.filter(pending_job=job).update(pending_job=None)
    cache.delete(DASHBOARD_STATE_CACHE_KEY)  # the dashboard's per-state counts changed
    customers = set(Transaction.objects.filter(job=job).values_list("customer_id", flat=True))
    for customer in Customer.objects.filter(pk__in=customers):
        customer.recount()
        if job.kind == "kdp.upload":
            Customer.objects.filter(pk=customer.pk).update(last_upload_at=now)


# --- customers ----------------------------------------------------------------------------------------------


def sync_customers(job_pk: int) -> None:
    run_job(job_pk, _sync_customers)


def _sync_customers(job: Job, owner: str) -> None:
    client = KdpClient(job.account)
    found = client.customers()
    job.set_total(len(found))
    now = timezone.now()
    seen = []
    for info in found:
        if not info.customer_id:
            continue
        customer, _ = Customer.objects.update_or_create(
            account=job.account,
            customer_id=info.customer_id,
            defaults={"name": info.name, "status": info.status, "synced_at": now, "present_in_knox": True},
        )
        seen.append(customer.pk)
        aliases = client.profile_aliases(info.customer_id)
        for name, profile_id in aliases:
            ProfileAlias.objects.update_or_create(
                customer=customer, name=name, defaults={"profile_id": profile_id, "synced_at": now}
            )
        customer.aliases.exclude(name__in=[n for n, _ in aliases]).delete()
        job.add_progress(succeeded=1)
        job.heartbeat(owner)
    Customer.objects.filter(account=job.account).exclude(pk__in=seen).update(present_in_knox=False)


# --- reconcile ----------------------------------------------------------------------------------------------

RECONCILE_BATCH = 1000


def run_reconcile(job_pk: int) -> None:
    run_job(job_pk, _reconcile)


def _reconcile(job: Job, owner: str) -> None:
    """Compare Knox's device list with the portal's registered devices and record every difference."""
    account = job.account
    started = job.started_at or timezone.now()
    ReconcileItem.objects.filter(job=job).delete()  # a resumed run starts the comparison again
    customers = dict(Customer.objects.filter(account=account).values_list("customer_id", "pk"))
    batch = []
    seen = 0
    for listed in KdpClient(account).iter_devices():
        batch.append(listed)
        if len(batch) >= RECONCILE_BATCH:
            seen += _reconcile_batch(job, account, batch, customers, started)
            batch = []
            job.heartbeat(owner)
    seen += _reconcile_batch(job, account, batch, customers, started)
    local_only = Device.objects.filter(account=account, state=Device.State.REGISTERED).filter(
        Q(seen_in_knox_at__isnull=True) | Q(seen_in_knox_at__lt=started)
    )
    ReconcileItem.objects.bulk_create(
        (
            ReconcileItem(
                job=job,
                identifier=ident,
                drift=ReconcileItem.Drift.ONLY_LOCAL,
                local_customer_id=cid or "",
                model=model,
            )
            for ident, cid, model in local_only.values_list("identifier", "customer__customer_id", "model").iterator()
        ),
        batch_size=STAGE_BATCH,
    )
    drift = ReconcileItem.objects.filter(job=job).count()
    job.set_total(seen)
    Job.objects.filter(pk=job.pk).update(succeeded=seen, failed=0, params={**job.params, "drift": drift})
    job.finish()


def _reconcile_batch(job: Job, account: object, batch: list, customers: dict[str, int], started: object) -> int:
    if not batch:
        return 0
    ids = [d.identifier for d in batch]
    local = {
        ident: (cid, state)
        for ident, cid, state in Device.objects.filter(account=account, identifier__in=ids).values_list(
            "identifier", "customer__customer_id", "state"
        )
    }
    items = []
    for d in batch:
        mine = local.get(d.identifier)
        if mine is None or mine[1] != Device.State.REGISTERED:
            drift, local_customer = ReconcileItem.Drift.ONLY_IN_KNOX, ""
        elif d.customer_id and mine[0] != d.customer_id:
            drift, local_customer = ReconcileItem.Drift.OTHER_CUSTOMER, mine[0] or ""
        else:
            continue
        items.append(
            ReconcileItem(
                job=job,
                identifier=d.identifier,
                drift=drift,
                knox_customer_id=d.customer_id,
                local_customer_id=local_customer,
                model=d.model,
            )
        )
    ReconcileItem.objects.bulk_create(items)
    Device.objects.filter(account=account, identifier__in=ids).update(seen_in_knox_at=timezone.now())
    job.add_progress(succeeded=len(batch))
    return len(batch)


def scheduled_reconcile(account_pk: int) -> int:
    """Entry point for a django-q2 Schedule: queue a reconcile job for the account; returns the job id."""
    from kdp.models import queue_reconcile
    from portal.models import KnoxAccount

    return queue_reconcile(KnoxAccount.objects.get(pk=account_pk), user=None, via="schedule").pk
