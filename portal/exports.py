"""CSV and Excel exports (device lists, job reports, invalid-row downloads) and the device upload templates.

    columns = [
        Column("IMEI", "imei", kind="identifier"),
        Column("Status", "status"),
        Column("Devices", "count", kind="number", width=10),
        Column("Registered (UTC)", lambda device: device.registered_at, kind="datetime", width=20),
    ]
    stream_csv(columns, devices, "devices.csv")                      # StreamingHttpResponse, any size
    xlsx_response(columns, devices, "devices.xlsx", "Devices")       # FileResponse, at most max_rows rows
    device_template_xlsx(), device_template_csv()                    # bytes for the upload template downloads

A `Column` takes its value from each row with `key`: a mapping key (a missing key is an empty cell), an attribute
name, or a callable that gets the row. Its `kind` decides how the value is written:

- "text": `str(value)`, made inert with `neutralise_formula` (a leading =, +, -, @, tab, CR or LF gets a quote), so
  a cell can never run as a formula in Excel, LibreOffice or Google Sheets. Header texts are treated the same way,
  since invalid-row downloads repeat headers from the user's own file. In a CSV, a field holding a separator, a
  quote, a line break or a formula character anywhere is also wrapped in double quotes, and a formula character
  right after a separator or line break inside it gets the quote too: Excel in a ";" locale splits our "," file
  at every ";" (see _CSV_NEEDS_QUOTES). Plain digits, IMEIs and plain words stay bare.
- "identifier": IMEI, serial number, MEID, order number, customer ID. Always text, never a number: in the xlsx the
  cell is a string with number format "@", so 359221145350335 never becomes 3.59221E+14 and 0123 keeps its zero.
- "number": ints, floats and Decimals stay numbers; anything else is written as "text".
- "datetime": aware datetimes in UTC (naive ones are taken to be UTC already, as Django stores them with
  USE_TZ); CSV gets ISO 8601 with a "Z", the xlsx a real date cell. Dates stay dates. Anything else is "text".

Pass a queryset as `queryset.iterator(chunk_size=2000)`: plain iteration caches every model instance, which for a
million-row CSV is the memory the streaming saves.

None is an empty cell. CSV files are UTF-8 with a BOM (without it Excel reads them as the local code page) and
use CRLF line ends. A CSV cannot tell Excel that a column is text, so an identifier in a CSV opened by
double-clicking still shows as 3.59221E+14; the xlsx is the format for people, the CSV for other systems and for
lists longer than Excel holds.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import io
import math
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from django.http import FileResponse, StreamingHttpResponse
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES, ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet import _writer as openpyxl_writer

from portal.files import temp_file
from portal.spreadsheets import neutralise_formula

if TYPE_CHECKING:
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
# Excel's sheet holds 1,048,576 rows; keep room for the header and the "export was cut" note.
EXCEL_MAX_DATA_ROWS = 1_048_576 - 2
DEFAULT_XLSX_MAX_ROWS = 200_000
TEMPLATE_TEXT_ROWS = 10_000

Kind = Literal["text", "identifier", "number", "datetime"]
_KINDS = ("text", "identifier", "number", "datetime")

_BOM = "\ufeff"
# OWASP, "CSV Injection" (https://owasp.org/www-community/attacks/CSV_Injection), which this follows: no cell may
# begin with =, +, -, @, tab, carriage return or line feed; and a value's own separators ("," ";") and quotes can
# start a new cell in a program that splits on another separator (Excel in a ";" locale reads our "," file as
# one cell per ";"), so such fields are wrapped in double quotes with their quotes doubled, and a formula
# character that a split would put first gets the single quote as well. The page lists neither "|" nor "%" ("|"
# only acts inside a formula, as in =cmd|..., which the first rule already stops), so they are plain text here.
#
# A field is quoted when it holds any of these; plain text and plain digits (IMEIs, serial numbers) stay bare.
_CSV_NEEDS_QUOTES = re.compile(r"[,;\t\"'\r\n=+\-@]")
# A formula character at the start of a cell that a split at ",", ";", tab or a line break would begin. Spaces and
# quotation marks in front of it do not make it safe (a reader may drop them).
_CSV_CELL_START = re.compile(r"(?:^|(?<=[,;\t\r\n]))([ \"]*)(?=[=+\-@])")
_CSV_MAY_SPLIT = re.compile(r"[,;\t\r\n]|^[ \"]")  # where _CSV_CELL_START can match at all
# Rows are sent in pieces of about this size: one piece per row would mean a million tiny writes to the socket.
_CSV_CHUNK_CHARS = 64 * 1024
_TEXT_FORMAT = "@"
_DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
_DATE_FORMAT = "yyyy-mm-dd"
_EXCEL_MAX_CELL_CHARS = 32_767
_END = object()


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    key: str | Callable[[Any], Any]
    kind: Kind = "text"
    width: float = 18  # in Excel's units, about one character each

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Unknown column kind {self.kind!r}; use one of {', '.join(_KINDS)}")

    def value(self, row: Any) -> Any:
        if callable(self.key):
            return self.key(row)
        if isinstance(row, Mapping):
            # Dict rows are often sparse (an invalid row may lack cells); objects are not, so a typo still fails.
            return row.get(self.key)
        return getattr(row, self.key)


@dataclass(frozen=True)
class Export:
    """A download's format: its columns, the file's name (before its time stamp) and the Excel sheet's, and the
    relations its columns read (select_related)."""

    columns: Sequence[Column]
    name: str
    sheet: str
    related: str = ""


# Columns with one meaning in every service's per-device report: one header, one width, wherever they appear.
ROW_IN_FILE = Column("Row in file", "row_number", "number", 10)
OUTCOME = Column("Outcome", "outcome", "text", 12)
KNOX_CODE = Column("Knox code", "code", "identifier", 12)
WHAT_IT_MEANS = Column("What it means", lambda result: result.explanation(), "text", 70)
MODEL = Column("Model", "model", "text", 14)
LAST_KNOX_CODE = Column("Last Knox code", "last_code", "identifier", 12)


# --- CSV ----------------------------------------------------------------------------------------------------


def stream_csv(columns: Sequence[Column], rows: Iterable[Any], filename: str) -> StreamingHttpResponse:
    """The rows as a CSV download, produced while it is sent: `rows` is read only as the response is iterated."""
    response = StreamingHttpResponse(_csv_chunks(columns, rows), content_type=CSV_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{safe_filename(filename, ".csv")}"'
    return response


def _csv_chunks(columns: Sequence[Column], rows: Iterable[Any]) -> Iterator[bytes]:
    # The header goes out before the first row is read, so the browser shows the download at once.
    yield (_BOM + _csv_line([_csv_text(column.header) for column in columns])).encode()
    lines: list[str] = []
    size = 0
    for row in rows:
        line = _csv_line([_csv_cell(column.kind, column.value(row)) for column in columns])
        lines.append(line)
        size += len(line)
        if size >= _CSV_CHUNK_CHARS:
            yield "".join(lines).encode()
            lines, size = [], 0
    if lines:
        yield "".join(lines).encode()


def _csv_line(fields: list[str]) -> str:
    if fields == [""]:
        return '""\r\n'  # a row of one empty cell; a blank line would be skipped by readers
    return ",".join(fields) + "\r\n"


def _csv_cell(kind: Kind, value: Any) -> str:
    value = _typed(kind, value)
    if isinstance(value, datetime.datetime):
        return '"' + value.isoformat(timespec="seconds") + 'Z"'  # quoted: it holds "-"
    if isinstance(value, datetime.date):
        return '"' + value.isoformat() + '"'
    if value is None:
        return ""
    if isinstance(value, str):
        return _csv_text(value)
    return _csv_field(str(value))  # a number


def _csv_text(text: str) -> str:
    """Text from the database or the user's own file, as an inert CSV field (see _CSV_NEEDS_QUOTES)."""
    if _CSV_NEEDS_QUOTES.search(text) is None:
        return text  # most cells: nothing to neutralise (every formula character is in that set)
    text = neutralise_formula(text)
    if _CSV_MAY_SPLIT.search(text) is not None:  # most quoted cells only hold a "-", as in SM-G991B
        text = _CSV_CELL_START.sub(r"\1'", text)
    return '"' + text.replace('"', '""') + '"'


