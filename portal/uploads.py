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
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils.module_loading import import_string

from portal import spreadsheets
from portal.db import insert_rows
from portal.exports import TEMPLATE_EXAMPLE
from portal.identifiers import check_identifier
from portal.models import AuditEvent, Job, Upload, UploadRow

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
                **spreadsheet_limits(),
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


def spreadsheet_limits() -> dict[str, int]:
    """The settings' limits for reading an uploaded spreadsheet, as `spreadsheets.open_spreadsheet` takes them."""
    return {
        "max_bytes": settings.SPREADSHEET_MAX_BYTES,
        "max_rows": settings.SPREADSHEET_MAX_ROWS,
        "max_sheets": settings.SPREADSHEET_MAX_SHEETS,
        "max_cells": settings.SPREADSHEET_MAX_CELLS,
        "max_memory": settings.SPREADSHEET_MAX_MEMORY_MB * 1024 * 1024,
    }


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
    extra = row.extra
    if (
        status == _VALID
        and not verdict.warning
        and not verdict.note
        and verdict.value not in TEMPLATE_EXAMPLE_VALUES
        and "\x00" not in row.raw
    ):
        # Most rows of a large file: a clean, valid value, nothing to say. One check for NUL in the row instead
        # of one `storable` per field (staging 100,000 rows spent half a second building StagedRows).
        return StagedRow(
            row.number,
            row.raw[:100],
            verdict.value[:40],
            str(verdict.kind or "")[:6],
            status,
            "",
            (verdict.suggestion or "")[:40],
            *(_extras(extra) if extra else _NO_EXTRAS),
        )
    reason = row.message if status != _VALID or verdict.warning or verdict.note else ""
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
        order_no=storable(str(extra.get("order_no", ""))[:100]),
        model=storable(str(extra.get("model", ""))[:60]),
        approve_id=storable(str(extra.get("approve_id", ""))[:100]),
        customer=storable(str(extra.get("customer", ""))[:200]),
    )


_VALID = str(UploadRow.Status.VALID)


# StagedRow's fields for a spreadsheet's other columns, in order, with their lengths.
_EXTRA_FIELDS = (("order_no", 100), ("model", 60), ("approve_id", 100), ("customer", 200))
_NO_EXTRAS = ("",) * len(_EXTRA_FIELDS)


def _extras(extra: dict[str, str]) -> tuple[str, ...]:
    """The fast path's other columns: cut to the fields' lengths, NUL made storable."""
    return tuple(storable(str(extra[name])[:length]) if name in extra else "" for name, length in _EXTRA_FIELDS)


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


# --- one row's suggested value, applied from the preview ----------------------------------------------------

# The preview page of each service: its URL name (to go back to without JavaScript) and its template, whose
# `preview-row` and `upload-status` partials re-render a fixed row and the counts.
PREVIEW_PAGES = {
    "kdp": ("kdp:upload_detail", "kdp/upload_detail.html"),
    "guard": ("guard:bulk_detail", "guard/staged.html"),
}

# UploadRow status -> the Upload field that counts it.
_COUNT_FIELDS = {
    UploadRow.Status.VALID: "valid",
    UploadRow.Status.INVALID: "invalid",
    UploadRow.Status.DUPLICATE: "duplicate",
    UploadRow.Status.SKIPPED: "skipped",
    **{status: "conflicts" for status in UploadRow.CONFLICTS},
}


