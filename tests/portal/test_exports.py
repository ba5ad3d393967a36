from __future__ import annotations

import csv
import datetime
import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import openpyxl
import pytest
import python_calamine
from django.http import HttpResponseBase

from portal.exports import (
    CSV_CONTENT_TYPE,
    TEMPLATE_EXAMPLE,
    XLSX_CONTENT_TYPE,
    Column,
    device_template_csv,
    device_template_xlsx,
    safe_filename,
    stream_csv,
    xlsx_response,
)
from portal.spreadsheets import Status, open_spreadsheet
from tests.data.hostile.make_corpus import imei

# What spreadsheet programs run as a formula, as OWASP lists it, plus the tab and CR variants.
PAYLOADS = ["=1+1", "+1+1", "-1+1", "@SUM(A1:A2)", '=HYPERLINK("http://x")', "\t=1+1", "\r=1+1", '=cmd|"/c calc"!A1']

COLUMNS = [
    Column("IMEI", "imei", kind="identifier"),
    Column("Customer", "customer"),
    Column("Count", "count", kind="number"),
    Column("Registered", "registered", kind="datetime"),
]

# Closing a response fires request_finished, which touches the database connection.
pytestmark = pytest.mark.django_db


def content(response: HttpResponseBase) -> bytes:
    try:
        return b"".join(response)  # type: ignore[arg-type]
    finally:
        response.close()  # an xlsx response deletes its temporary file when closed


def csv_rows(response: HttpResponseBase) -> list[list[str]]:
    data = content(response)
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def xlsx_rows(response: HttpResponseBase, sheet: int = 0) -> list[list[Any]]:
    workbook = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(content(response)))
    return workbook.get_sheet_by_index(sheet).to_python()


def hostile_rows() -> list[dict[str, Any]]:
    # Every payload in every column, including columns whose kind would normally hold a number or a date.
    return [{"imei": p, "customer": p, "count": p, "registered": p} for p in PAYLOADS]


def assert_inert(cell: Any) -> None:
    assert isinstance(cell, str)
    assert cell[0] not in "=+-@\t\r", repr(cell)


# --- formula injection --------------------------------------------------------------------------------------


def test_csv_neutralises_formulas_in_every_column() -> None:
    rows = csv_rows(stream_csv(COLUMNS, hostile_rows(), "devices.csv"))
    assert len(rows) == 1 + len(PAYLOADS)
    for payload, row in zip(PAYLOADS, rows[1:], strict=True):
        # A tab or CR is also where a reader splitting on it starts a cell: the "=" after it is quoted as well.
        assert row == ["'" + re.sub(r"(?<=[\t\r])=", "'=", payload)] * 4
        for cell in row:
            assert_inert(cell)


def test_xlsx_neutralises_formulas_in_every_column() -> None:
    rows = xlsx_rows(xlsx_response(COLUMNS, hostile_rows(), "devices.xlsx", "Devices"))
    assert len(rows) == 1 + len(PAYLOADS)
    for payload, row in zip(PAYLOADS, rows[1:], strict=True):
        # XML reads a bare CR back as LF; either way the quote comes first.
        assert row == ["'" + payload.replace("\r", "\n")] * 4
    # And nothing was stored as a formula: openpyxl shows formulas as their "=..." text with data_type "f".
    response = xlsx_response(COLUMNS, hostile_rows(), "devices.xlsx", "Devices")
    sheet = openpyxl.load_workbook(io.BytesIO(content(response))).active
    assert all(cell.data_type == "s" for row in sheet.iter_rows(min_row=2) for cell in row)


# The cases of the CSV-injection report: a formula after a separator or a line break inside a value, which a
# spreadsheet program splitting on another separator (";" in many European locales) would start a cell with.
SPLIT_PAYLOADS = [
    "x;=cmd|' /C calc'!A0;y",
    "=1+1",
    'a,=HYPERLINK("http://x")',
    "@SUM(1)",
    "-2+3",
    "note\r\n=cmd|' /C calc'!A0",
    'a;"=1+1',
    "a\t-1",
    "a; @SUM(1)",
]
TRIGGERS = "=+-@\t\r\n"


def assert_no_cell_starts_a_formula(data: bytes) -> None:
    """Read the CSV as Excel would in a "," locale, a ";" locale and as tab-separated text: whichever way it is
    split, no cell may start with a formula character (spaces and quotation marks before it do not help)."""
    text = data.decode("utf-8-sig")
    for delimiter in (",", ";", "\t"):
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            for cell in row:
                assert cell.lstrip(' "')[:1] not in set(TRIGGERS), (delimiter, cell)