def _csv_field(text: str) -> str:
    if _CSV_NEEDS_QUOTES.search(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


# --- xlsx ---------------------------------------------------------------------------------------------------


def xlsx_response(
    columns: Sequence[Column],
    rows: Iterable[Any],
    filename: str,
    sheet_title: str,
    *,
    max_rows: int = DEFAULT_XLSX_MAX_ROWS,
) -> FileResponse:
    """The rows as an Excel workbook download, built in a temporary file with constant memory.

    More than `max_rows` rows: the first `max_rows` are written, followed by a row saying the list was cut and
    that the CSV export has all of it. The rest of `rows` is not read.
    """
    if not 0 < max_rows <= EXCEL_MAX_DATA_ROWS:
        raise ValueError(f"max_rows must be between 1 and {EXCEL_MAX_DATA_ROWS:,}")
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(_sheet_title(sheet_title))
    # A temporary file rather than bytes in memory: a 200,000-row workbook is tens of MB. FileResponse closes
    # (and so deletes) it once it has been sent.
    output = tempfile.TemporaryFile()  # noqa: SIM115
    try:
        _start_sheet(sheet, columns)
        rows = iter(rows)
        for row in _limited(rows, max_rows):
            sheet.append([_xlsx_cell(sheet, column.kind, column.value(row)) for column in columns])
        if next(rows, _END) is not _END:
            sheet.append([])
            note = WriteOnlyCell(
                sheet,
                f"This export was cut at {max_rows:,} rows; the full list has more. "
                "Download the CSV export to get every row.",
            )
            note.font = Font(bold=True)
            sheet.append([note])
        workbook.save(output)
    except BaseException:
        output.close()
        _discard(sheet)
        raise
    output.seek(0)
    return FileResponse(
        output, as_attachment=True, filename=safe_filename(filename, ".xlsx"), content_type=XLSX_CONTENT_TYPE
    )


def _discard(sheet: WriteOnlyWorksheet) -> None:
    """Delete the temporary file of a sheet that will never be saved.

    openpyxl deletes it on save, or else only when the process exits: a long-running server would keep one
    partial sheet on disk for every export that failed (say, the database went away half-way).
    """
    # close() finishes the sheet's XML and closes its file, as saving would; only then can it be deleted.
    with contextlib.suppress(Exception):
        sheet.close()
    if sheet._writer is not None:
        with contextlib.suppress(OSError, ValueError):
            sheet._writer.cleanup()


def _write_to_portal_temp(sheet: WriteOnlyWorksheet) -> None:
    """Write the sheet's rows to a `portal-export-*` file in PORTAL_TEMP_DIR instead of openpyxl's own file in the
    system's temporary folder, so that `cleanup_uploads` can find it if the process is killed mid-export.

    openpyxl makes the writer at the first row, once the layout is set; this does the same with our file. It is
    registered as openpyxl's own, which then deletes it after saving (or at exit), as it would its own.
    """
    path = temp_file("export", ".xml")
    openpyxl_writer.ALL_TEMP_FILES.append(path)
    sheet._writer = openpyxl_writer.WorksheetWriter(sheet, out=path)
    sheet._writer.write_top()


def _limited(rows: Iterator[Any], limit: int) -> Iterator[Any]:
    # Not itertools.islice: that would read one row past the limit, and the caller needs it to tell "exactly
    # max_rows" from "more".
    for count, row in enumerate(rows, 1):
        yield row
        if count == limit:
            return


def _start_sheet(sheet: WriteOnlyWorksheet, columns: Sequence[Column]) -> None:
    """Widths, frozen header and the bold header row; a write-only sheet takes layout only before any row."""
    for number, column in enumerate(columns, 1):
        sheet.column_dimensions[get_column_letter(number)].width = column.width
    sheet.freeze_panes = "A2"
    _write_to_portal_temp(sheet)
    header = []
    for column in columns:
        cell = WriteOnlyCell(sheet, _xlsx_text(column.header))
        cell.font = Font(bold=True)
        header.append(cell)
    sheet.append(header)


def _xlsx_cell(sheet: WriteOnlyWorksheet, kind: Kind, value: Any) -> Any:
    value = _typed(kind, value)
    if isinstance(value, datetime.datetime):
        cell = WriteOnlyCell(sheet, value)
        cell.number_format = _DATETIME_FORMAT
        return cell
    if isinstance(value, datetime.date):
        cell = WriteOnlyCell(sheet, value)
        cell.number_format = _DATE_FORMAT
        return cell
    if not isinstance(value, str):
        return value  # None or a number
    value = _xlsx_text(value)
    if kind == "identifier" or value in ERROR_CODES:
        cell = WriteOnlyCell(sheet, value)
        if kind == "identifier":
            cell.number_format = _TEXT_FORMAT
        # openpyxl would store a text such as "#N/A" as an error value, not as the text it is.
        cell.data_type = "s"
        return cell
    return value


def _xlsx_text(text: str) -> str:
    # Control characters are not allowed in the workbook's XML (openpyxl refuses them) and can come from uploaded
    # files; Excel cuts cells at 32,767 characters. Neutralise last, in case dropping a character exposed a "=".
    text = ILLEGAL_CHARACTERS_RE.sub("", text)[:_EXCEL_MAX_CELL_CHARS]
    return neutralise_formula(text)


def _sheet_title(title: str) -> str:
    # Excel refuses these characters in sheet names, and names longer than 31 characters.
    return re.sub(r"[\\/*?:\[\]]", " ", title).strip("' ")[:31] or "Sheet1"


# --- both formats -------------------------------------------------------------------------------------------


def _typed(kind: Kind, value: Any) -> Any:
    """The value to write: None, a number, a naive UTC datetime, a date, or a neutralised string."""
    if value is None:
        return None
    if kind == "number" and isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        # Neither Excel nor a CSV reader has a meaning for NaN or infinity; openpyxl would write a broken file.
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value
    if kind == "datetime" and isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        return value
    if kind == "datetime" and isinstance(value, datetime.date):
        return value
    if kind == "identifier" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return neutralise_formula(str(value))


def safe_filename(filename: str, extension: str) -> str:
    """A download name that is safe inside a quoted header: ASCII letters, digits, ".", "-" and "_" only.

    Accents are dropped ("Müller" becomes "Muller"), everything else becomes "_"; no path parts, no leading dot,
    at most 100 characters, always ending in `extension`.
    """
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name)
    if name.lower().endswith(extension):
        name = name[: -len(extension)]
    name = name.strip("._-")[:100] or "export"
    return name + extension


