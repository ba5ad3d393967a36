"""Hostile spreadsheets through the real upload pages (issue 8).

Every file of the corpus in tests/data/hostile/ (plus the big ones make_corpus.py builds at test time) is posted
to the KDP upload form exactly as a browser would send it (multipart, the file name as given), the parse job runs
in-process, and the preview page is fetched. For each one:

- the user is told something they can act on: the fragment in MANIFEST appears in the page;
- no response is a 500: the form answers 200 (its own error) or redirects to the preview, which answers 200;
- nothing is submitted: no KDP transaction, Knox Guard action or device row, no job but the parse job, and not
  one HTTP request to Knox. The upload is REFUSED, or READY with its bad rows flagged (and never SUBMITTED);
- nothing from the file comes back as live markup.

A few files also go through the Knox Guard bulk form, which stages through the same code. The tests at the end
pin the fixes this corpus led to (portal/spreadsheets.py, portal/identifiers.py, portal/uploads.py).
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path

import openpyxl
import pytest
import responses

from guard.models import GuardAction, GuardChunk, GuardDevice, GuardUpload
from kdp.models import Device, Transaction, TransactionDevice
from portal import identifiers, spreadsheets
from portal.models import Job, Upload, UploadRow
from portal.uploads import stage_upload
from tests.data.hostile import make_corpus
from tests.data.hostile.make_corpus import INJECTIONS, XSS, XSS_IMG, imei
from tests.guard.helpers import guard_account
from tests.kdp.helpers import make_upload, ready_account

CORPUS = Path(make_corpus.__file__).resolve().parent

FORM = "form"  # refused by the upload form itself: nothing is stored
REFUSED = "refused"  # stored, read, refused with a reason; no rows can be submitted
READY = "ready"  # read; the bad rows are flagged and left out, the good ones offered


@dataclass(frozen=True)
class Case:
    file: str  # in tests/data/hostile/, or a name in make_corpus.GENERATED
    hostile: str  # what is wrong with it
    outcome: str  # FORM, REFUSED or READY
    says: str  # what the user must be shown (in the page text)
    name: str = ""  # the file name the browser sends, when not `file`
    valid: int | None = None  # rows offered for submission
    flagged: dict[int, str] = field(default_factory=dict)  # row number -> fragment of its reason
    label: str = ""  # the test id, when the file is sent under another name

    @property
    def id(self) -> str:
        return self.label or self.file


SCIENTIFIC = "scientific notation"
HOLDS = "What the file holds"  # the preview of a file that was read
# Browsers send a file name's double quotes as %22, so this markup has none.
MARKUP_NAME = "<img src=x onerror=alert(1)>.csv"
# 200 characters (the most a form accepts, portal.files.FILE_NAME_MAX_CHARS) but 592 bytes: a file system takes 255.
LONG_NAME = "端末一覧" * 49 + ".csv"
NOT_A_SPREADSHEET = "This file is not a spreadsheet"
MORE_CELLS = "more than the 10,000,000 a device list may have"

MANIFEST = [
    # --- bombs: refused before anything expands ---
    Case("zip-bomb.xlsx", "one sheet of 120 MB of spaces packed into 120 KB", REFUSED, "would expand to 120.1 MB"),
    Case(
        "zip-bomb-many-members.xlsx",
        "30 members of 9.5 MB, none suspicious alone, 285 MB together",
        REFUSED,
        "would expand to",
    ),
    Case(
        "sparse-range-bomb.xlsx",
        "2 KB: values in A1 and XFD1048576, a 550 GB grid for calamine",
        REFUSED,
        "reaches down to row 1,048,576 and across to column XFD",
    ),
    Case(
        "rowless-range-bomb.xlsx",
        "cells without positions run across 16,384 columns; one more value at row 200,000",
        REFUSED,
        MORE_CELLS,
    ),
    Case(
        "prefixed-range-bomb.xlsx",
        "the same trick with x: namespace prefixes and spaces around '='",
        REFUSED,
        "across to column XFD",
    ),
    Case("lying-sizes.xlsx", "the zip directory declares 300 bytes; the sheet unpacks to 40 MB", REFUSED, "damaged"),
    # --- workbook limits (issue 13): each sheet was measured alone, and finding the header loaded them all ---
    Case(
        "far-cells-on-every-sheet.xlsx",
        "61 KB: 200 sheets, each reaching from A1 to XFD600 (9.8 million cells a sheet); 100 s and 700 MB to refuse",
        REFUSED,
        "This workbook has 200 sheets; the portal reads at most 50. Delete the sheets you do not need",
    ),
    Case(
        "far-cells-on-fifty-sheets.xlsx",
        "50 sheets reaching from A1 to XFD15: 245,760 cells each, 12.3 million together",
        REFUSED,
        "cells or more in all, counting each sheet from A1 to its last filled row and column (the largest, "
        "'Sheet1', has 245,760); the portal reads at most 10,000,000",
    ),
    Case(
        "big-grid.xlsx",
        "1.6 MB: a header across 50 columns over 199,999 IMEIs, a grid of 10 million cells (320 MB in calamine)",
        REFUSED,
        "The sheet 'Devices' reaches down to row 200,000 and across to column AX: 10,000,000 cells, about 305.2 MB "
        "of memory to read; the portal reads at most 128.0 MB at once",
    ),
    Case(
        "many-sheets.xlsx",
        "212 small sheets, the devices on the last",
        REFUSED,
        "This workbook has 212 sheets; the portal reads at most 50.",
    ),
    Case(
        "shared-string-bomb.xlsx",
        "3.4 MB: a million cells sharing one string of 1,000 characters, which calamine copies into each (810 MB)",
        REFUSED,
        "of it text; the portal reads at most 128.0 MB at once. Usually a long text is repeated in many cells",
    ),
    Case("million-rows.csv", "1,000,000 rows, over the 200,000-row limit", REFUSED, "more than 200,000 rows"),
    Case("million-rows.xlsx", "1,000,000 rows in a workbook", REFUSED, "more than 200,000 rows"),
    # --- not spreadsheets at all ---
    Case("pdf-renamed.xlsx", "a PDF renamed .xlsx", REFUSED, "This file is a PDF document"),
    Case("png-renamed.xls", "a PNG image renamed .xls", REFUSED, NOT_A_SPREADSHEET),
    Case("elf-renamed.csv", "a Linux executable renamed .csv", REFUSED, NOT_A_SPREADSHEET),
    Case("exe-renamed.xlsx", "a Windows executable renamed .xlsx", REFUSED, NOT_A_SPREADSHEET),
    Case("gzip-renamed.csv", "compressed (random-looking) bytes renamed .csv", REFUSED, "text encoding is unknown"),
    Case("xlsb-renamed.xlsx", "an Excel binary workbook renamed .xlsx", REFUSED, "Excel binary workbook (.xlsb)"),
    Case("docx-renamed.xlsx", "a Word document renamed .xlsx", REFUSED, "This file is a Word document"),
    Case("truncated.xlsx", "the first half of a workbook (broken zip)", REFUSED, "The file is damaged"),
    Case("no-sheets.xlsx", "a valid zip whose workbook lists no sheet", REFUSED, "has no data"),
    Case(
        "password-protected.xlsx",
        "an encrypted workbook: an OLE compound file holding EncryptionInfo and EncryptedPackage",
        REFUSED,
        "password-protected; remove the password in Excel",
    ),
    Case("html-export.xls", "an HTML table saved as .xls by a legacy tool", REFUSED, "web page or XML file"),
    Case("spreadsheetml-2003.xls", "Excel 2003 XML saved as .xls", REFUSED, "web page or XML file"),
    # --- empty in various ways ---
    Case("empty.csv", "0 bytes", FORM, "The file is empty (0 bytes)"),
    Case("zero-byte.xlsx", "0 bytes named .xlsx", FORM, "The file is empty (0 bytes)"),
    Case("header-only.csv", "a header row and an empty row", REFUSED, "has a header row (row 1) but no devices"),
    Case("whitespace-only.csv", "spaces, tabs, a non-breaking space and line breaks", REFUSED, "The file has no data"),
    Case("bom-only.csv", "a UTF-8 byte order mark and nothing else", REFUSED, "The file has no data"),
    # --- wrong kind of file for this form ---
    Case("devices.json", "JSON with a .json name", FORM, "is not a spreadsheet this portal reads"),
    Case("json-as.txt", "JSON with a .txt name (.txt is accepted as CSV)", REFUSED, "No column of IMEIs"),
    Case(
        "rtl-override.exe",
        "an executable whose name shows as 'devicesexe.xlsx' (U+202E right-to-left override)",
        FORM,
        "is not a spreadsheet this portal reads",
        name="devices\u202exslx.exe",
        label="rtl-override-exe-name",
    ),
    # --- CSV syntax ---
    Case(
        "unclosed-quote.csv",
        "a quotation mark opened in row 2 and never closed: 150 KB run into one cell",
        REFUSED,
        'a quotation mark (") opens a cell and is never closed',
    ),
    Case("long-cell-1mb.csv", "a 1 MB cell", REFUSED, "has a cell of more than 131,072 characters"),
    Case(
        "mismatched-quotes.csv",
        "stray and unbalanced quotation marks",
        READY,
        "an IMEI has 15 digits and nothing else",
        valid=2,
        flagged={2: "contains the characters ','", 5: "contains the letter 'X'"},
    ),
    Case("commas-10000.csv", "10,000 commas on one line", READY, HOLDS, valid=2),
    Case(
        "duplicate-headers.csv",
        "two columns headed IMEI",
        READY,
        "2 columns are headed 'IMEI' (columns A, C); the devices were read from column A",
        valid=3,
    ),
    Case(
        "long-header.csv",
        "an IMEI header followed by 600 characters of punctuation",
        READY,
        HOLDS,
        valid=3,
    ),
    # --- encodings and control characters ---
    Case(
        "mixed-encoding.csv",
        "80 KB of UTF-8, then rows saved in cp1252",
        READY,
        "From row 2502 on, some characters could not be read as UTF-8",
        valid=2501,
        flagged={2503: "contains the character '\ufffd'"},
    ),
    Case("utf16-no-bom.txt", "UTF-16 without a byte order mark, tab-separated", READY, HOLDS, valid=3),
    Case(
        "control-characters.csv",
        "NUL, ANSI escapes (ESC), BEL, backspace and DEL in cells; CR inside a quoted IMEI",
        READY,
        "contains the character U+0000",
        valid=2,
        flagged={2: "U+0000", 3: "U+001B"},
    ),
    # --- cell contents ---
    Case(
        "formulas.xlsx",
        "HYPERLINK and DDE (=cmd|...) formulas in the IMEI and text columns, with and without cached values",
        READY,
        "contains the characters '='",
        valid=2,
        flagged={3: "empty, skipped", 4: "empty, skipped", 5: "'='", 6: "'='"},
    ),
    Case(
        "formulas.csv",
        "=HYPERLINK and =cmd|... typed into the IMEI and text columns of a CSV",
        READY,
        "contains the characters '='",
        valid=1,
        flagged={2: "'='", 3: "'='"},
    ),
    Case(
        "csv-injection.csv",
        "=, +, -, @, tab and CR payloads in every text column and in the IMEI column",
        READY,
        "an IMEI has 15 digits and nothing else",
        valid=7,
        flagged={3: "'='", 5: "'='", 7: "'+'", 9: "'+'", 11: "'@'", 13: "'='", 15: "'='"},
    ),
    Case(
        "xss.csv",
        "<script> and <img onerror> in the IMEI and text columns",
        READY,
        XSS,
        valid=1,
        flagged={3: "'<'", 4: "'<'"},
    ),
    Case(
        "no-device-column.csv",
        "no device header; the headers are markup, a DDE formula and a 6,000-character text",
        REFUSED,
        "The headers found are: '<script>alert(\"hostile\")</script>'",
    ),
    Case(
        "long-cell-1mb.xlsx",
        "a 1 MB cell of digits in the IMEI column and 1 MB in the order number",
        READY,
        "1048576 digits: an IMEI has 15 digits",
        valid=1,
        flagged={3: "1048576 digits"},
    ),
    Case(
        "distinct-characters-1mb.xlsx",
        "a 1 MB cell of 300,000 different characters (describing it used to take about 20 minutes)",
        READY,
        "others; an IMEI has 15 digits",
        valid=1,
        flagged={3: "others; an IMEI has 15 digits"},
    ),
    Case(
        "floats.csv",
        "IMEIs written as floats: 3.5922114535034e+14, a fraction, NaN, inf",
        REFUSED,
        SCIENTIFIC,
        valid=0,
        flagged={2: SCIENTIFIC, 3: SCIENTIFIC, 5: "letters", 6: "letters"},
    ),
    Case(
        "floats.xlsx",
        "IMEIs stored as rounded doubles, fractions, 1e300 and 0.000001",
        REFUSED,
        "not a whole number",
        valid=0,
        flagged={2: "wrong check digit", 4: "not a whole number", 5: "digits", 6: "not a whole number"},
    ),
    Case(
        "negative-numbers.xlsx",
        "IMEIs stored as negative numbers (the sign used to be dropped and the row accepted)",
        REFUSED,
        "this cell holds the negative number -350000000000014",
        valid=0,
        flagged={2: "negative number", 3: "negative number"},
    ),
    Case(
        "dates.xlsx",
        "a device column Excel turned into dates, and dates typed as text",
        REFUSED,
        "this cell holds a date or time (2024-03-05)",
        valid=0,
        flagged={2: "date or time", 3: "date or time", 4: "date or time", 5: "8 digits", 6: "'/'"},
    ),
    # --- workbook structure ---
    Case(
        "merged-cells.xlsx",
        "the IMEI cell merged over three rows; a header merged over two columns",
        READY,
        "empty, skipped",
        valid=2,
        flagged={3: "empty, skipped", 4: "empty, skipped"},
    ),
    Case(
        "hidden-sheet-only.xlsx",
        "a visible cover sheet; the devices only on a hidden sheet",
        READY,
        "The devices were read from the sheet 'Devices', which is hidden in Excel",
        valid=3,
    ),
    Case(
        "first-sheet-hidden.xlsx",
        "a very hidden first sheet of other devices before the visible list",
        READY,
        HOLDS,
        valid=3,
    ),
    Case(
        "long-sheet-name.xlsx",
        "a 354-character sheet name holding a <script> (Excel allows 31 characters)",
        READY,
        HOLDS,
        valid=3,
    ),
    Case("macro.xlsm", "a macro-enabled workbook with an Auto_Open VBA project", READY, HOLDS, valid=3),
    Case(
        "ten-thousand-columns.xlsx",
        "10,000 columns",
        READY,
        HOLDS,
        valid=3,
    ),
    # --- hostile names on a harmless file ---
    Case(
        "plain-devices.csv",
        "a path traversal in the file name",
        READY,
        "passwd.csv",
        name="../../etc/passwd.csv",
        valid=3,
        label="name-path-traversal",
    ),
    Case(
        "plain-devices.csv",
        "a Windows path traversal in the file name",
        READY,
        "win.csv",
        name="..\\..\\Windows\\System32\\win.csv",
        valid=3,
        label="name-windows-path-traversal",
    ),
    Case(
        "plain-devices.csv",
        "a right-to-left override: the name would show as 'devicesvsc.xls' (Django drops the control character)",
        READY,
        "devicesslx.csv",
        name="devices\u202eslx.csv",
        valid=3,
        label="name-rtl-override",
    ),
    Case(
        "plain-devices.csv",
        "markup in the file name",
        READY,
        MARKUP_NAME,
        name=MARKUP_NAME,
        valid=3,
        label="name-markup",
    ),
]

# A corpus file uploaded under several names counts once.
CORPUS_FILES = {case.file for case in MANIFEST}


def corpus_path(name: str, generated: Path) -> Path:
    if name in make_corpus.GENERATED:
        return make_corpus.build(name, generated)
    return CORPUS / name


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The big files, built once per test session."""
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def knox():
    """Every HTTP request fails and is recorded: nothing here may reach Knox."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    """A form body as a browser sends it, with the file name untouched (the test client's own encoder keeps
    only its basename)."""
    boundary = "----hostile-corpus-boundary-7MA4YWxkTrZu0gW"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def post_file(client, capture, url: str, fields: dict[str, str], filename: str, content: bytes):
    body, content_type = multipart(fields, filename, content)
    with capture(execute=True):  # the parse job runs in-process when the request commits (sync queue)
        return client.post(url, data=body, content_type=content_type)


def page_text(response) -> str:
    return unescape(response.content.decode())


def assert_no_live_markup(response) -> None:
    html = response.content.decode()
    for payload in (XSS, XSS_IMG, MARKUP_NAME, "<script>alert(", "<img src=x"):
        assert payload not in html, f"{payload!r} reached the page unescaped"


def assert_nothing_submitted(knox, *, parse_kind: str = "kdp.parse") -> None:
    assert not Transaction.objects.exists() and not TransactionDevice.objects.exists()
    assert not Device.objects.exists()
    assert not GuardAction.objects.exists() and not GuardChunk.objects.exists() and not GuardUpload.objects.exists()
    assert not GuardDevice.objects.exists()
    assert set(Job.objects.values_list("kind", flat=True)) <= {parse_kind}
    assert not Upload.objects.filter(status=Upload.Status.SUBMITTED).exists()
    assert not knox.calls, [call.request.url for call in knox.calls]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in MANIFEST])
def test_kdp_upload_gives_a_clear_answer_and_submits_nothing(
    case: Case, client, operator, knox, generated, django_capture_on_commit_callbacks
):
    account = ready_account()
    content = corpus_path(case.file, generated).read_bytes()
    client.force_login(operator)
    fields = {"account": str(account.pk), "operation": "upload"}
    r = post_file(client, django_capture_on_commit_callbacks, "/kdp/uploads/", fields, case.name or case.file, content)

    if case.outcome == FORM:
        assert r.status_code == 200
        assert r.context["form"].errors["file"]
        assert case.says in page_text(r)
        assert not Upload.objects.exists() and not Job.objects.exists()
        assert_no_live_markup(r)
        assert_nothing_submitted(knox)
        return

    upload = Upload.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/kdp/uploads/{upload.pk}/"
    page = client.get(f"/kdp/uploads/{upload.pk}/")
    assert page.status_code == 200
    text = page_text(page)
    assert case.says in text, (case.says, upload.error, upload.notices)
    assert_no_live_markup(page)
    assert_nothing_submitted(knox)
    assert upload.parse_job.status in (Job.Status.SUCCEEDED, Job.Status.REFUSED)
    if case.outcome == REFUSED:
        assert upload.status == Upload.Status.REFUSED and upload.error
        assert "This file cannot be used" in text
        assert f'action="/kdp/uploads/{upload.pk}/confirm/"' not in page.content.decode()
        assert not upload.rows.filter(status=UploadRow.Status.VALID).exists()
    else:
        assert upload.status == Upload.Status.READY, upload.error
    if case.valid is not None:
        assert upload.valid == upload.rows.filter(status=UploadRow.Status.VALID).count() == case.valid
    rows = {row.row_number: row for row in upload.rows.all()}
    for number, reason in case.flagged.items():
        assert rows[number].status != UploadRow.Status.VALID and not rows[number].value, number
        assert reason in rows[number].reason, (number, rows[number].reason)
    # What is sent to Knox is only ever a clean identifier.
    for row in upload.rows.filter(status=UploadRow.Status.VALID):
        assert row.value.isalnum() and row.value.isascii() and len(row.value) in (11, 14, 15, 18), row.value
    # Everything stored fits its column (PostgreSQL would refuse it otherwise) and holds no NUL.
    assert len(upload.sheet) <= 100 and len(upload.device_column) <= 200 and len(upload.filename) <= 255
    for row in upload.rows.all():
        assert "\x00" not in row.raw + row.reason + row.order_no + row.model + row.approve_id


def test_the_corpus_is_big_enough_and_small_enough():
    assert len(CORPUS_FILES) >= 25
    committed = [path for path in CORPUS.iterdir() if path.name in make_corpus.COMMITTED]
    assert {path.name for path in committed} == set(make_corpus.COMMITTED)
    assert all(path.stat().st_size < 200 * 1024 for path in committed)
    assert sum(path.stat().st_size for path in committed) < 2 * 1024 * 1024
    assert set(make_corpus.COMMITTED) | set(make_corpus.GENERATED) >= CORPUS_FILES


def test_the_committed_files_are_what_make_corpus_writes(tmp_path):
    make_corpus.main(tmp_path)
    for name in make_corpus.COMMITTED:
        assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), f"regenerate {name} (see README.md)"


# --- the same reader behind the Knox Guard bulk form -------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.id)
        for case in MANIFEST
        if case.file
        in {
            "sparse-range-bomb.xlsx",
            "zip-bomb.xlsx",
            "password-protected.xlsx",
            "html-export.xls",
            "unclosed-quote.csv",
            "csv-injection.csv",
            "xss.csv",
            "control-characters.csv",
            "empty.csv",
        }
    ],
)
def test_guard_bulk_staging_answers_the_same(
    case: Case, client, operator, knox, generated, django_capture_on_commit_callbacks
):
    account = guard_account()
    content = corpus_path(case.file, generated).read_bytes()
    client.force_login(operator)
    r = post_file(
        client, django_capture_on_commit_callbacks, "/guard/bulk/", {"account": str(account.pk)}, case.file, content
    )
    if case.outcome == FORM:
        assert r.status_code == 200 and r.context["form"].errors["file"]
        assert case.says in page_text(r)
        assert not Upload.objects.exists()
        return
    upload = Upload.objects.get()
    assert (upload.service, r.status_code, r["Location"]) == ("guard", 302, f"/guard/bulk/{upload.pk}/")
    page = client.get(f"/guard/bulk/{upload.pk}/")
    assert page.status_code == 200
    assert case.says in page_text(page) or case.says in upload.error or any(case.says in n for n in upload.notices)
    assert_no_live_markup(page)
    assert_nothing_submitted(knox, parse_kind="guard.parse")
    assert upload.status == (Upload.Status.REFUSED if case.outcome == REFUSED else Upload.Status.READY)
    # Knox Guard also refuses an approve ID over 50 characters (the first payload is 51).
    valid = {"csv-injection.csv": case.valid - 1} if case.valid else {}
    if case.valid is not None:
        assert upload.valid == valid.get(case.file, case.valid)
    rows = {row.row_number: row for row in upload.rows.all()}
    for number, reason in case.flagged.items():
        assert rows[number].status != UploadRow.Status.VALID and reason in rows[number].reason


# --- what the preview and exports do with the payloads -----------------------------------------------------------


def test_injection_payloads_are_kept_as_text_and_exported_inert(
    client, operator, knox, django_capture_on_commit_callbacks
):
    account = ready_account()
    client.force_login(operator)
    fields = {"account": str(account.pk), "operation": "upload"}
    content = (CORPUS / "csv-injection.csv").read_bytes()
    post_file(client, django_capture_on_commit_callbacks, "/kdp/uploads/", fields, "csv-injection.csv", content)
    upload = Upload.objects.get()
    valid = list(upload.rows.filter(status=UploadRow.Status.VALID).order_by("row_number"))
    # Stored exactly as typed (never evaluated); the value sent to Knox is the bare IMEI.
    assert [row.order_no for row in valid] == [payload.strip() for payload in INJECTIONS]
    assert [row.approve_id for row in valid] == [payload.strip() for payload in INJECTIONS]
    assert [row.value for row in valid] == [imei(n) for n in range(10, 17)]

    r = client.get(f"/kdp/uploads/{upload.pk}/problems.xlsx")
    assert r.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(b"".join(r.streaming_content) if r.streaming else r.content)).active
    cells = [cell for row in sheet.iter_rows(min_row=2) for cell in row if cell.value is not None]
    assert cells and all(cell.data_type != "f" for cell in cells)
    texts = [cell.value for cell in cells if isinstance(cell.value, str)]
    assert all(text[0] not in "=+-@\t\r" for text in texts), texts
    assert "'=cmd|' /C calc'!A0" in texts


def test_the_preview_echoes_markup_escaped(client, operator, knox, django_capture_on_commit_callbacks):
    account = ready_account()
    client.force_login(operator)
    fields = {"account": str(account.pk), "operation": "upload"}
    content = (CORPUS / "xss.csv").read_bytes()
    post_file(client, django_capture_on_commit_callbacks, "/kdp/uploads/", fields, MARKUP_NAME, content)
    upload = Upload.objects.get()
    html = client.get(f"/kdp/uploads/{upload.pk}/").content.decode()
    assert "&lt;script&gt;alert(&quot;hostile&quot;)&lt;/script&gt;" in html  # the rows, escaped
    assert "&lt;img src=x onerror=alert(1)&gt;.csv" in html  # the file name, escaped
    assert "<script>alert(" not in html and "<img src=x" not in html


def test_hostile_file_names_stay_names(client, operator, knox, settings, django_capture_on_commit_callbacks):
    account = ready_account()
    client.force_login(operator)
    fields = {"account": str(account.pk), "operation": "upload"}
    content = (CORPUS / "plain-devices.csv").read_bytes()
    media = Path(settings.MEDIA_ROOT).resolve()
    for sent, shown in (
        ("../../etc/passwd.csv", "passwd.csv"),
        ("..\\..\\Windows\\System32\\win.csv", "win.csv"),
        ("devices\u202eslx.csv", "devicesslx.csv"),
        (LONG_NAME[:80] + ".csv", LONG_NAME[:80] + ".csv"),
    ):
        Upload.objects.all().delete()
        r = post_file(client, django_capture_on_commit_callbacks, "/kdp/uploads/", fields, sent, content)
        assert r.status_code == 302, sent
        upload = Upload.objects.get()
        assert upload.filename == shown
        stored = Path(upload.file.path).resolve()
        assert stored.is_relative_to(media) and stored.read_bytes() == content
        assert len(stored.name.encode()) <= 255


def test_a_name_too_long_for_the_file_system_is_not_a_500(client, operator, knox, django_capture_on_commit_callbacks):
    account = ready_account()
    client.force_login(operator)
    fields = {"account": str(account.pk), "operation": "upload"}
    content = (CORPUS / "plain-devices.csv").read_bytes()
    r = post_file(client, django_capture_on_commit_callbacks, "/kdp/uploads/", fields, LONG_NAME, content)
    assert r.status_code in (200, 302)
    upload = Upload.objects.get()
    assert upload.filename == LONG_NAME  # shown in full; stored under a name the file system accepts
    assert len(Path(upload.file.name).name.encode()) <= 110 and Path(upload.file.path).read_bytes() == content
    assert_nothing_submitted(knox)


# --- the fixes ----------------------------------------------------------------------------------------------------


def test_a_cell_of_many_different_characters_is_described():
    """It was quadratic (every character looked up in a list of the earlier ones: 22 s for 40,000). How its cost
    grows is measured by bench/ingest.py (`describe_cell_ratio`), not here: tests assert behaviour, not time."""
    text = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 40_000))
    verdict = identifiers.check_identifier(text, column_kind="imei")
    assert not verdict.ok
    assert verdict.reason.startswith("contains the characters '一', '丁', '丂'")
    assert re.search(r"'万' and 39,\d{3} others; an IMEI has 15 digits and nothing else$", verdict.reason)


def test_a_negative_number_is_not_an_imei():
    verdict = identifiers.check_identifier(-359221145350335, column_kind="imei")
    assert not verdict.ok and "negative number -359221145350335" in verdict.reason
    # Typed as text, a leading dash is still a separator people paste (35-…), not a sign.
    assert identifiers.check_identifier("-359221145350335").ok


def test_a_far_away_cell_is_refused_before_calamine_sees_it(tmp_path):
    path = CORPUS / "sparse-range-bomb.xlsx"
    with pytest.raises(spreadsheets.SpreadsheetError) as caught:
        spreadsheets.open_spreadsheet(path)
    assert "The sheet 'Devices' reaches down to row 1,048,576 and across to column XFD" in caught.value.message


def test_a_styled_empty_cell_far_away_does_not_count(tmp_path):
    # Formatting alone (no value) is left out by calamine, so it must not refuse the file.
    xml = make_corpus.sheet_xml([["IMEI"], [imei(1)]]).replace(
        "</sheetData>", '<row r="900000"><c r="XFD900000" s="1"/></row></sheetData>'
    )
    path = tmp_path / "styled.xlsx"
    path.write_bytes(make_corpus.xlsx([("Devices", xml)]))
    with spreadsheets.open_spreadsheet(path) as sheet:
        assert [row.raw for row in sheet.iter_rows()] == [imei(1)]


def test_the_sheet_size_limit_is_a_parameter(tmp_path):
    path = tmp_path / "wide.xlsx"
    path.write_bytes(make_corpus.xlsx([("Devices", make_corpus.sheet_xml([["IMEI", *"ABCDEFGHI"], [imei(1)]]))]))
    with spreadsheets.open_spreadsheet(path, max_cells=20) as sheet:
        assert [row.raw for row in sheet.iter_rows()] == [imei(1)]
    with pytest.raises(spreadsheets.SpreadsheetError, match="reaches down to row 2 and across to column J: 20"):
        spreadsheets.open_spreadsheet(path, max_cells=19)


def test_a_csv_with_too_many_lines_is_refused_without_reading_its_rows(tmp_path, generated):
    path = make_corpus.build("million-rows.csv", generated)
    with pytest.raises(spreadsheets.SpreadsheetError, match="more than 200,000 rows"):
        spreadsheets.open_spreadsheet(path)
    # With quotation marks a cell may hold line breaks, so the rows are counted as they are read.
    quoted = tmp_path / "quoted.csv"
    quoted.write_bytes(b"IMEI,Notes\r\n" + b'%s,"two\r\nlines"\r\n' % imei(1).encode() * 30)
    with spreadsheets.open_spreadsheet(quoted, max_rows=40) as sheet:
        assert sheet.summary()["total"] == 0 and len(list(sheet.iter_rows())) == 30


def test_a_few_nuls_fail_their_rows_and_are_stored_visibly(db):
    account = ready_account()
    upload = make_upload(account, (CORPUS / "control-characters.csv").read_bytes(), "fixed-width.csv")
    assert upload.status == Upload.Status.READY
    row = upload.rows.get(row_number=2)
    assert row.status == UploadRow.Status.INVALID and row.raw == imei(1)[:7] + "\u2400" + imei(1)[7:]


def test_long_sheet_names_and_headers_are_cut_to_their_fields(db):
    account = ready_account()
    upload = make_upload(account, (CORPUS / "long-sheet-name.xlsx").read_bytes(), "long.xlsx")
    assert upload.status == Upload.Status.READY and len(upload.sheet) == 100 and upload.sheet.startswith(XSS)
    upload = make_upload(account, (CORPUS / "long-header.csv").read_bytes(), "long.csv")
    assert upload.status == Upload.Status.READY and len(upload.device_column) == 200
    assert upload.device_column.startswith("IMEI...")


def test_a_header_row_of_long_texts_is_quoted_short():
    with pytest.raises(spreadsheets.SpreadsheetError) as caught:
        spreadsheets.open_spreadsheet(CORPUS / "no-device-column.csv")
    message = caught.value.message
    assert "'Notes Notes Notes Notes Notes Notes Not…'" in message and len(message) < 500


def test_a_zip_member_that_lies_about_its_size_is_damaged():
    # The sheet-size scan reads members with zipfile, whose checksum test raises: it must end as the same
    # "damaged" answer calamine gives (it stops at the declared size), not as an error the parse job does not expect.
    with zipfile.ZipFile(CORPUS / "lying-sizes.xlsx") as archive, pytest.raises(zipfile.BadZipFile):
        archive.read("xl/worksheets/sheet1.xml")
    with pytest.raises(spreadsheets.SpreadsheetError, match="The file is damaged"):
        spreadsheets.open_spreadsheet(CORPUS / "lying-sizes.xlsx")


def test_duplicate_device_headers_are_offered_once(db):
    upload = make_upload(ready_account(), (CORPUS / "duplicate-headers.csv").read_bytes(), "dup.csv")
    assert upload.columns == ["IMEI"]
    assert upload.notices == [
        "2 columns are headed 'IMEI' (columns A, C); the devices were read from column A. To read another one, "
        "give it a different header and upload again."
    ]


def test_rows_read_after_a_change_of_encoding_bring_a_notice(db):
    upload = make_upload(ready_account(), (CORPUS / "mixed-encoding.csv").read_bytes(), "mixed.csv")
    assert upload.notices == [
        "From row 2502 on, some characters could not be read as UTF-8 and show as '\ufffd' (the file mixes text "
        "encodings). If names or order numbers look wrong, save the file from Excel as 'CSV UTF-8' and upload it "
        "again."
    ]
    assert upload.rows.get(row_number=2502).order_no == "PO-\ufffd9001"


def test_stage_upload_never_leaves_rows_of_a_refused_file(db):
    upload = make_upload(ready_account(), (CORPUS / "unclosed-quote.csv").read_bytes(), "q.csv")
    assert upload.status == Upload.Status.REFUSED and not upload.rows.exists()
    # Reading it again after a fix keeps the same answer and still stages nothing.
    assert stage_upload(upload).status == Upload.Status.REFUSED and not upload.rows.exists()


def test_the_workbook_limits_are_parameters(tmp_path):
    path = tmp_path / "three.xlsx"
    sheets = [(name, make_corpus.sheet_xml([["IMEI", "Notes"], [imei(n), "x"]])) for n, name in enumerate("ABC")]
    path.write_bytes(make_corpus.xlsx(sheets))
    with spreadsheets.open_spreadsheet(path, max_sheets=3, max_cells=12) as sheet:
        assert [row.raw for row in sheet.iter_rows()] == [imei(0)]
    with pytest.raises(spreadsheets.SpreadsheetError) as caught:
        spreadsheets.open_spreadsheet(path, max_sheets=2)
    assert caught.value.message.startswith("This workbook has 3 sheets; the portal reads at most 2.")
    # Three sheets of 4 cells: each is under 10, the workbook is not.
    with pytest.raises(spreadsheets.SpreadsheetError) as caught:
        spreadsheets.open_spreadsheet(path, max_cells=10)
    assert "sheets reach 12 cells or more in all" in caught.value.message
    assert "(the largest, 'A', has 4); the portal reads at most 10." in caught.value.message
    # A sheet of 4 cells (32 bytes each) and 3 inline strings takes more than 100 bytes.
    with pytest.raises(spreadsheets.SpreadsheetError) as caught:
        spreadsheets.open_spreadsheet(path, max_memory=100)
    assert "the portal reads at most 0.1 MB at once" in caught.value.message


def test_a_shared_string_counts_once_for_every_cell_that_uses_it(tmp_path, generated):
    path = make_corpus.build("shared-string-bomb.xlsx", generated)
    with zipfile.ZipFile(path) as archive:
        lengths = spreadsheets._shared_string_lengths(archive)
        size = spreadsheets._sheet_size(lambda: archive.open("xl/worksheets/sheet1.xml"), lengths)
    assert list(lengths) == [len("<t>IMEI</t>"), len("<t></t>") + 1000]
    assert (size.rows, size.columns, size.texts) == (200_001, 5, 800_001)
    assert size.text_bytes == 800_000 * 1007 + 11


def test_the_cells_calamine_collects_before_its_grid_count_towards_the_memory_limit(tmp_path):
    # 101 rows of 10 filled cells: the grid and its text take about 36 KB, but calamine first lists the 1,010
    # filled cells with their positions (40 bytes each, 40 KB more) and holds both while it builds the grid. A
    # dense workbook within the old estimate (200,000 rows of 20 numbers) took 376 MB to parse.
    rows = [["IMEI", *(f"C{n}" for n in range(1, 10))]] + [[imei(r), *range(9)] for r in range(100)]
    path = tmp_path / "dense.xlsx"
    path.write_bytes(make_corpus.xlsx([("Devices", make_corpus.sheet_xml(rows))]))
    with spreadsheets.open_spreadsheet(path, max_memory=100_000) as sheet:
        assert len(list(sheet.iter_rows())) == 100
    with pytest.raises(spreadsheets.SpreadsheetError) as caught:
        spreadsheets.open_spreadsheet(path, max_memory=50_000)
    assert caught.value.message.startswith(
        "The sheet 'Devices' reaches down to row 101 and across to column J: 1,010 cells, about 0.1 MB of memory to "
        "read; the portal reads at most 0.1 MB at once."
    )