def test_csv_quotes_and_neutralises_a_formula_after_a_separator() -> None:
    columns = [Column("IMEI", "imei", kind="identifier"), Column("Customer", "customer")]
    rows = [{"imei": "359221145350335", "customer": payload} for payload in SPLIT_PAYLOADS]
    data = content(stream_csv(columns, rows, "x"))
    assert data.split(b"\r\n")[1:3] == [
        b"359221145350335,\"x;'=cmd|' /C calc'!A0;y\"",
        b'359221145350335,"\'=1+1"',
    ]
    lines = data.decode("utf-8-sig").split("\r\n")
    assert lines[3:8] == [
        '359221145350335,"a,\'=HYPERLINK(""http://x"")"',
        '359221145350335,"\'@SUM(1)"',
        '359221145350335,"\'-2+3"',
        '359221145350335,"note',  # a quoted line break, then the formula it would have started
        "'=cmd|' /C calc'!A0\"",
    ]
    assert lines[8:11] == [
        '359221145350335,"a;""\'=1+1"',
        '359221145350335,"a\t\'-1"',
        '359221145350335,"a; \'@SUM(1)"',
    ]
    assert_no_cell_starts_a_formula(data)
    # Read with the right separator, every value comes back whole: only the quotes were added.
    assert [row[1] for row in csv_rows(stream_csv(columns, rows, "x"))[1:]] == [
        "x;'=cmd|' /C calc'!A0;y",
        "'=1+1",
        'a,\'=HYPERLINK("http://x")',
        "'@SUM(1)",
        "'-2+3",
        "note\r\n'=cmd|' /C calc'!A0",
        "a;\"'=1+1",
        "a\t'-1",
        "a; '@SUM(1)",
    ]


def test_csv_payloads_in_every_column_never_start_a_cell() -> None:
    rows = [{"imei": p, "customer": p, "count": p, "registered": p} for p in [*PAYLOADS, *SPLIT_PAYLOADS]]
    data = content(stream_csv(COLUMNS, rows, "x"))
    assert_no_cell_starts_a_formula(data)
    assert len(csv_rows(stream_csv(COLUMNS, rows, "x"))) == 1 + len(rows)


def test_csv_quotes_every_field_with_a_separator_quote_line_break_or_formula_character() -> None:
    columns = [Column("Text", "text")]
    for value in ("a,b", "a;b", "a\tb", 'a"b', "a'b", "a\rb", "a\nb", "a=b", "a+b", "a-b", "a@b", "SM-G991B"):
        line = content(stream_csv(columns, [{"text": value}], "x")).split(b"\r\n", 1)[1]
        assert line.startswith(b'"'), value
    # Plain text, digits and IMEIs stay bare, so other systems and the upload page read them back unchanged.
    for value in ("359221145350335", "004401234567892", "Acme Mobile", "R58N123ABCD", "1234"):
        line = content(stream_csv(columns, [{"text": value}], "x")).split(b"\r\n")[1]
        assert line == value.encode(), value


def test_csv_keeps_numbers_and_dates_unprefixed() -> None:
    rows = [{"imei": 359221145350335, "count": -5, "registered": datetime.datetime(2026, 11, 3, 12, 30)}]
    data = content(stream_csv(COLUMNS, rows, "x"))
    assert data.split(b"\r\n")[1] == b'359221145350335,,"-5","2026-11-03T12:30:00Z"'


def test_csv_export_with_hostile_text_can_be_uploaded_again() -> None:
    # Many ";" inside quoted cells must not make the reader take ";" for the separator.
    columns = [Column("IMEI", "imei", kind="identifier"), Column("Model", "model"), Column("Order", "order")]
    rows = [{"imei": imei(n), "model": SPLIT_PAYLOADS[n % len(SPLIT_PAYLOADS)], "order": "a;b;c;=d"} for n in range(30)]
    data = content(stream_csv(columns, rows, "x"))
    with open_spreadsheet(io.BytesIO(data), "export.csv") as sheet:
        assert sheet.delimiter == ","
        read = list(sheet.iter_rows())
    assert [row.raw for row in read] == [row["imei"] for row in rows]
    assert all(row.status == Status.VALID for row in read)


def test_xlsx_writes_no_formula_for_any_payload() -> None:
    rows = [{"imei": p, "customer": p, "count": p, "registered": p} for p in [*PAYLOADS, *SPLIT_PAYLOADS]]
    columns = [Column("=1+1", "imei", kind="identifier"), *COLUMNS[1:]]
    data = content(xlsx_response(columns, rows, "x", "x", max_rows=len(rows) - 1))
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    cells = [cell for row in sheet.iter_rows() for cell in row if cell.value is not None]
    assert len(cells) == 4 + 4 * (len(rows) - 1) + 1  # the header, the rows kept, the "cut" note
    assert all(cell.data_type == "s" for cell in cells)
    assert all(cell.value[0] not in TRIGGERS for cell in cells), [c.value for c in cells if c.value[0] in TRIGGERS]


