"""Turn an uploaded device spreadsheet into validated rows.

No Django here: limits arrive as arguments, and every refusal is a `SpreadsheetError` whose `message` is a sentence
a reseller's staff can act on.

    sheet = open_spreadsheet(upload, "devices.xlsx")   # checks format, limits and header; may raise
    for row in sheet.iter_rows():                      # streams; may raise SpreadsheetError (e.g. too many rows)
        ...  # row.number, row.raw, row.status, row.verdict.value, row.message, row.extra
    sheet.summary()                                    # {"valid": 48, "invalid": 1, "duplicate": 1, ...}
    sheet.close()                                      # or use `with open_spreadsheet(...) as sheet:`

Formats: .xlsx/.xlsm and legacy .xls through python-calamine; .csv (also .txt/.tsv, which is what Excel's
"Unicode text" writes) in UTF-8 with or without BOM, UTF-16 with BOM, or cp1252, delimiter sniffed among comma,
semicolon and tab. The real format comes from the file's first bytes; when the name says otherwise but the
content is readable, it is read anyway and `notices` says so.

Header: the first of the first 20 rows that names a device column (IMEI, MEID, device ID or serial number; case,
spaces and punctuation ignored, common synonyms accepted). The first sheet with such a row is used. Callers can
force `sheet` (by name) and `device_column` (header text, or 0-based column index); `sheets` and `candidates` are
there for a UI to offer the choice.

Rows: numbered as a spreadsheet program shows them (the header row of a file that starts with it is row 1).
A row with an empty device cell is `skipped`; a completely empty row is not yielded at all. The first occurrence
of a value stays valid and later ones are `duplicate`s pointing back to it. Cell text is never evaluated; use
`neutralise_formula` on anything written back into a CSV or workbook.

Memory: a CSV is decoded in 64 KB chunks. calamine holds the chosen sheet's cells (not the XML) in memory, a few
tens of MB for 200,000 rows, and `iter_rows` converts them to Python one row at a time. calamine keeps a sheet as
a grid from its first to its last filled cell, empty cells included, and copies a shared string into every cell
that uses it, so a workbook's XML is measured first: more than `max_sheets` sheets, more than `max_cells` cells in
all (each sheet counted from A1), or a sheet that would take more than `max_memory` bytes at calamine's peak
(the grid and text, plus the list of filled cells it builds the grid from), and it is refused before calamine
loads anything. Sheets are loaded one at a time while looking for the header.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime
import io
import math
import os
import posixpath
import re
import unicodedata
import zipfile
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from typing import IO, Any

import python_calamine
from defusedxml import DefusedXmlException, ElementTree

from portal.identifiers import Verdict, check_identifier

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_ROWS = 200_000
# Zip bomb guard: refuse when the members would expand to more than this AND more than MAX_COMPRESSION_RATIO times
# the compressed size; or when one big member is compressed beyond anything a real sheet XML reaches (they
# compress about 5-30 times).
DEFAULT_MAX_UNCOMPRESSED_BYTES = 250 * 1024 * 1024
MAX_COMPRESSION_RATIO = 100
MAX_MEMBER_RATIO = 200
MEMBER_RATIO_FLOOR = 10 * 1024 * 1024  # below this a member may compress as well as it likes
# calamine builds a sheet as a dense grid from its first to its last filled cell, 32 bytes a cell whatever lies in
# between: a 2 KB workbook with values in A1 and XFD1048576 asks for 550 GB, and the process dies on the spot (Rust
# aborts on a failed allocation; no Python exception). And finding the header may load every sheet in turn: 200
# sheets of 9.8 million cells each took 100 s and 700 MB. So a workbook is measured in its XML before calamine
# loads anything, and refused past these limits, which hold for the whole workbook:
DEFAULT_MAX_SHEETS = 50
# Cells in all, every sheet counted from A1 to its last filled row and column (what a parse may have to load).
DEFAULT_MAX_CELLS = 10_000_000
# Memory for the one sheet being read: its grid and its text (a shared string is copied into every cell using it).
DEFAULT_MAX_MEMORY = 128 * 1024 * 1024
CELL_BYTES = 32  # calamine's cell (a Rust enum of 32 bytes)
# Before it builds the grid, calamine collects every filled cell with its position (40 bytes each) and keeps that
# list until the grid is built: a dense sheet takes 72 bytes a cell at its peak, not 32. Measured: 200,000 rows of
# 20 numbers (4 million cells, 122 MB by the grid alone) took 275 MB in calamine and 376 MB for the whole parse.
FILLED_CELL_BYTES = 40
STRING_BYTES = 24  # what the allocator adds to each text value, on top of its characters
HEADER_SCAN_ROWS = 20

_EXTENSIONS = {".xlsx": "xlsx", ".xlsm": "xlsx", ".xls": "xls", ".csv": "csv", ".txt": "csv", ".tsv": "csv"}
_DESCRIPTIONS = {
    "xlsx": "an Excel workbook (.xlsx)",
    "xls": "an Excel 97-2003 workbook (.xls)",
    "csv": "a text (CSV) file",
}
_ACCEPTED = "an Excel workbook (.xlsx, .xlsm or .xls) or a CSV file (.csv or .txt)"
_RESAVE = "Open it in Excel, save it again as an Excel workbook (.xlsx) and upload the new copy."
_LOCKED_MESSAGE = "This workbook is password-protected; remove the password in Excel and upload again."

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_CFB_MAGIC = b"\xd0\xcf\x11\xe0"
# An encrypted .xlsx is a CFB container holding a stream with this name (stored as UTF-16 in the directory).
_ENCRYPTED_MARKERS = (b"EncryptedPackage", "EncryptedPackage".encode("utf-16-le"))

_CSV_CHUNK = 64 * 1024
_ENCODING_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "cp1252": "Windows-1252 (ANSI)"}
_CSV_DELIMITERS = (",", ";", "\t")

# Header names, written as people write them; `_normalise_header` strips case, spaces and punctuation.
_HEADER_SYNONYMS: dict[str, tuple[str, ...]] = {
    "imei": (
        "IMEI",
        "IMEI1",
        "IMEI 1",
        "IMEI Number",
        "IMEI No",
        "IMEI Nr",
        "IMEI 1 Number",
        "IMEI/MEID",
        "Device IMEI",
        "Primary IMEI",
        "Numéro IMEI",
        "IMEI-Nummer",
    ),
    # Dual-SIM phones have a second IMEI; it describes the same device, so it is never the device column.
    "imei2": ("IMEI2", "IMEI 2", "IMEI 2 Number", "Second IMEI", "Secondary IMEI"),
    "meid": ("MEID", "MEID Number", "MEID Hex", "MEID Dec", "ESN/MEID"),
    # A column that may hold any kind of identifier (Knox Guard and Knox Mobile Enrollment call it so).
    "device": ("Device ID", "DeviceID", "Device UID", "Device Identifier", "Device"),
    "serial": (
        "Serial",
        "Serial Number",
        "Serial No",
        "Serial Nr",
        "Serial #",
        "S/N",
        "SN",
        "SNo",
        "Device Serial",
        "Numéro de série",
        "N° de série",
        "Seriennummer",
    ),
    "order_no": (
        "Order No",
        "Order Number",
        "Order",
        "Order ID",
        "PO",
        "PO Number",
        "PO No",
        "Purchase Order",
        "Purchase Order Number",
        "Sales Order",
        "Numéro de commande",
        "Commande",
        "Bestellnummer",
    ),
    "approve_id": ("Approve ID", "ApproveID", "Approval ID"),
    # KDP's multi-customer upload: a Knox customer ID or a customer name per row.
    "customer": (
        "Customer",
        "Customer ID",
        "Customer Name",
        "Knox Customer",
        "Knox Customer ID",
        "End Customer",
        "Client",
        "Kunde",
    ),
    "model": ("Model", "Model Name", "Model Number", "Model No", "Model Code", "Device Model", "Modèle", "Modell"),
}

# When several device columns are present the first of these wins; the others are offered as `candidates`.
DEVICE_KINDS = ("imei", "meid", "device", "serial")

Cell = Any  # str, int, float, bool, date/time values from calamine; str from CSV


def _normalise_header(text: str) -> str:
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text).casefold())


_HEADER_KINDS = {_normalise_header(name): kind for kind, names in _HEADER_SYNONYMS.items() for name in names}


def header_kind(text: str) -> str | None:
    """The canonical column kind of a header ("IMEI Number" -> "imei", "S/N" -> "serial"), or None."""
    return _HEADER_KINDS.get(_normalise_header(text))


def neutralise_formula(text: str) -> str:
    """Make a cell safe to write into an exported CSV or workbook: text a spreadsheet program would treat as a
    formula (starting with =, +, -, @, tab, carriage return or line feed: OWASP's "CSV Injection" list) gets a
    leading single quote."""
    if text and text[0] in "=+-@\t\r\n":
        return "'" + text
    return text


class SpreadsheetError(Exception):
    """A file we refuse, with a `message` for the user. `headers` and `sheets` are filled in when a UI could
    offer a choice (no device column found, unknown sheet)."""

    def __init__(self, message: str, *, headers: list[str] | None = None, sheets: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or []
        self.sheets = sheets or []


class Status(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"


@dataclass(slots=True, frozen=True)
class Column:
    index: int  # 0-based position in the sheet: column A is 0
    header: str
    kind: str | None  # a key of _HEADER_SYNONYMS, or None for a header we don't know

    @property
    def letter(self) -> str:
        """The column's name in a spreadsheet program: A, B, ..., Z, AA, ..."""
        number, letters = self.index + 1, ""
        while number:
            number, remainder = divmod(number - 1, 26)
            letters = chr(ord("A") + remainder) + letters
        return letters


@dataclass(slots=True)
class Row:
    number: int  # as the spreadsheet program shows it
    raw: str  # the device cell as the user sees it (numbers without ".0"); never evaluated
    verdict: Verdict
    status: Status
    extra: dict[str, str] = field(default_factory=dict)  # other recognised columns: order_no, model, serial, ...
    duplicate_of: int | None = None

    @property
    def message(self) -> str:
        """What to show next to the row: why it was refused, or a warning about an accepted value, then what was
        silently cleaned up ("dashes removed")."""
        if self.status == Status.DUPLICATE:
            return "; ".join(filter(None, (f"duplicate of row {self.duplicate_of}", self.verdict.note)))
        if self.status == Status.SKIPPED:
            return "empty, skipped"
        return "; ".join(filter(None, (self.verdict.reason or self.verdict.warning, self.verdict.note)))


_EMPTY = Verdict(value="", kind=None, ok=False, reason="empty")


class Spreadsheet:
    """An opened, checked upload. Attributes describe what was found; `iter_rows` streams the rows."""

    def __init__(
        self,
        *,
        filename: str,
        format: str,
        table: _Table,
        sheets: list[str],
        header_row: int,
        columns: list[Column],
        device_column: Column,
        candidates: list[Column],
        notices: list[str],
        max_rows: int,
        allow_bad_check_digit: bool,
        closer: Callable[[], None],
    ) -> None:
        self.filename = filename
        self.format = format  # "xlsx", "xls" or "csv": what the content is, whatever the name says
        self.sheets = sheets  # every sheet in the workbook; empty for a CSV
        self.sheet = table.name  # the sheet used; None for a CSV
        self.header_row = header_row
        self.columns = columns  # every non-empty header cell
        self.device_column = device_column
        self.candidates = candidates  # every column that could be the device column
        self.notices = notices  # things the user should know that didn't stop the import
        self.counts: Counter[str] = Counter()
        self._table = table
        self._max_rows = max_rows
        self._allow_bad_check_digit = allow_bad_check_digit
        self._closer = closer
        # Other recognised columns go into Row.extra; the first column of each kind wins.
        extras: dict[str, int] = {}
        for column in columns:
            if column.kind and column.index != device_column.index:
                extras.setdefault(column.kind, column.index)
        self._extra_columns = list(extras.items())

    @property
    def encoding(self) -> str | None:
        return getattr(self._table, "encoding", None)

    @property
    def delimiter(self) -> str | None:
        return getattr(self._table, "delimiter", None)

    def iter_rows(self) -> Iterator[Row]:
        """Yield the data rows one at a time; each call reads the file again from the start.

        Raises SpreadsheetError if the file turns out to have more than `max_rows` rows (a CSV's length is only
        known by reading it) or can't be decoded; callers staging rows in batches should discard them then.
        `counts` is reset and then kept up to date as rows are yielded.
        """
        self.counts = Counter()
        seen: dict[str, int] = {}  # normalised value -> row number of its first valid occurrence
        device = self.device_column.index
        kind = self.device_column.kind if self.device_column.kind in DEVICE_KINDS else "device"
        rows = self._table.rows()
        number = 0
        replaced_from = None  # first row with characters the text encoding could not read
        try:
            for number, cells in enumerate(rows, start=1):
                if number <= self.header_row:
                    continue
                if number - self.header_row > self._max_rows:
                    raise SpreadsheetError(_too_many_rows(self._max_rows))
                cell = cells[device] if device < len(cells) else ""
                raw = _cell_text(cell)
                # An empty row is skipped; a filled device cell already says the row is not empty (most rows).
                if not raw.strip() and not any(_cell_text(other).strip() for other in cells):
                    continue
                extra: dict[str, str] = {}
                for extra_kind, index in self._extra_columns:
                    if index < len(cells) and (text := _cell_text(cells[index]).strip()):
                        extra[extra_kind] = text
                row = self._check(number, cell, raw, kind, extra, seen)
                self.counts[row.status] += 1
                if row.verdict.warning:
                    self.counts["warnings"] += 1
                if (
                    replaced_from is None
                    and getattr(self._table, "replaced", False)
                    and any("\ufffd" in text for text in cells if isinstance(text, str))
                ):
                    replaced_from = number
                yield row
            if replaced_from is not None:
                encoding = _ENCODING_NAMES.get(self.encoding or "", self.encoding)
                self.notices.append(
                    f"From row {replaced_from} on, some characters could not be read as {encoding} and show as "
                    f"'\ufffd' (the file mixes text encodings). If names or order numbers look wrong, save the file "
                    f"from Excel as 'CSV UTF-8' and upload it again."
                )
        except csv.Error as error:
            raise SpreadsheetError(_csv_error(error, number + 1)) from error
        finally:
            rows.close()

    def _check(self, number: int, cell: Cell, raw: str, kind: str, extra: dict[str, str], seen: dict[str, int]) -> Row:
        if not raw.strip():
            return Row(number, raw, _EMPTY, Status.SKIPPED, extra)
        if isinstance(cell, datetime.date | datetime.time | datetime.timedelta):
            # Excel turned the cell into a date or time (or it really holds one): its digits are not the identifier.
            reason = (
                f"this cell holds a date or time ({raw}), not an identifier; check that this is the device column, "
                f"then format it as Text in Excel and type the identifiers again"
            )
            return Row(number, raw, Verdict(value=raw, kind=None, ok=False, reason=reason), Status.INVALID, extra)
        # Numbers go to check_identifier as numbers: it needs to know the cell was numeric (lost leading zeros).
        value = cell if isinstance(cell, int | float) and not isinstance(cell, bool) else raw
        verdict = check_identifier(value, column_kind=kind, allow_bad_check_digit=self._allow_bad_check_digit)
        if verdict.reason == "empty":  # only separators or invisible characters
            return Row(number, raw, _EMPTY, Status.SKIPPED, extra)
        if not verdict.ok:
            return Row(number, raw, verdict, Status.INVALID, extra)
        first = seen.setdefault(verdict.value, number)
        if first != number:
            return Row(number, raw, verdict, Status.DUPLICATE, extra, duplicate_of=first)
        return Row(number, raw, verdict, Status.VALID, extra)

    def summary(self) -> dict[str, int]:
        """Counts of the rows yielded so far (all of them once `iter_rows` is exhausted)."""
        counts = {status.value: self.counts[status] for status in Status}
        counts["warnings"] = self.counts["warnings"]
        counts["total"] = sum(self.counts[status] for status in Status)
        return counts

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> Spreadsheet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_spreadsheet(
    source: str | os.PathLike[str] | IO[bytes],
    filename: str | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
    max_sheets: int = DEFAULT_MAX_SHEETS,
    max_cells: int = DEFAULT_MAX_CELLS,
    max_memory: int = DEFAULT_MAX_MEMORY,
    sheet: str | None = None,
    device_column: str | int | None = None,
    allow_bad_check_digit: bool = False,
) -> Spreadsheet:
    """Check an upload and find its header; raise SpreadsheetError with a user-facing message if it won't do.

    `source` is a path or a seekable binary file object (a Django UploadedFile works). `filename` is the name the
    user gave the file; it defaults to the path's or file object's name. A CSV is read only as far as the header
    and the first data row (a CSV of more bytes than `max_rows` is also scanned for its line breaks); an .xls is
    scanned for the encryption marker; an .xlsx has each member's XML measured, then calamine loads each sheet it
    looks at.
    """
    if filename is None:
        filename = os.fspath(source) if isinstance(source, str | os.PathLike) else str(getattr(source, "name", ""))
    # Old browsers send the client's full path, with Windows backslashes.
    filename = os.path.basename(filename.replace("\\", "/"))
    extension = os.path.splitext(filename)[1].lower()
    expected = _EXTENSIONS.get(extension)
    if expected is None:
        shown = f"Files ending in {extension}" if extension else "Files without an extension"
        raise SpreadsheetError(f"{shown} can't be read here. Upload {_ACCEPTED}.")

    opener = _opener(source)
    with opener() as stream:
        stream.seek(0, io.SEEK_END)
        size = stream.tell()
        stream.seek(0)
        head = stream.read(_CSV_CHUNK)
    if size == 0:
        raise SpreadsheetError("The file is empty (0 bytes). Check that you chose the right file and upload it again.")
    if size > max_bytes:
        raise SpreadsheetError(
            f"The file is {_megabytes(size)}; the limit is {_megabytes(max_bytes)}. Split it into smaller files and "
            f"upload them one at a time."
        )

    if head.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        actual = "xlsx"
        with opener() as stream:
            _check_zip(stream, max_uncompressed_bytes)
            _check_workbook(stream, max_sheets=max_sheets, max_cells=max_cells, max_memory=max_memory)
    elif head.startswith(_CFB_MAGIC):
        actual = "xls"
        with opener() as stream:
            if _is_encrypted(stream):
                raise SpreadsheetError(_LOCKED_MESSAGE)
    elif head.startswith(b"%PDF"):
        raise SpreadsheetError(
            "This file is a PDF document, not a spreadsheet. Upload the original spreadsheet: "
            f"{_ACCEPTED}. (Renaming a PDF doesn't convert it.)"
        )
    else:
        actual = "csv"

    notices = []
    if actual != expected:
        notices.append(f"The file is named {filename}, but it is really {_DESCRIPTIONS[actual]}; it was read as one.")

    if actual == "csv":
        tables: Iterable[_Table] = [_csv_table(opener, head, size, max_rows)]
        sheets: list[str] = []
        closer: Callable[[], None] = _nothing_to_close
    else:
        workbook = _open_workbook(source, named_right=actual == expected)
        sheets = list(workbook.sheet_names)
        closer = workbook.close
        if len(sheets) > max_sheets:  # an .xls (an .xlsx was counted from its XML already)
            closer()
            raise SpreadsheetError(_too_many_sheets(len(sheets), max_sheets))
        tables = _workbook_tables(workbook, sheet, sheets)

    try:
        spreadsheet = _choose_table(
            tables,
            filename=filename,
            format=actual,
            sheets=sheets,
            forced_sheet=sheet,
            device_column=device_column,
            notices=notices,
            max_rows=max_rows,
            allow_bad_check_digit=allow_bad_check_digit,
            closer=closer,
        )
    except BaseException:
        closer()
        raise
    return spreadsheet


# --- choosing the sheet, the header row and the device column -------------------------------------------------


@dataclass(slots=True)
class _Header:
    row: int
    columns: list[Column]
    device: Column
    candidates: list[Column]


def _choose_table(
    tables: Iterable[_Table],
    *,
    filename: str,
    format: str,
    sheets: list[str],
    forced_sheet: str | None,
    device_column: str | int | None,
    notices: list[str],
    max_rows: int,
    allow_bad_check_digit: bool,
    closer: Callable[[], None],
) -> Spreadsheet:
    headers_seen: list[str] = []
    any_data = False
    for table in tables:
        rows = table.rows()
        try:
            head = list(islice(rows, HEADER_SCAN_ROWS))
            first_filled = next((cells for cells in head if _texts(cells)), None)
            if first_filled is None:
                table.release()
                continue  # an empty sheet; try the next
            any_data = True
            header = _find_header(head, device_column)
            if header is None:
                headers_seen.extend(text for text in _texts(first_filled) if text not in headers_seen)
                table.release()
                continue
            if table.height is not None and table.height - header.row > max_rows:
                raise SpreadsheetError(_too_many_rows(max_rows))
            # A header with nothing under it is a mistake worth telling apart from a file of empty cells.
            below = (cells for cells in islice(rows, max_rows) if _texts(cells))
            if not any(_texts(cells) for cells in head[header.row :]) and next(below, None) is None:
                where = f"The sheet '{table.name}'" if table.name else "The file"
                raise SpreadsheetError(
                    f"{where} has a header row (row {header.row}) but no devices below it. Add the devices under "
                    f"the headers and upload again."
                )
        except csv.Error as error:
            raise SpreadsheetError(_csv_error(error, None)) from error
        except python_calamine.CalamineError as error:
            raise SpreadsheetError(f"The file could not be read ({error}). {_RESAVE}") from error
        finally:
            rows.close()
        notices.extend(_header_notices(table, header, forced_sheet))
        return Spreadsheet(
            filename=filename,
            format=format,
            table=table,
            sheets=sheets,
            header_row=header.row,
            columns=header.columns,
            device_column=header.device,
            candidates=header.candidates,
            notices=notices,
            max_rows=max_rows,
            allow_bad_check_digit=allow_bad_check_digit,
            closer=closer,
        )

    if not any_data:
        where = f"The sheet '{forced_sheet}'" if forced_sheet else ("The workbook" if sheets else "The file")
        raise SpreadsheetError(f"{where} has no data. Check that you chose the right file and upload it again.")
    shown = ", ".join(_quoted(text) for text in headers_seen[:30])
    if len(headers_seen) > 30:
        shown += f" and {len(headers_seen) - 30:,} more"
    if isinstance(device_column, str):
        message = f"There is no column named {_quoted(device_column)}. The headers found are: {shown}."
    else:
        message = (
            f"No column of IMEIs, MEIDs or serial numbers was found (looked for a header such as 'IMEI' or "
            f"'Serial Number' in the first {HEADER_SCAN_ROWS} rows). The headers found are: {shown}. Rename the "
            f"device column's header, or choose the column, and upload again."
        )
    raise SpreadsheetError(message, headers=headers_seen, sheets=sheets)


def _header_notices(table: _Table, header: _Header, forced_sheet: str | None) -> list[str]:
    """What the user should check about where the devices were found."""
    notices = []
    if getattr(table, "hidden", False) and forced_sheet is None:
        notices.append(
            f"The devices were read from the sheet {_quoted(table.name or '')}, which is hidden in Excel (no visible "
            f"sheet has a device column). Unhide it in Excel to check that these are the devices you mean."
        )
    device = header.device
    if device.header:
        same = [c for c in header.columns if _normalise_header(c.header) == _normalise_header(device.header)]
        if len(same) > 1:
            letters = ", ".join(column.letter for column in same[:10])
            notices.append(
                f"{len(same)} columns are headed {_quoted(device.header)} (columns {letters}); the devices were read "
                f"from column {device.letter}. To read another one, give it a different header and upload again."
            )
    return notices


def _find_header(head: list[list[Cell]], device_column: str | int | None) -> _Header | None:
    """Find the header row among the first rows and pick the device column, honouring a forced choice."""
    fallback: _Header | None = None
    for number, cells in enumerate(head, start=1):
        columns = [
            Column(index, text, header_kind(text))
            for index, cell in enumerate(cells)
            if (text := _cell_text(cell).strip())
        ]
        if not columns:
            continue
        candidates = [column for column in columns if column.kind in DEVICE_KINDS]
        if isinstance(device_column, str):
            wanted = _normalise_header(device_column)
            device = next((column for column in columns if _normalise_header(column.header) == wanted), None)
        elif isinstance(device_column, int):
            if device_column < 0:
                raise SpreadsheetError("Choose a column by its position, counting from 0 for column A.")
            device = next((column for column in columns if column.index == device_column), None)
            device = device or Column(device_column, "", None)
            if not candidates:
                # Without a recognisable header anywhere, the first filled row is taken as the header.
                fallback = fallback or _Header(number, columns, device, candidates)
                continue
        else:
            device = min(candidates, key=lambda column: DEVICE_KINDS.index(column.kind), default=None)
        if device is not None:
            return _Header(number, columns, device, candidates)
    return fallback


def _texts(cells: list[Cell]) -> list[str]:
    return [text for cell in cells if (text := _cell_text(cell).strip())]


def _cell_text(cell: Cell) -> str:
    """A cell as the user sees it: numbers without ".0", dates in ISO format."""
    if isinstance(cell, str):
        return cell
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return "TRUE" if cell else "FALSE"
    if isinstance(cell, float):
        if math.isfinite(cell) and cell.is_integer():
            return str(int(cell))
        return repr(cell)
    if isinstance(cell, datetime.date | datetime.time):
        return cell.isoformat()
    if isinstance(cell, datetime.timedelta):
        return str(cell)
    return str(cell)


# --- tables: one workbook sheet or one CSV file --------------------------------------------------------------


class _Table:
    """Something `rows()` can stream from the first row, as often as asked."""

    name: str | None = None
    height: int | None = None  # total rows, when known without reading them

    def rows(self) -> Iterator[list[Cell]]:
        raise NotImplementedError

    def release(self) -> None:
        """Let go of what the table holds in memory: it was looked at and not chosen."""


class _SheetTable(_Table):
    def __init__(self, sheet: python_calamine.CalamineSheet, hidden: bool = False) -> None:
        self.name = sheet.name
        self.hidden = hidden
        self._sheet: python_calamine.CalamineSheet | None = sheet
        end = sheet.end
        self.height = end[0] + 1 if end else 0
        # calamine starts each row at the sheet's first used column; pad so Column.index counts from column A.
        start = sheet.start
        self._pad = [""] * start[1] if start else []

    def release(self) -> None:
        # The next sheet is loaded while this object is still referenced (the loop variable, the generator):
        # drop the cells now so that only one sheet is ever held.
        self._sheet = None

    def rows(self) -> Iterator[list[Cell]]:
        # calamine's iter_rows starts at row 1 of the sheet even when the first rows are empty, so the position
        # of a row in this iterator is its spreadsheet row number.
        pad = self._pad
        if self._sheet is None:
            raise RuntimeError(f"the sheet {self.name!r} was released")
        for cells in self._sheet.iter_rows():
            yield pad + cells if pad else cells


class _CsvTable(_Table):
    def __init__(
        self, opener: Callable[[], contextlib.AbstractContextManager[IO[bytes]]], encoding: str, delimiter: str
    ) -> None:
        self._opener = opener
        self.encoding = encoding
        self.delimiter = delimiter
        self.replaced = False  # some bytes were not valid in `encoding` and became U+FFFD

    def rows(self) -> Iterator[list[Cell]]:
        with self._opener() as stream:
            # errors="replace": the prefix was decoded strictly when the encoding was chosen; a stray bad byte
            # further down becomes U+FFFD and fails that one row instead of the whole file.
            decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
            yield from csv.reader(self._watched(_decoded_lines(stream, decoder)), delimiter=self.delimiter)

    def _watched(self, lines: Iterator[str]) -> Iterator[str]:
        for line in lines:
            if not self.replaced and "\ufffd" in line:
                self.replaced = True
            yield line


def _decoded_lines(stream: IO[bytes], decoder: codecs.IncrementalDecoder) -> Iterator[str]:
    """Decoded text in pieces that end at a line break, never holding more than one chunk of the file.

    csv.reader wants lines with their endings; "\\r\\n" split across two chunks is kept together, and files from
    old Macs that end lines with a bare "\\r" are split on that.
    """
    pending = ""
    while True:
        chunk = stream.read(_CSV_CHUNK)
        text = pending + decoder.decode(chunk, final=not chunk)
        if not chunk:
            yield from _split_lines(text)
            return
        # Keep a trailing "\r" back: its "\n" may be in the next chunk.
        cut = max(text.rfind("\n"), text.rfind("\r", 0, len(text) - 1)) + 1
        if cut:
            yield from _split_lines(text[:cut])
        pending = text[cut:]


def _split_lines(text: str) -> Iterator[str]:
    start = 0
    for match in re.finditer(r"\r\n|\r|\n", text):
        yield text[start : match.end()]
        start = match.end()
    if start < len(text):
        yield text[start:]


def _csv_table(
    opener: Callable[[], contextlib.AbstractContextManager[IO[bytes]]], head: bytes, size: int, max_rows: int
) -> _CsvTable:
    encoding = _detect_encoding(head, whole_file=len(head) >= size)
    # Without quotation marks every line break ends a row, so a file with too many lines can be refused now,
    # before its first 200,000 rows are staged only to be thrown away.
    if size > max_rows + HEADER_SCAN_ROWS and encoding in ("utf-8", "utf-8-sig", "cp1252"):
        lines = _count_lines_without_quotes(opener)
        if lines is not None and lines > max_rows + HEADER_SCAN_ROWS:
            raise SpreadsheetError(_too_many_rows(max_rows))
    sample = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=len(head) >= size)
    if sample.lstrip("\ufeff \t\r\n").startswith("<"):
        raise SpreadsheetError(
            "This file is a web page or XML file, not a real Excel workbook or CSV file (some systems export "
            f"those with an .xls name). {_RESAVE}"
        )
    controls = sum(1 for char in sample if char < " " and char not in "\t\r\n")
    if not _stray(controls, len(sample)):
        raise SpreadsheetError(
            f"This file is not a spreadsheet (it isn't text or an Excel workbook). Upload {_ACCEPTED}."
        )
    if not sample.strip("\ufeff \t\r\n,;"):
        raise SpreadsheetError("The file has no data. Check that you chose the right file and upload it again.")
    return _CsvTable(opener, encoding, _sniff_delimiter(sample))


