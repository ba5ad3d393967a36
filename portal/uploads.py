"""Staging an uploaded spreadsheet into UploadRow records (one reader and one preview for every service).

`stage_upload` reads the file with portal.spreadsheets, gives every row its verdict, lets the owning service
check valid rows against its own records (ROW_CHECKS, registered by each app in AppConfig.ready), and inserts
the rows in short batches while the upload is PARSING; it turns READY or REFUSED only once every row is written,
so a refused file leaves no half-staged rows (see `stage_upload`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from portal import spreadsheets
from portal.db import insert_rows
from portal.exports import TEMPLATE_EXAMPLE
from portal.models import Job, Upload, UploadRow

logger = logging.getLogger(__name__)

# Rows checked and written per transaction, and deleted per transaction. SQLite has one write lock for the whole
# database, shared by the web server and every worker: a batch holds it for some tens of milliseconds.
STAGE_BATCH = 5000
DELETE_BATCH = 5000
SHEET_LENGTH = Upload._meta.get_field("sheet").max_length or 100
COLUMN_LENGTH = Upload._meta.get_field("device_column").max_length or 200
# The headers offered when no device column was found: a sheet can have 16,384 columns.
MAX_OFFERED_COLUMNS = 100
# The example row of the downloadable templates must never be acted on by accident.
TEMPLATE_EXAMPLE_VALUES = {TEMPLATE_EXAMPLE["imei"], TEMPLATE_EXAMPLE["serial"]}

# service -> dotted path of `check(upload, rows: list[StagedRow]) -> None`, which may turn VALID rows into
# INVALID / REGISTERED / IN_FLIGHT / UNKNOWN with a reason. Registered by the service apps (kdp, guard).
ROW_CHECKS: dict[str, str] = {}


def register_row_check(service: str, path: str) -> None:
    ROW_CHECKS[service] = path


@dataclass(slots=True)
class StagedRow:
    """An UploadRow before it is inserted (plain values: staging 100k rows must not build 100k model instances)."""

    row_number: int
    raw: str
    value: str
    kind: str
    status: str
    reason: str
    suggestion: str
    order_no: str
    model: str
    approve_id: str
    # The customer column's text (KDP's multi-customer upload); not an UploadRow field: kdp's row check keeps it.
    customer: str = ""


STAGED_FIELDS = (
    "upload",
    "row_number",
    "raw",
    "value",
    "kind",
    "status",
    "reason",
    "suggestion",
    "order_no",
    "model",
    "approve_id",
)


class Superseded(Exception):
    """Another parse of the same upload started (someone chose another sheet or column): this one stops."""


# What a parse decides about an upload; written in one UPDATE at the end (never a whole-row save(), which would
# put back fields another request changed meanwhile).
PARSE_FIELDS = (
    "status",
    "error",
    "notices",
    "sheets",
    "sheet",
    "columns",
    "device_column",
    "allow_bad_check_digit",
    "rows_total",
    "valid",
    "invalid",
    "duplicate",
    "skipped",
    "conflicts",
)


def stage_upload(upload: Upload, *, job: Job | None = None, owner: str = "") -> Upload:
    """Read the file into UploadRow records (replacing any earlier staging) and count them.

    Nothing here holds the database's write lock for long: SQLite has one for the whole database, and a parse
    inside one transaction locked the web server and every other worker out for as long as it read (100 s for a
    hostile workbook: logins and exports failed with "database is locked"). So:

    1. the file is opened, measured and read, and the service's row checks (which read the database) run,
       outside any transaction;
    2. the earlier rows are deleted and the new ones written in batches, each its own short transaction, while
       the upload is PARSING; a PARSING upload shows no rows and cannot be submitted (`Upload.read_rows`,
       `preview_rows`, `Upload.mark_submitted`);
    3. only when every row is written does one UPDATE turn the upload READY or REFUSED with its counts. A file
       refused part-way (too many rows, a broken line) has its rows deleted first, in batches, so half a file is
       never shown or offered; a worker that dies part-way leaves it PARSING, and the job that resumes it starts
       by deleting the rows written so far.

    Every write checks, in its transaction, that the upload's parse job is still the one this run started with:
    choosing another sheet or column starts a new parse (`Upload.start_parsing`), and the old one stops instead of
    writing over it. Returns the upload as this run left it (or as the newer parse has it, if superseded).
    """
    check: Callable[[Upload, list[StagedRow]], None] | None = (
        import_string(ROW_CHECKS[upload.service]) if upload.service in ROW_CHECKS else None
    )
    parse_job = upload.parse_job_id
    counts: Counter[str] = Counter()
    try:
        # The web views set PARSING when they queue the parse; a command or a second reading may not have.
        with transaction.atomic():
            _current(upload, parse_job)
            Upload.objects.filter(pk=upload.pk).update(status=Upload.Status.PARSING)
        upload.status = Upload.Status.PARSING
        delete_rows(upload, parse_job, job=job, owner=owner)
        try:
            with spreadsheets.open_spreadsheet(
                Path(upload.file.path),
                upload.filename,
                max_bytes=settings.SPREADSHEET_MAX_BYTES,
                max_rows=settings.SPREADSHEET_MAX_ROWS,
                max_sheets=settings.SPREADSHEET_MAX_SHEETS,
                max_cells=settings.SPREADSHEET_MAX_CELLS,
                max_memory=settings.SPREADSHEET_MAX_MEMORY_MB * 1024 * 1024,
                sheet=upload.sheet or None,
                device_column=upload.device_column or None,
                allow_bad_check_digit=upload.allow_bad_check_digit,
            ) as sheet:
                upload.sheets = [storable(name) for name in sheet.sheets]
                # Cut to the model fields' lengths: a sheet name or header in the XML can be any length, and
                # PostgreSQL refuses what doesn't fit (the parse job would die and the preview poll forever).
                upload.sheet = storable(sheet.sheet or "")[:SHEET_LENGTH]
                # Two columns with the same header can't be told apart by name: offer it once (a notice says
                # which column was read).
                upload.columns = list(dict.fromkeys(storable(c.header) for c in sheet.candidates))
                upload.device_column = storable(sheet.device_column.header)[:COLUMN_LENGTH]
                batch: list[StagedRow] = []
                for row in sheet.iter_rows():
                    batch.append(staged_row(row))
                    if len(batch) >= STAGE_BATCH:
                        _check_and_insert(upload, parse_job, batch, check, counts)
                        batch = []
                        if job is not None:
                            job.heartbeat(owner)
                _check_and_insert(upload, parse_job, batch, check, counts)
                upload.notices = [storable(notice) for notice in sheet.notices]  # reading the rows may add some
        except spreadsheets.SpreadsheetError as e:
            delete_rows(upload, parse_job, job=job, owner=owner)
            upload.status = Upload.Status.REFUSED
            upload.error = storable(e.message)
            upload.sheets = [storable(name) for name in e.sheets] or upload.sheets
            upload.columns = [storable(header)[:COLUMN_LENGTH] for header in e.headers[:MAX_OFFERED_COLUMNS]]
            upload.rows_total = upload.valid = upload.invalid = upload.duplicate = upload.skipped = 0
            upload.conflicts = 0
            _finish(upload, parse_job)
            return upload
        upload.valid = counts[UploadRow.Status.VALID]
        upload.invalid = counts[UploadRow.Status.INVALID]
        upload.duplicate = counts[UploadRow.Status.DUPLICATE]
        upload.skipped = counts[UploadRow.Status.SKIPPED]
        upload.conflicts = sum(counts[status] for status in UploadRow.CONFLICTS)
        upload.rows_total = sum(counts.values())
        upload.status = Upload.Status.READY if upload.valid else Upload.Status.REFUSED
        upload.error = "" if upload.valid else "No row holds a device that can be submitted; see the reasons below."
        _finish(upload, parse_job)
    except Superseded:
        logger.info("upload %s is being read again by job %s; this parse stops", upload.pk, upload.parse_job_id)
        upload.refresh_from_db()
    return upload


def _current(upload: Upload, parse_job: int | None) -> Upload:
    """Inside a transaction: lock the upload's row (PostgreSQL; SQLite's IMMEDIATE transaction already holds the
    write lock) and raise Superseded unless `parse_job` is still its parse job."""
    if not Upload.objects.select_for_update().filter(pk=upload.pk, parse_job_id=parse_job).values_list("pk"):
        raise Superseded
    return upload


def _finish(upload: Upload, parse_job: int | None) -> None:
    with transaction.atomic():
        _current(upload, parse_job)
        Upload.objects.filter(pk=upload.pk).update(**{name: getattr(upload, name) for name in PARSE_FIELDS})


def delete_rows(upload: Upload, parse_job: int | None, *, job: Job | None = None, owner: str = "") -> int:
    """Delete the upload's staged rows, DELETE_BATCH per transaction (200,000 rows in one DELETE held the write
    lock for seconds). Raises Superseded if `parse_job` is no longer the upload's parse job."""
    deleted = 0
    while True:
        with transaction.atomic():
            _current(upload, parse_job)
            ids = list(UploadRow.objects.filter(upload_id=upload.pk).values_list("pk", flat=True)[:DELETE_BATCH])
            if not ids:
                return deleted
            deleted += UploadRow.objects.filter(pk__in=ids).delete()[0]
        if job is not None:
            job.heartbeat(owner)