# --- upload templates ---------------------------------------------------------------------------------------

TEMPLATE_COLUMNS = (
    Column("IMEI", "imei", kind="identifier", width=20),
    Column("Serial Number", "serial", kind="identifier", width=18),
    Column("Model", "model", width=14),
    Column("Order Number", "order", kind="identifier", width=16),
)
TEMPLATE_EXAMPLE = {"imei": "353918051234561", "serial": "R58N123ABCD", "model": "SM-G991B", "order": "PO-1001"}
TEMPLATE_INSTRUCTIONS = (
    "How to fill in the device list",
    "",
    "Put one device per row on the first sheet, below the header row. Keep the header row as it is.",
    "Replace the example row with your own devices; the example IMEI is not a real device of yours.",
    "IMEI: the 15 digits, typed or pasted as text (the column is already formatted as text).",
    "Serial Number: Samsung's 11 letters and digits, for example R58N123ABCD.",
    "A device needs an IMEI or a Serial Number; Model and Order Number are optional.",
    "Never let Excel show an IMEI as 3.59221E+14 (scientific notation): the last digits are then lost for good.",
    "Save as an Excel workbook (.xlsx) or as CSV UTF-8 and upload that file.",
)


@functools.cache
def device_template_xlsx() -> bytes:
    """The upload template as an .xlsx: header, one example row, IMEI and serial cells preformatted as text."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Devices")
    _start_sheet(sheet, TEMPLATE_COLUMNS)
    sheet.append([_xlsx_cell(sheet, column.kind, column.value(TEMPLATE_EXAMPLE)) for column in TEMPLATE_COLUMNS])
    # Empty cells formatted as text: an IMEI pasted or typed into them stays text instead of becoming a number
    # that loses its last digits. Columns are listed by position, so keep them in step with TEMPLATE_COLUMNS.
    text_columns = [column.kind == "identifier" for column in TEMPLATE_COLUMNS]
    for _ in range(TEMPLATE_TEXT_ROWS - 1):
        sheet.append([_empty_text_cell(sheet) if is_text else None for is_text in text_columns])

    help_sheet = workbook.create_sheet("How to fill in")
    help_sheet.column_dimensions["A"].width = 110
    _write_to_portal_temp(help_sheet)
    for number, line in enumerate(TEMPLATE_INSTRUCTIONS):
        cell = WriteOnlyCell(help_sheet, line)
        cell.alignment = Alignment(wrap_text=True)
        if number == 0:
            cell.font = Font(bold=True, size=14)
        help_sheet.append([cell])

    output = io.BytesIO()
    workbook.save(output)
    return output.getvalue()


def _empty_text_cell(sheet: WriteOnlyWorksheet) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet)
    cell.number_format = _TEXT_FORMAT
    return cell


def device_template_csv() -> bytes:
    """The upload template as CSV: header and the example row, UTF-8 with BOM."""
    return b"".join(_csv_chunks(TEMPLATE_COLUMNS, [TEMPLATE_EXAMPLE]))