def _count_lines_without_quotes(opener: Callable[[], contextlib.AbstractContextManager[IO[bytes]]]) -> int | None:
    """The number of line breaks in a file (at least), or None if it has a quotation mark (a quoted cell may
    hold line breaks)."""
    newlines = returns = 0
    with opener() as stream:
        while chunk := stream.read(1024 * 1024):
            if b'"' in chunk:
                return None
            newlines += chunk.count(b"\n")
            returns += chunk.count(b"\r")
    # "\r\n" counts once in each; a file mixing "\r\n" with bare "\r" or "\n" has more breaks than either count.
    return max(newlines, returns)


def _stray(count: int, length: int) -> bool:
    """Few enough control characters for a text file with a few stray ones (those rows then fail with the
    characters named); binary data has far more."""
    return count <= max(8, length // 100)


def _detect_encoding(head: bytes, *, whole_file: bool) -> str:
    """UTF-8 (with or without BOM), UTF-16 (with BOM, as Excel's "Unicode text" writes it) or cp1252."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in head:
        # UTF-16 without a BOM: ASCII text then has a zero in every other byte.
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if odd > len(head) // 4 and even == 0:
            return "utf-16-le"
        if even > len(head) // 4 and odd == 0:
            return "utf-16-be"
        # A few stray NULs (padding from a fixed-width export) are left to fail their rows; many mean binary data.
        if not _stray(head.count(0), len(head)):
            raise SpreadsheetError(
                f"This file is not a spreadsheet (it isn't text or an Excel workbook). Upload {_ACCEPTED}."
            )
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=whole_file)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        head.decode("cp1252")
    except UnicodeDecodeError as error:
        # cp1252 leaves five byte values undefined; text in any single-byte Western encoding avoids them.
        raise SpreadsheetError(
            f"This file is not a spreadsheet or its text encoding is unknown. Save it from Excel as 'CSV UTF-8' or "
            f"as an Excel workbook and upload again. Upload {_ACCEPTED}."
        ) from error
    return "cp1252"


def _sniff_delimiter(sample: str) -> str:
    """Comma, semicolon (Excel in many European locales) or tab (Excel's "Unicode text").

    The winner splits the most of the first rows into the same number of fields, more than one; csv.Sniffer
    guesses wrongly too often on short files and considers every punctuation character.
    """
    # Drop a possibly cut-off last line.
    if not sample.endswith(("\n", "\r")):
        sample = sample[: max(sample.rfind("\n"), sample.rfind("\r")) + 1] or sample
    best, best_score = ",", (0, 0)
    for delimiter in _CSV_DELIMITERS:
        try:
            rows = [row for row in islice(csv.reader(io.StringIO(sample), delimiter=delimiter), 100) if any(row)]
        except csv.Error:
            continue
        widths = Counter(len(row) for row in rows[:HEADER_SCAN_ROWS])
        if not widths or max(widths) < 2:
            continue
        width, agreeing = max(widths.items(), key=lambda item: (item[1], item[0]))
        if width > 1 and (agreeing, width) > best_score:
            best, best_score = delimiter, (agreeing, width)
    return best


# --- workbooks -----------------------------------------------------------------------------------------------


def _check_zip(stream: IO[bytes], max_uncompressed_bytes: int) -> None:
    """Refuse damaged zips, zip bombs and zips that aren't workbooks, from the central directory alone.

    infolist() reads the sizes the directory declares without decompressing anything.
    """
    try:
        with zipfile.ZipFile(stream) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        raise SpreadsheetError(f"The file is damaged: it is not a complete Excel workbook. {_RESAVE}") from error

    unpacked = sum(member.file_size for member in members)
    packed = sum(member.compress_size for member in members)
    bomb = unpacked > max_uncompressed_bytes and unpacked > MAX_COMPRESSION_RATIO * packed
    bomb = bomb or any(
        member.file_size > MEMBER_RATIO_FLOOR and member.file_size > MAX_MEMBER_RATIO * max(member.compress_size, 1)
        for member in members
    )
    if bomb:
        raise SpreadsheetError(
            f"This workbook would expand to {_megabytes(unpacked)} when opened, far more than its data can need, so it "
            f"was refused. {_RESAVE}"
        )

    names = {member.filename for member in members}
    if "xl/workbook.xml" in names:
        return
    if "xl/workbook.bin" in names:
        kind = "an Excel binary workbook (.xlsb)"
    elif "word/document.xml" in names:
        kind = "a Word document"
    elif "ppt/presentation.xml" in names:
        kind = "a PowerPoint presentation"
    elif "content.xml" in names:
        kind = "an OpenDocument file (LibreOffice or OpenOffice)"
    else:
        kind = "a zip archive"
    raise SpreadsheetError(f"This file is {kind}, not an Excel workbook. Upload {_ACCEPTED}.")


# What Excel, LibreOffice and openpyxl write: every cell carries its position as its first attribute.
_CANONICAL_REF_RE = re.compile(rb'<c r="([A-Z]{1,3})([1-9][0-9]{0,6})"([^>]*)>')
# Two searches, not one with "|": a pattern that starts with a literal is found far faster (a second less a sheet).
_OTHER_CELL_TAG_RE = re.compile(rb"<c[>/\t\n\r]")
_PREFIXED_TAG_RE = re.compile(rb":(?:c|row)[\s/>]")
# The careful pass. Attributes are skipped with quoted values whole, since a quoted value may hold ">".
_ATTRS = rb"(?:[^>\"']|\"[^\"]*\"|'[^']*')*"
_TAG_PREFIX_RE = re.compile(rb"<(/?)[A-Za-z_][\w.-]*:")
_TAG_RE = re.compile(rb"<(row|c)(?=[\s/>])(" + _ATTRS + rb")>")
_ATTR_RE = re.compile(rb"([\w:.-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_REF_RE = re.compile(rb"\s*([A-Za-z]{0,10})0*([0-9]{1,20})\s*$")
# Text in a sheet: the index of a shared-string cell, and every inline string or value.
_SHARED_CELL_RE = re.compile(rb"<c\s[^>]*?\bt\s*=\s*[\"']s[\"'][^>]*>\s*<v>\s*([0-9]{1,10})\s*</v>")
_SHARED_TYPE_RE = re.compile(rb"=\s*[\"']s[\"']")
_TEXT_TYPE_RE = re.compile(rb"=\s*[\"'](?:str|e|d)[\"']")
_INLINE_TEXT_RE = re.compile(rb"<t(?:\s[^>]*)?>([^<]*)</t>")
# A formula's text result, an error, or a date written as text: calamine keeps these as text too.
_TEXT_VALUE_RE = re.compile(
    rb"<c\s[^>]*?\bt\s*=\s*[\"'](?:str|e|d)[\"'][^>]*>\s*(?:<f\b[^>]*/>|<f\b[^>]*>[^<]*</f>)?\s*<v>([^<]*)</v>"
)
_SHARED_STRING_RE = re.compile(rb"<si(?:\s[^>]*)?(?:/>|>(.*?)</si>)", re.S)


def _check_workbook(stream: IO[bytes], *, max_sheets: int, max_cells: int, max_memory: int) -> None:
    """Refuse a workbook past the limits of one parse, from its XML, before calamine loads any of it:

    1. more than `max_sheets` sheets (as workbook.xml lists them);
    2. more than `max_cells` cells in all, each sheet counted as the grid calamine builds for it (from A1 to its
       last filled row and column, empty cells included): looking for the header may load every sheet, so the sum
       over the sheets is what a parse can cost in time;
    3. a sheet that would take more than `max_memory` bytes once loaded (its grid, 32 bytes a cell, plus its text:
       calamine copies a shared string into every cell that uses it), plus the shared-string table itself; or
       that would pass `max_memory` while calamine builds it (40 bytes more for each filled cell, see
       FILLED_CELL_BYTES). The grid and text are checked first, so a sheet too big by those alone is described
       by them.

    Every member is measured, not only the ones workbook.xml names as sheets: the names only say which sheet it is.
    """
    with zipfile.ZipFile(stream) as archive:
        sheets = _workbook_sheets(archive)
        if len(sheets) > max_sheets:
            raise SpreadsheetError(_too_many_sheets(len(sheets), max_sheets))
        names = {member: name for name, member in sheets}
        total = 0
        largest: tuple[int, str] = (0, "")
        try:
            lengths = _shared_string_lengths(archive)
            table = sum(lengths) + len(lengths) * STRING_BYTES
            for member in archive.infolist():
                size = _sheet_size(lambda member=member: archive.open(member), lengths)
                name = names.get(member.filename)
                if size.cells > max_cells:
                    raise SpreadsheetError(_sheet_too_big(name, size, max_cells))
                total += size.cells
                if size.cells > largest[0]:
                    largest = (size.cells, name or "")
                if total > max_cells:
                    raise SpreadsheetError(_workbook_too_big(total, largest, max_cells))
                if table + size.memory > max_memory:
                    raise SpreadsheetError(_sheet_too_heavy(name, size, table, max_memory))
                if table + size.memory + size.collected > max_memory:
                    raise SpreadsheetError(_sheet_too_heavy(name, size, table, max_memory, size.collected))
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error) as error:
            # A member that doesn't unpack to what the directory declares (a size or checksum that lies), or is
            # packed in a way nothing reads.
            raise SpreadsheetError(f"The file is damaged: it is not a complete Excel workbook. {_RESAVE}") from error


@dataclass(slots=True)
class _SheetSize:
    """What calamine would hold for one sheet: a grid from A1 to the last filled cell, and the text in it."""

    rows: int = 0
    columns: int = 0
    text_bytes: int = 0  # bytes of text in the cells; a shared string counts once for every cell that uses it
    texts: int = 0  # text values, each a separate allocation
    filled: int = 0  # cells that hold something: what calamine collects, with their positions, before the grid

    @property
    def cells(self) -> int:
        return self.rows * self.columns

    @property
    def memory(self) -> int:
        """The loaded sheet: its grid and its text."""
        return self.cells * CELL_BYTES + self.text_bytes + self.texts * STRING_BYTES

    @property
    def collected(self) -> int:
        """What calamine holds on top of `memory` while it builds the grid: the list of filled cells."""
        return self.filled * FILLED_CELL_BYTES


def _sheet_size(open_member: Callable[[], IO[bytes]], shared: Sequence[int]) -> _SheetSize:
    """The size of a sheet as calamine would load it, from its XML. A member that is not a sheet is empty.

    The quick pass reads the canonical `<c r="C7"` of every cell, leaving out a cell that holds nothing
    (`<c r="XFD1" s="2"/>`: formatting alone, which calamine leaves out too). Anything else (a cell without a
    position, which follows the previous cell; a namespace prefix; a position written otherwise) gets the careful
    pass, which reads the tags in order as calamine does.
    """
    size = _SheetSize()
    text = _TextCounter(shared, size)
    for piece in _xml_pieces(open_member):
        found = _CANONICAL_REF_RE.findall(piece)
        if (
            len(found) != piece.count(b"<c ")
            or _OTHER_CELL_TAG_RE.search(piece)
            or (b":" in piece and _PREFIXED_TAG_RE.search(piece))
        ):
            return _sheet_size_in_order(open_member, shared)
        filled = [(letters, digits) for letters, digits, rest in found if not rest.endswith(b"/")]
        size.filled += len(filled)
        if filled:
            size.columns = max(size.columns, max(map(_column_number, {letters for letters, _ in filled})))
            size.rows = max(size.rows, max(map(int, {digits for _, digits in filled})))
        text.feed(piece)
    text.close()
    return size


def _sheet_size_in_order(open_member: Callable[[], IO[bytes]], shared: Sequence[int]) -> _SheetSize:
    size = _SheetSize()
    text = _TextCounter(shared, size)
    row = column = 0
    for piece in _xml_pieces(open_member):
        if b":" in piece:
            piece = _TAG_PREFIX_RE.sub(rb"<\1", piece)
        for tag, attrs in _TAG_RE.findall(piece):
            ref = next((m[1] or m[2] for m in _ATTR_RE.findall(attrs) if m[0] == b"r"), None)
            position = _REF_RE.match(ref) if ref is not None else None
            if tag == b"row":
                row = int(position[2]) if position and not position[1] else row + 1
                column = 0
                continue
            if position and position[1]:
                cell_row, column = int(position[2]), _column_number(position[1])
            else:
                cell_row, column = row, column + 1
            if not attrs.endswith(b"/"):  # <c r="XFD1" s="2"/> holds nothing, and calamine leaves it out
                size.rows, size.columns = max(size.rows, cell_row), max(size.columns, column)
                size.filled += 1
        text.feed(piece)
    text.close()
    return size


class _TextCounter:
    """Adds the text of a sheet's XML to a `_SheetSize`, piece by piece: inline strings, text results of formulas,
    and for each cell of a shared string (t="s") that string's length. Each piece is counted up to its last
    `</c>`, so that no cell is cut in two (a piece only ends before a tag); the rest goes with the next."""

    def __init__(self, shared: Sequence[int], size: _SheetSize) -> None:
        self.shared = shared
        self.size = size
        self.carry = b""

    def feed(self, piece: bytes) -> None:
        data = self.carry + piece
        end = data.rfind(b"</c>") + len(b"</c>") if b"</c>" in data else 0
        self._count(data[:end])
        self.carry = data[end:]

    def close(self) -> None:
        self._count(self.carry)
        self.carry = b""

    def _count(self, xml: bytes) -> None:
        if not xml:
            return
        # The full patterns cost a second or so on 200,000 rows; a cheap look for the attribute first.
        shared = _SHARED_CELL_RE.findall(xml) if _SHARED_TYPE_RE.search(xml) else []
        indexes = [int(index) for index in shared]
        known = len(self.shared)
        inline = _INLINE_TEXT_RE.findall(xml) if b"<t" in xml else []
        values = _TEXT_VALUE_RE.findall(xml) if _TEXT_TYPE_RE.search(xml) else []
        self.size.text_bytes += sum(self.shared[index] for index in indexes if index < known)
        self.size.text_bytes += sum(map(len, inline)) + sum(map(len, values))
        self.size.texts += len(indexes) + len(inline) + len(values)


def _shared_string_lengths(archive: zipfile.ZipFile) -> array[int]:
    """The length in bytes of each shared string's XML (its text, and any formatting runs: an upper bound), in
    order, read in pieces: calamine loads the whole table when it opens the workbook."""
    lengths: array[int] = array("q")
    try:
        info = archive.getinfo("xl/sharedStrings.xml")
    except KeyError:
        return lengths
    carry = b""
    for piece in _xml_pieces(lambda: archive.open(info)):
        data = carry + (_TAG_PREFIX_RE.sub(rb"<\1", piece) if b":" in piece else piece)
        # A piece never ends inside a tag, but a string may go on into the next piece: keep it for then.
        end = max(data.rfind(b"</si>") + len(b"</si>"), data.rfind(b"<si/>") + len(b"<si/>"), 0)
        lengths.extend(len(text) for text in _SHARED_STRING_RE.findall(data, 0, end))
        carry = data[end:]
    return lengths


def _xml_pieces(open_member: Callable[[], IO[bytes]]) -> Iterator[bytes]:
    """A member's bytes in pieces of about 1 MB that end just before a "<", so that no tag is cut in two."""
    with open_member() as stream:
        pending = b""
        while chunk := stream.read(1024 * 1024):
            data = pending + chunk
            cut = data.rfind(b"<")
            if cut > 0:
                yield data[:cut]
                data = data[cut:]
            pending = data
        yield pending


def _column_number(letters: bytes) -> int:
    """1 for A, 27 for AA."""
    number = 0
    for char in letters.upper():
        number = number * 26 + char - 64
    return number


def _workbook_sheets(archive: zipfile.ZipFile) -> list[tuple[str, str]]:
    """(sheet name, member name) of every sheet workbook.xml lists, in order; the member is "" when its
    relationship is missing. Empty when workbook.xml can't be read (calamine then says what is wrong)."""
    try:
        workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    except (KeyError, ElementTree.ParseError, DefusedXmlException, zipfile.BadZipFile, OSError, ValueError):
        return []
    try:
        relations = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    except (KeyError, ElementTree.ParseError, DefusedXmlException, zipfile.BadZipFile, OSError, ValueError):
        relations = ElementTree.fromstring("<Relationships/>")
    targets = {}
    for relation in relations.iter():
        target = relation.get("Target", "")
        member = target[1:] if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))
        targets[relation.get("Id")] = member
    sheets = []
    for sheet in workbook.iter():
        if sheet.tag.rsplit("}", 1)[-1] == "sheet":
            relation = next((value for key, value in sheet.attrib.items() if key.rsplit("}", 1)[-1] == "id"), None)
            sheets.append((sheet.get("name", ""), targets.get(relation, "")))
    return sheets