def test_neutralise_formula_covers_a_leading_line_feed() -> None:
    # OWASP lists line feed (0x0A) with tab and carriage return.
    columns = [Column("Text", "text")]
    assert csv_rows(stream_csv(columns, [{"text": "\n=1+1"}], "x"))[1] == ["'\n'=1+1"]
    assert xlsx_rows(xlsx_response(columns, [{"text": "\n=1+1"}], "x", "x"))[1] == ["'\n=1+1"]


def test_headers_are_neutralised_too() -> None:
    # Invalid-row downloads repeat the headers of the user's own file.
    columns = [Column("=HYPERLINK(1)", "a"), Column("@x", "b", kind="identifier")]
    assert csv_rows(stream_csv(columns, [], "x"))[0] == ["'=HYPERLINK(1)", "'@x"]
    assert xlsx_rows(xlsx_response(columns, [], "x", "x"))[0] == ["'=HYPERLINK(1)", "'@x"]


def test_xlsx_drops_control_characters_and_neutralises_what_they_hid() -> None:
    rows = [{"customer": "\x01=1+1", "imei": "35\x0292211"}]
    exported = xlsx_rows(xlsx_response(COLUMNS, rows, "x", "x"))
    assert exported[1][:2] == ["3592211", "'=1+1"]


def test_xlsx_keeps_error_like_text_as_text() -> None:
    exported = xlsx_rows(xlsx_response(COLUMNS, [{"customer": "#N/A", "imei": "#REF!"}], "x", "x"))
    assert exported[1][:2] == ["#REF!", "#N/A"]


# --- identifiers, numbers, dates ----------------------------------------------------------------------------


def identifier_rows() -> list[dict[str, Any]]:
    return [
        {"imei": "359221145350335", "customer": "0042"},
        {"imei": 359221145350335, "customer": 42},  # an int from the database is still written as text
        {"imei": "004401234567890", "customer": "a"},
    ]


def test_identifiers_stay_exact_text_in_csv() -> None:
    rows = csv_rows(stream_csv(COLUMNS, identifier_rows(), "x"))
    assert [row[:2] for row in rows[1:]] == [
        ["359221145350335", "0042"],
        ["359221145350335", "42"],
        ["004401234567890", "a"],
    ]


def test_identifiers_stay_exact_text_in_xlsx() -> None:
    rows = xlsx_rows(xlsx_response(COLUMNS, identifier_rows(), "x", "x"))
    assert [row[0] for row in rows[1:]] == ["359221145350335", "359221145350335", "004401234567890"]
    sheet = openpyxl.load_workbook(io.BytesIO(content(xlsx_response(COLUMNS, identifier_rows(), "x", "x")))).active
    for (cell,) in sheet.iter_rows(min_row=2, max_col=1):
        assert cell.data_type == "s"
        assert cell.number_format == "@"


def test_numbers_and_datetimes_stay_typed() -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    rows = [
        {"count": 1234, "registered": datetime.datetime(2026, 11, 3, 14, 30, tzinfo=plus_two)},
        {"count": Decimal("2.5"), "registered": datetime.date(2026, 11, 4)},
        {"imei": "1", "count": float("nan"), "registered": None},
    ]
    exported = csv_rows(stream_csv(COLUMNS, rows, "x"))
    assert [row[2:] for row in exported[1:]] == [["1234", "2026-11-03T12:30:00Z"], ["2.5", "2026-11-04"], ["", ""]]

    exported = xlsx_rows(xlsx_response(COLUMNS, rows, "x", "x"))
    assert exported[1][2:] == [1234, datetime.datetime(2026, 11, 3, 12, 30)]
    assert exported[2][2:] == [2.5, datetime.date(2026, 11, 4)]
    assert exported[3][2:] == ["", ""]


def test_negative_numbers_are_numbers_not_neutralised_text() -> None:
    exported = xlsx_rows(xlsx_response(COLUMNS, [{"count": -5}], "x", "x"))
    assert exported[1][2] == -5


def test_columns_read_attributes_and_callables() -> None:
    @dataclass
    class Device:
        imei: str
        model: str

    columns = [Column("IMEI", "imei", kind="identifier"), Column("Model", lambda device: device.model.lower())]
    rows = csv_rows(stream_csv(columns, [Device("359221145350335", "SM-G991B")], "x"))
    assert rows[1] == ["359221145350335", "sm-g991b"]