_STATUS = {
    spreadsheets.Status.VALID: str(UploadRow.Status.VALID),
    spreadsheets.Status.INVALID: str(UploadRow.Status.INVALID),
    spreadsheets.Status.DUPLICATE: str(UploadRow.Status.DUPLICATE),
    spreadsheets.Status.SKIPPED: str(UploadRow.Status.SKIPPED),
}


def storable(text: str) -> str:
    """Text as the database can keep it: PostgreSQL's text and jsonb refuse NUL, which a cell can hold (a CSV
    from a fixed-width export); it is shown as the symbol ␀ instead."""
    return text.replace("\x00", "\u2400")


def staged_row(row: spreadsheets.Row) -> StagedRow:
    verdict = row.verdict
    status = _STATUS[row.status]
    reason = row.message if status != _STATUS[spreadsheets.Status.VALID] or verdict.warning else ""
    if status == UploadRow.Status.VALID and verdict.value in TEMPLATE_EXAMPLE_VALUES:
        status = UploadRow.Status.INVALID
        reason = "this is the template's example row; replace it with the customer's devices"
    return StagedRow(
        row_number=row.number,
        raw=storable(str(row.raw)[:100]),
        value=verdict.value[:40] if status == UploadRow.Status.VALID else "",
        kind=str(verdict.kind or "")[:6],
        status=status,
        reason=storable(reason[:400]),
        suggestion=(verdict.suggestion or "")[:40],
        order_no=storable(str(row.extra.get("order_no", ""))[:100]),
        model=storable(str(row.extra.get("model", ""))[:60]),
        approve_id=storable(str(row.extra.get("approve_id", ""))[:100]),
        customer=storable(str(row.extra.get("customer", ""))[:200]),
    )


def _check_and_insert(
    upload: Upload,
    parse_job: int | None,
    rows: list[StagedRow],
    check: Callable[[Upload, list[StagedRow]], None] | None,
    counts: Counter[str],
) -> None:
    if not rows:
        return
    if check is not None:
        check(upload, rows)  # reads the service's records: outside the write transaction
    counts.update(r.status for r in rows)
    with transaction.atomic():
        _current(upload, parse_job)
        insert_rows(
            UploadRow,
            STAGED_FIELDS,
            (
                (
                    upload.pk,
                    r.row_number,
                    r.raw,
                    r.value,
                    r.kind,
                    r.status,
                    r.reason,
                    r.suggestion,
                    r.order_no,
                    r.model,
                    r.approve_id,
                )
                for r in rows
            ),
        )