def _is_encrypted(stream: IO[bytes]) -> bool:
    """True for a password-protected .xlsx/.xlsm: Excel wraps those in a CFB container, like an .xls."""
    overlap = max(len(marker) for marker in _ENCRYPTED_MARKERS) - 1
    tail = b""
    while chunk := stream.read(1024 * 1024):
        window = tail + chunk
        if any(marker in window for marker in _ENCRYPTED_MARKERS):
            return True
        tail = window[-overlap:]
    return False


def _open_workbook(source: str | os.PathLike[str] | IO[bytes], named_right: bool) -> python_calamine.CalamineWorkbook:
    try:
        # calamine picks its reader from a path's extension, but from the content of a file object.
        if isinstance(source, str | os.PathLike) and named_right:
            return python_calamine.CalamineWorkbook.from_path(source)
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as stream:
                return python_calamine.CalamineWorkbook.from_filelike(stream)
        source.seek(0)
        return python_calamine.CalamineWorkbook.from_filelike(source)
    except python_calamine.PasswordError as error:
        raise SpreadsheetError(_LOCKED_MESSAGE) from error
    except python_calamine.CalamineError as error:
        raise SpreadsheetError(f"The file is damaged or is not an Excel workbook. {_RESAVE}") from error


def _workbook_tables(
    workbook: python_calamine.CalamineWorkbook, forced: str | None, sheets: list[str]
) -> Iterator[_Table]:
    """The sheets to look at, in order, loaded one at a time (calamine loads a whole sheet's cells at once)."""
    visible = [m.name for m in workbook.sheets_metadata if m.visible == python_calamine.SheetVisibleEnum.Visible]
    if forced is not None:
        name = forced if forced in sheets else next((s for s in sheets if s.casefold() == forced.casefold()), None)
        if name is None:
            shown = ", ".join(_quoted(sheet) for sheet in sheets[:30])
            raise SpreadsheetError(
                f"There is no sheet named {_quoted(forced)}. The sheets are: {shown}.", sheets=sheets
            )
        names = [name]
    else:
        # Hidden sheets often hold lookup lists; look at them only after the visible ones.
        names = visible + [name for name in sheets if name not in visible]
    for name in names:
        try:
            sheet = workbook.get_sheet_by_name(name)
        except python_calamine.PasswordError as error:
            raise SpreadsheetError(_LOCKED_MESSAGE) from error
        except python_calamine.CalamineError as error:
            if forced is not None:
                raise SpreadsheetError(f"The sheet '{name}' could not be read ({error}). {_RESAVE}") from error
            continue  # chart sheets and the like have no cells
        table = _SheetTable(sheet, hidden=name not in visible)
        del sheet  # held by `table` alone, so that releasing it frees the cells
        yield table