def test_unknown_column_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        Column("IMEI", "imei", kind="integer")  # type: ignore[arg-type]


# --- CSV response -------------------------------------------------------------------------------------------


def test_csv_response_has_bom_headers_and_crlf_lines() -> None:
    response = stream_csv(COLUMNS, [{"imei": "359221145350335"}], "devices.csv")
    assert response["Content-Type"] == CSV_CONTENT_TYPE
    assert response["Content-Disposition"] == 'attachment; filename="devices.csv"'
    data = content(response)
    assert data == b"\xef\xbb\xbfIMEI,Customer,Count,Registered\r\n359221145350335,,,\r\n"


def test_csv_reads_rows_only_as_the_response_is_iterated() -> None:
    consumed = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal consumed
        for n in range(5):
            consumed += 1
            yield {"imei": f"35922114535{n:04d}"}
        raise RuntimeError("the database went away")

    response = stream_csv(COLUMNS, rows(), "x")
    assert consumed == 0
    chunks = iter(response)
    assert next(chunks) == b"\xef\xbb\xbfIMEI,Customer,Count,Registered\r\n"
    assert consumed == 0
    with pytest.raises(RuntimeError, match="went away"):
        next(chunks)
    assert consumed == 5


def test_csv_sends_a_long_list_in_several_chunks() -> None:
    rows = ({"imei": f"35{n:013d}", "customer": "x" * 50} for n in range(20_000))
    chunks = list(stream_csv(COLUMNS, rows, "x"))
    assert len(chunks) > 5
    assert max(len(chunk) for chunk in chunks) < 100_000
    assert b"".join(chunks).count(b"\r\n") == 20_001


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("devices.csv", "devices.csv"),
        ("devices", "devices.csv"),
        ('evil"name\r\nSet-Cookie: a=b.csv', "evil_name_Set-Cookie_a_b.csv"),
        ("../../etc/passwd", "etc_passwd.csv"),
        ("C:\\Users\\x\\report.csv", "C_Users_x_report.csv"),
        ("Müller Geräte.csv", "Muller_Gerate.csv"),
        ('"', "export.csv"),
        ("", "export.csv"),
        ("a" * 300, "a" * 100 + ".csv"),
    ],
)
def test_filenames_are_made_safe(given: str, expected: str) -> None:
    assert safe_filename(given, ".csv") == expected


def test_hostile_filename_cannot_break_the_header() -> None:
    response = stream_csv(COLUMNS, [], 'a"; filename=evil.exe\r\nX-Evil: 1/..\\.csv')
    disposition = response["Content-Disposition"]
    assert disposition == 'attachment; filename="a_filename_evil.exe_X-Evil_1.csv"'
    assert "X-Evil" not in response.headers
    response = xlsx_response(COLUMNS, [], 'x"\n/y', "x")
    assert response["Content-Disposition"] == 'attachment; filename="x_y.xlsx"'
    response.close()


# --- xlsx response ------------------------------------------------------------------------------------------


def test_xlsx_response_layout() -> None:
    columns = [*COLUMNS[:3], Column("Registered", "registered", kind="datetime", width=22)]
    response = xlsx_response(columns, [{"imei": "359221145350335"}], "devices", "Devices: all/[current]")
    assert response["Content-Type"] == XLSX_CONTENT_TYPE
    assert response["Content-Disposition"] == 'attachment; filename="devices.xlsx"'
    workbook = openpyxl.load_workbook(io.BytesIO(content(response)))
    sheet = workbook.active
    assert sheet.title == "Devices  all  current"
    assert sheet.freeze_panes == "A2"
    assert [cell.value for cell in sheet[1]] == ["IMEI", "Customer", "Count", "Registered"]
    assert all(cell.font.bold for cell in sheet[1])
    assert sheet.column_dimensions["A"].width == 18
    assert sheet.column_dimensions["D"].width == 22


def test_xlsx_notes_when_the_list_was_cut() -> None:
    consumed = 0

    def rows() -> Iterator[dict[str, str]]:
        nonlocal consumed
        for n in range(10):
            consumed += 1
            yield {"imei": f"35922114535{n:04d}"}

    exported = xlsx_rows(xlsx_response(COLUMNS, rows(), "x", "x", max_rows=3))
    assert [row[0] for row in exported[1:4]] == ["359221145350000", "359221145350001", "359221145350002"]
    assert "359221145350003" not in {row[0] for row in exported}
    note = exported[-1][0]
    assert "cut at 3 rows" in note
    assert "CSV" in note
    assert consumed == 4  # one past the limit, to know there were more; the rest is never read