class RowFixError(Exception):
    """The suggestion can't be applied; `message` says why, for the row."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def can_fix_rows(upload: Upload) -> bool:
    """Rows can be changed while the upload is waiting for review: read, not submitted, file not being read again.
    A REFUSED upload with rows is one where no row was valid; a fix may make it READY."""
    return upload.status == Upload.Status.READY or (upload.status == Upload.Status.REFUSED and upload.rows_total > 0)


def apply_suggestion(upload: Upload, row_pk: int, value: str, *, user: Any = None, request: Any = None) -> UploadRow:
    """Replace a staged row's value with its suggestion (the completed IMEI, the lost leading zero...), check it
    again as the parse does, and move the upload's counts. Raises RowFixError with a message for the row.

    1. The suggestion is checked like a cell (identifier rules), then by the service's own checks (already
       registered, job in flight), outside the write transaction as the parse does.
    2. In one transaction, with the upload locked: it must still be open for review, the same device must not be
       on another row (else this one is a duplicate), and the row must still hold that suggestion (two clicks, or a
       new reading of the file, change it); the row and the counts move together, and an upload that had no valid
       row becomes ready for review.
    """
    row = UploadRow.objects.filter(upload=upload, pk=row_pk).first()
    if row is None:
        raise RowFixError(
            "This row is no longer in the spreadsheet's preview; the file was read again. Reload the page."
        )
    if not can_fix_rows(upload):
        raise RowFixError(_closed_message(upload))
    if not row.suggestion or row.suggestion != value:
        raise RowFixError("This row's suggestion changed since the page was shown; reload the page.")
    column_kind = spreadsheets.header_kind(upload.device_column)
    verdict = check_identifier(
        value,
        column_kind=column_kind if column_kind in spreadsheets.DEVICE_KINDS else "device",
        allow_bad_check_digit=upload.allow_bad_check_digit,
    )
    fixed = StagedRow(
        row_number=row.row_number,
        raw=row.raw,
        value=verdict.value[:40] if verdict.ok else "",
        kind=str(verdict.kind or "")[:6],
        status=UploadRow.Status.VALID if verdict.ok else UploadRow.Status.INVALID,
        reason=f"the suggested {value} is used instead of the file's value; correct the file too"
        if verdict.ok
        else verdict.reason,
        suggestion="",
        order_no=row.order_no,
        model=row.model,
        approve_id=row.approve_id,
    )
    if fixed.status == UploadRow.Status.VALID and upload.service in ROW_CHECKS:
        import_string(ROW_CHECKS[upload.service])(upload, [fixed])
    old_status = row.status
    with transaction.atomic():
        locked = Upload.objects.select_for_update().get(pk=upload.pk)
        if not can_fix_rows(locked):
            raise RowFixError(_closed_message(locked))
        # Under the lock: two rows fixed to the same device at once must not both be sent.
        if fixed.value:
            first = UploadRow.objects.filter(upload=upload, value=fixed.value).exclude(pk=row.pk).order_by("row_number")
            first_number = first.values_list("row_number", flat=True).first()
            if first_number is not None:
                fixed.status, fixed.value = UploadRow.Status.DUPLICATE, ""
                fixed.reason = f"with the suggested {value} this is the same device as row {first_number}"
        changed = UploadRow.objects.filter(pk=row.pk, status=old_status, suggestion=value).update(
            value=fixed.value, kind=fixed.kind, status=fixed.status, reason=storable(fixed.reason[:400]), suggestion=""
        )
        if changed != 1:
            raise RowFixError("This row's suggestion changed since the page was shown; reload the page.")
        old_field, new_field = (
            _COUNT_FIELDS[UploadRow.Status(old_status)],
            _COUNT_FIELDS[UploadRow.Status(fixed.status)],
        )
        if old_field != new_field:
            Upload.objects.filter(pk=upload.pk).update(**{old_field: F(old_field) - 1, new_field: F(new_field) + 1})
        if fixed.status == UploadRow.Status.VALID and locked.status == Upload.Status.REFUSED:
            Upload.objects.filter(pk=upload.pk).update(status=Upload.Status.READY, error="")
        AuditEvent.objects.record(
            f"{upload.service}.row_fixed",
            request=request,
            actor=user,
            target=upload,
            summary={"row": row.row_number, "from": row.raw, "to": value, "verdict": fixed.status},
        )
    upload.refresh_from_db()
    row.refresh_from_db()
    return row


def _closed_message(upload: Upload) -> str:
    if upload.status == Upload.Status.SUBMITTED:
        return "This spreadsheet was already submitted, so its rows can no longer change; upload a corrected file."
    if upload.status == Upload.Status.PARSING:
        return "The file is being read again; wait for the new preview."
    return "This file was refused, so its rows can't change; upload a corrected file."