# --- small helpers -------------------------------------------------------------------------------------------


def _opener(source: str | os.PathLike[str] | IO[bytes]) -> Callable[[], contextlib.AbstractContextManager[IO[bytes]]]:
    """A way to get the bytes from the start again: reopen a path, or rewind a file object (which stays open,
    since it belongs to the caller)."""
    if isinstance(source, str | os.PathLike):
        path = source
        return lambda: open(path, "rb")

    @contextlib.contextmanager
    def rewound() -> Iterator[IO[bytes]]:
        source.seek(0)
        yield source

    return rewound


def _nothing_to_close() -> None:
    pass


def _quoted(text: str, limit: int = 40) -> str:
    """A header or sheet name inside a message: quoted, and cut short (a header cell can hold a whole page)."""
    return f"'{text[: limit - 1]}…'" if len(text) > limit else f"'{text}'"


def _csv_error(error: csv.Error, row: int | None) -> str:
    where = f"Row {row}" if row else "The file"
    if "field larger than field limit" in str(error):
        # A quote that opens a cell and is never closed swallows every line after it into that one cell.
        return (
            f"{where} could not be read: it has a cell of more than {csv.field_size_limit():,} characters. Usually "
            f'a quotation mark (") opens a cell and is never closed, so the rest of the file ran into that cell. '
            f"Remove the stray quotation mark (or shorten the cell) and upload again."
        )
    return f"{where} could not be read ({error}). {_RESAVE}"