def test_xlsx_without_note_when_the_list_fits_exactly() -> None:
    rows = [{"imei": f"35922114535{n:04d}"} for n in range(3)]
    exported = xlsx_rows(xlsx_response(COLUMNS, rows, "x", "x", max_rows=3))
    assert len(exported) == 4
    assert not any("cut at" in str(cell) for row in exported for cell in row)


def test_xlsx_failure_leaves_no_temporary_files(settings, tmp_path) -> None:
    settings.PORTAL_TEMP_DIR = tmp_path

    def rows() -> Iterator[dict[str, str]]:
        yield {"imei": "359221145350335"}
        raise RuntimeError("the database went away")

    def openpyxl_files() -> set[str]:
        return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("openpyxl.")}

    before = openpyxl_files()
    with pytest.raises(RuntimeError, match="went away"):
        xlsx_response(COLUMNS, rows(), "x", "x")
    assert openpyxl_files() <= before
    assert os.listdir(tmp_path) == []


def test_xlsx_is_built_in_the_portals_own_temporary_folder(settings, tmp_path) -> None:
    # A killed process leaves the half-built sheet behind; named portal-*, the clean-up finds it (portal.cleanup).
    settings.PORTAL_TEMP_DIR = tmp_path
    seen: list[str] = []

    def rows() -> Iterator[dict[str, str]]:
        seen.extend(os.listdir(tmp_path))
        yield {"imei": "359221145350335"}

    exported = xlsx_rows(xlsx_response(COLUMNS, rows(), "x", "x"))
    assert exported[1][0] == "359221145350335"
    assert len(seen) == 1 and seen[0].startswith("portal-export-"), seen
    assert os.listdir(tmp_path) == []  # deleted once the workbook was saved


def test_xlsx_max_rows_must_fit_in_excel() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        xlsx_response(COLUMNS, [], "x", "x", max_rows=1_048_576)
    with pytest.raises(ValueError, match="max_rows"):
        xlsx_response(COLUMNS, [], "x", "x", max_rows=0)


def test_xlsx_export_can_be_uploaded_again() -> None:
    rows = [{"imei": "359221145350335", "customer": "Acme"}, {"imei": "004401234567892", "customer": "=evil"}]
    data = content(xlsx_response(COLUMNS, rows, "x", "x"))
    with open_spreadsheet(io.BytesIO(data), "export.xlsx") as sheet:
        assert [row.raw for row in sheet.iter_rows()] == ["359221145350335", "004401234567892"]


# --- upload templates ---------------------------------------------------------------------------------------


def test_xlsx_template_has_text_columns_and_an_example_row() -> None:
    workbook = openpyxl.load_workbook(io.BytesIO(device_template_xlsx()))
    assert workbook.sheetnames == ["Devices", "How to fill in"]
    sheet = workbook["Devices"]
    assert [cell.value for cell in sheet[1]] == ["IMEI", "Serial Number", "Model", "Order Number"]
    assert [cell.value for cell in sheet[2]] == [TEMPLATE_EXAMPLE["imei"], "R58N123ABCD", "SM-G991B", "PO-1001"]
    assert sheet.freeze_panes == "A2"
    for row in (2, 3, 500, 10_000):
        assert sheet.cell(row, 1).number_format == "@"
        assert sheet.cell(row, 2).number_format == "@"
    assert sheet.cell(2, 1).data_type == "s"

    instructions = " ".join(str(row[0]) for row in workbook["How to fill in"].iter_rows(values_only=True))
    assert "one device per row" in instructions.lower()
    assert "15 digits" in instructions
    assert "11 letters and digits" in instructions
    assert "scientific notation" in instructions


def test_xlsx_template_example_row_is_a_valid_upload() -> None:
    with open_spreadsheet(io.BytesIO(device_template_xlsx()), "template.xlsx") as sheet:
        rows = list(sheet.iter_rows())
    assert [(row.raw, row.status) for row in rows] == [(TEMPLATE_EXAMPLE["imei"], Status.VALID)]


def test_csv_template() -> None:
    data = device_template_csv()
    assert data == (
        b'\xef\xbb\xbfIMEI,Serial Number,Model,Order Number\r\n353918051234561,R58N123ABCD,"SM-G991B","PO-1001"\r\n'
    )
    with open_spreadsheet(io.BytesIO(data), "template.csv") as sheet:
        assert [(row.raw, row.status) for row in sheet.iter_rows()] == [(TEMPLATE_EXAMPLE["imei"], Status.VALID)]
