"""Staging an uploaded spreadsheet into UploadRow records (one reader and one preview for every service).

`stage_upload` reads the file with portal.spreadsheets, gives every row its verdict, lets the owning service
check valid rows against its own records (ROW_CHECKS, registered by each app in AppConfig.ready), and inserts
the rows in batches inside one database transaction: a refused file leaves no half-staged rows.
"""

from __future__ import annotations

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

STAGE_BATCH = 5000
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


def stage_upload(upload: Upload, *, job: Job | None = None, owner: str = "") -> Upload:
    """Read the file into UploadRow records (replacing any earlier staging) and count them."""
    check: Callable[[Upload, list[StagedRow]], None] | None = (
        import_string(ROW_CHECKS[upload.service]) if upload.service in ROW_CHECKS else None
    )
    try:
        with transaction.atomic():
            upload.rows.all().delete()
            with spreadsheets.open_spreadsheet(
                Path(upload.file.path),
                upload.filename,
                max_bytes=settings.SPREADSHEET_MAX_BYTES,
                max_rows=settings.SPREADSHEET_MAX_ROWS,
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
                upload.notices = [storable(notice) for notice in sheet.notices]
                batch: list[StagedRow] = []
                for row in sheet.iter_rows():
                    batch.append(staged_row(row))
                    if len(batch) >= STAGE_BATCH:
                        _check_and_insert(upload, batch, check)
                        batch = []
                        if job is not None:
                            job.heartbeat(owner)
                _check_and_insert(upload, batch, check)
                upload.notices = [storable(notice) for notice in sheet.notices]  # reading the rows may add some
    except spreadsheets.SpreadsheetError as e:
        upload.status = Upload.Status.REFUSED
        upload.error = storable(e.message)
        upload.sheets = [storable(name) for name in e.sheets] or upload.sheets
        upload.columns = [storable(header)[:COLUMN_LENGTH] for header in e.headers[:MAX_OFFERED_COLUMNS]]
        upload.rows_total = upload.valid = upload.invalid = upload.duplicate = upload.skipped = upload.conflicts = 0
        upload.save()
        return upload
    upload.count_rows()
    upload.status = Upload.Status.READY if upload.valid else Upload.Status.REFUSED
    upload.error = "" if upload.valid else "No row holds a device that can be submitted; see the reasons below."
    upload.save()
    return upload


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
    )


def _check_and_insert(
    upload: Upload, rows: list[StagedRow], check: Callable[[Upload, list[StagedRow]], None] | None
) -> None:
    if check is not None and rows:
        check(upload, rows)
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