def _too_many_sheets(sheets: int, max_sheets: int) -> str:
    return (
        f"This workbook has {sheets:,} sheets; the portal reads at most {max_sheets:,}. Delete the sheets you do not "
        f"need, or copy the devices into a new workbook, and upload again."
    )


def _grid(size: _SheetSize) -> str:
    column = Column(size.columns - 1, "", None).letter if size.columns <= 18_278 else f"number {size.columns:,}"
    return f"down to row {size.rows:,} and across to column {column}"


def _sheet_too_big(name: str | None, size: _SheetSize, max_cells: int) -> str:
    where = f"The sheet {_quoted(name)}" if name else "A sheet of this workbook"
    return (
        f"{where} reaches {_grid(size)}: {size.cells:,} cells, more than the {max_cells:,} a device list may have. "
        "If something was typed far below or to the right of the devices, delete those rows and columns (or copy "
        "the devices into a new workbook); otherwise split the file. Then upload again."
    )


def _workbook_too_big(total: int, largest: tuple[int, str], max_cells: int) -> str:
    cells, name = largest
    biggest = f" (the largest, {_quoted(name)}, has {cells:,})" if name else ""
    return (
        f"This workbook's sheets reach {total:,} cells or more in all, counting each sheet from A1 to its last "
        f"filled row and column{biggest}; the portal reads at most {max_cells:,}. Delete the sheets you do not "
        "need and anything typed far below or to the right of the devices, or copy the devices into a new "
        "workbook, and upload again."
    )


def _sheet_too_heavy(name: str | None, size: _SheetSize, table: int, max_memory: int, collected: int = 0) -> str:
    """`collected` is counted when it is what tips the sheet over (see FILLED_CELL_BYTES): then the cells, not
    the text, are what takes the memory, and the figure shown is the whole of it."""
    where = f"the sheet {_quoted(name)}" if name else "a sheet of this workbook"
    needed, limit = _megabytes(table + size.memory + collected), _megabytes(max_memory)
    text = size.text_bytes + table
    if size.cells * CELL_BYTES + collected >= text:
        return (
            f"{where[0].upper()}{where[1:]} reaches {_grid(size)}: {size.cells:,} cells, about {needed} of memory "
            f"to read; the portal reads at most {limit} at once. If something was typed far below or to the right "
            "of the devices, delete those rows and columns (or copy the devices into a new workbook); otherwise "
            "split the file. Then upload again."
        )
    return (
        f"Reading {where} would take about {needed} of memory, {_megabytes(text)} of it text; the portal reads at "
        f"most {limit} at once. Usually a long text is repeated in many cells (notes, descriptions): delete those "
        "columns, or copy only the devices into a new workbook, and upload again."
    )


def _too_many_rows(max_rows: int) -> str:
    return (
        f"The file has more than {max_rows:,} rows; the limit is {max_rows:,}. Split it into smaller files and upload "
        f"them one at a time."
    )


def _megabytes(size: int) -> str:
    # Rounded up, so a file just over the limit never reads as the limit itself.
    return f"{math.ceil(size * 10 / (1024 * 1024)) / 10:.1f} MB"
