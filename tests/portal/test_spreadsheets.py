from __future__ import annotations

import inspect
import io
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from unittest import TestCase

import openpyxl

from portal.identifiers import Kind, is_valid_imei, luhn_check_digit
from portal.spreadsheets import (
    Column,
    Row,
    Spreadsheet,
    SpreadsheetError,
    Status,
    header_kind,
    neutralise_formula,
    open_spreadsheet,
)

# A copy of ../shared/samples, kept in the repository so that any checkout tests on its own.
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
DATA = Path(__file__).resolve().parents[1] / "data" / "spreadsheets"


def imei(n: int) -> str:
    """A valid IMEI made from a running number, for generated files."""
    body = f"35{n:012d}"
    return body + luhn_check_digit(body)


def read(sheet: Spreadsheet) -> dict[int, Row]:
    return {row.number: row for row in sheet.iter_rows()}


class FilesTestCase(TestCase):
    """Writes generated files into a temporary folder."""

    def setUp(self) -> None:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.folder = Path(folder.name)

    def write(self, name: str, content: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(content)
        return path

    def xlsx(self, sheets: dict[str, Iterable[Iterable[Any]]], name: str = "devices.xlsx") -> Path:
        workbook = openpyxl.Workbook()
        workbook.remove(workbook.active)
        for title, rows in sheets.items():
            worksheet = workbook.create_sheet(title)
            for row in rows:
                worksheet.append(list(row))
        path = self.folder / name
        workbook.save(path)
        return path

    def open(self, path: Path, **kwargs: Any) -> Spreadsheet:
        sheet = open_spreadsheet(path, **kwargs)
        self.addCleanup(sheet.close)
        return sheet

    def refusal(self, path: Path | io.BytesIO, filename: str | None = None, **kwargs: Any) -> str:
        with self.assertRaises(SpreadsheetError) as caught:
            open_spreadsheet(path, filename, **kwargs)
        return caught.exception.message


class SamplesTestCase(FilesTestCase):
    def test_kdp_upload_50_has_50_valid_rows(self) -> None:
        sheet = self.open(SAMPLES / "kdp-upload-50.xlsx")
        rows = read(sheet)
        self.assertEqual(sheet.summary()["valid"], 50)
        self.assertEqual(sheet.summary()["total"], 50)
        self.assertEqual(sheet.sheet, "Devices")
        self.assertEqual(sheet.device_column, Column(0, "IMEI", "imei"))
        # The serial column is offered as an alternative, and carried along meanwhile.
        self.assertEqual([column.header for column in sheet.candidates], ["IMEI", "Serial Number"])
        self.assertEqual(rows[2].extra, {"serial": "RNAAPSNN7FT", "model": "SM-G981B", "order_no": "PO-1000"})
        self.assertEqual(rows[2].verdict.value, "358245915102254")
        self.assertEqual(min(rows), 2)
        self.assertEqual(max(rows), 51)

    def test_kdp_upload_serials_has_20_valid_serials(self) -> None:
        sheet = self.open(SAMPLES / "kdp-upload-serials.csv")
        rows = list(sheet.iter_rows())
        self.assertEqual(len(rows), 20)
        self.assertTrue(all(row.status == Status.VALID and row.verdict.kind == Kind.SERIAL for row in rows))
        self.assertEqual(sheet.device_column.kind, "serial")

    def test_kdp_upload_mixed_gives_each_row_its_verdict(self) -> None:
        sheet = self.open(SAMPLES / "kdp-upload-mixed.csv")
        rows = read(sheet)
        statuses = {number: row.status for number, row in rows.items()}
        self.assertEqual(
            statuses,
            {
                2: Status.VALID,
                3: Status.VALID,
                4: Status.VALID,  # after removing dashes
                5: Status.VALID,  # after trimming spaces
                6: Status.INVALID,
                7: Status.INVALID,
                8: Status.INVALID,
                9: Status.DUPLICATE,
                10: Status.SKIPPED,
                11: Status.INVALID,
            },
        )
        self.assertEqual(rows[4].raw, "35-548884-059744-5")
        self.assertEqual(rows[4].verdict.value, "355488840597445")
        self.assertEqual(rows[5].raw, " 358060368779353 ")
        self.assertEqual(rows[5].verdict.value, "358060368779353")
        self.assertIn("wrong check digit", rows[6].message)
        self.assertIn("14 digits", rows[7].message)
        self.assertIn("without its check digit", rows[7].message)
        self.assertIn("contains the letters 'A', 'B', 'C'", rows[8].message)
        self.assertEqual(rows[9].message, "duplicate of row 3")
        self.assertEqual(rows[9].duplicate_of, 3)
        self.assertEqual(rows[3].status, Status.VALID)  # the first occurrence stays valid
        self.assertEqual(rows[10].raw, "")
        self.assertIn("16 digits: this is an IMEISV", rows[11].message)
        self.assertEqual(rows[2].extra, {"order_no": "PO-7"})
        self.assertEqual(
            sheet.summary(),
            {"valid": 4, "invalid": 4, "duplicate": 1, "skipped": 1, "warnings": 0, "total": 10},
        )

    def test_kdp_upload_numeric_cells_loses_no_digits_and_finds_the_lost_zero(self) -> None:
        sheet = self.open(SAMPLES / "kdp-upload-numeric-cells.xlsx")
        rows = list(sheet.iter_rows())
        valid = [row for row in rows if row.status == Status.VALID]
        self.assertEqual(len(valid), 5)
        for row in valid:
            self.assertRegex(row.raw, r"^[0-9]{15}$")  # no ".0", no exponent
            self.assertEqual(row.verdict.value, row.raw)
        last = rows[-1]
        self.assertEqual(last.number, 7)
        self.assertEqual(last.status, Status.INVALID)
        self.assertEqual(last.raw, "11544209597370")
        self.assertIn("leading zero was lost because the column is formatted as a number", last.message)
        self.assertEqual(last.verdict.suggestion, "011544209597370")
        self.assertTrue(is_valid_imei(last.verdict.suggestion))

    def test_kdp_upload_scientific_rejects_every_row_with_the_fix(self) -> None:
        sheet = self.open(SAMPLES / "kdp-upload-scientific.csv")
        rows = list(sheet.iter_rows())
        self.assertEqual(len(rows), 4)
        for row in rows:
            self.assertEqual(row.status, Status.INVALID)
            self.assertIn("scientific notation", row.message)
            self.assertIn("format the column as Text in Excel", row.message)

    def test_guard_bulk_10_has_10_valid_rows_with_approve_ids(self) -> None:
        sheet = self.open(SAMPLES / "guard-bulk-10.xlsx")
        rows = list(sheet.iter_rows())
        self.assertEqual([row.status for row in rows], [Status.VALID] * 10)
        self.assertEqual([row.extra["approve_id"] for row in rows], [f"LOAN-202600{i}" for i in range(10)])

    def test_it_reads_an_uploaded_file_object(self) -> None:
        upload = io.BytesIO((SAMPLES / "kdp-upload-50.xlsx").read_bytes())
        with open_spreadsheet(upload, "kdp-upload-50.xlsx") as sheet:
            self.assertEqual(len(list(sheet.iter_rows())), 50)
            # A second pass rewinds the caller's file object and gives the same rows.
            self.assertEqual(len(list(sheet.iter_rows())), 50)
        upload = io.BytesIO((SAMPLES / "kdp-upload-mixed.csv").read_bytes())
        upload.name = "C:\\fakepath\\kdp-upload-mixed.csv"  # type: ignore[attr-defined]
        sheet = open_spreadsheet(upload)
        self.assertEqual(sheet.filename, "kdp-upload-mixed.csv")
        first, second = list(sheet.iter_rows()), list(sheet.iter_rows())
        self.assertEqual([row.status for row in first], [row.status for row in second])
        self.assertFalse(upload.closed)  # the caller's file stays the caller's


class RefusalsTestCase(FilesTestCase):
    def test_it_refuses_a_pdf_renamed_xlsx(self) -> None:
        path = self.write("devices.xlsx", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")
        self.assertIn("This file is a PDF document, not a spreadsheet", self.refusal(path))

    def test_it_refuses_an_empty_file(self) -> None:
        for name in ("devices.xlsx", "devices.csv"):
            with self.subTest(name=name):
                path = self.write(name, b"")
                self.assertEqual(
                    self.refusal(path),
                    "The file is empty (0 bytes). Check that you chose the right file and upload it again.",
                )

    def test_it_refuses_a_file_of_blank_lines(self) -> None:
        path = self.write("devices.csv", b"\r\n\r\n,,\r\n")
        self.assertIn("The file has no data", self.refusal(path))

    def test_it_refuses_a_workbook_of_empty_sheets(self) -> None:
        path = self.xlsx({"Sheet1": [], "Sheet2": []})
        self.assertIn("The workbook has no data", self.refusal(path))

    def test_it_refuses_a_header_only_file(self) -> None:
        message = self.refusal(self.write("devices.csv", b"IMEI,Model\r\n\r\n,\r\n"))
        self.assertEqual(
            message,
            "The file has a header row (row 1) but no devices below it. Add the devices under the headers and "
            "upload again.",
        )
        message = self.refusal(self.xlsx({"Devices": [["IMEI", "Model"]]}))
        self.assertIn("The sheet 'Devices' has a header row (row 1) but no devices below it", message)

    def test_it_refuses_a_password_protected_workbook(self) -> None:
        # What Excel writes for a password-protected .xlsx: a CFB container with an EncryptedPackage stream.
        # The stream name sits in the directory as UTF-16; a plain-ASCII marker is accepted too.
        cfb = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 1000
        for marker in ("EncryptedPackage".encode("utf-16-le"), b"EncryptedPackage"):
            for name in ("devices.xlsx", "devices.xls"):
                with self.subTest(marker=marker, name=name):
                    path = self.write(name, cfb + marker + b"\x00" * 100)
                    self.assertEqual(
                        self.refusal(path),
                        "This workbook is password-protected; remove the password in Excel and upload again.",
                    )

    def test_it_finds_the_encryption_marker_across_read_chunks(self) -> None:
        marker = "EncryptedPackage".encode("utf-16-le")
        content = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * (1024 * 1024 - 20) + marker + b"\x00" * 10
        self.assertIn("password-protected", self.refusal(self.write("devices.xlsx", content)))

    def test_it_refuses_a_cfb_file_that_is_not_a_workbook(self) -> None:
        path = self.write("devices.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 2000)
        self.assertIn("The file is damaged or is not an Excel workbook", self.refusal(path))

    def test_it_refuses_a_zip_bomb_before_expanding_it(self) -> None:
        # One member of 60 MB of zeros squeezed to about 60 KB, written in chunks to keep the test light.
        path = self.folder / "bomb.xlsx"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("[Content_Types].xml", "<Types/>")
            archive.writestr("xl/workbook.xml", "<workbook/>")
            with archive.open("xl/worksheets/sheet1.xml", "w") as member:
                for _ in range(60):
                    member.write(b"\x00" * (1024 * 1024))
        self.assertLess(path.stat().st_size, 200_000)
        message = self.refusal(path)
        self.assertIn("This workbook would expand to 60.1 MB when opened", message)
        self.assertIn("refused", message)

    def test_it_refuses_a_zip_whose_members_add_up_to_too_much(self) -> None:
        # Five members of 2 MB each: none is suspicious alone, together they pass the (lowered) cap.
        path = self.folder / "many.xlsx"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("xl/workbook.xml", "<workbook/>")
            for number in range(5):
                archive.writestr(f"xl/worksheets/sheet{number}.xml", b" " * (2 * 1024 * 1024))
        self.assertIn("would expand to", self.refusal(path, max_uncompressed_bytes=5 * 1024 * 1024))

    def test_it_refuses_a_corrupt_zip(self) -> None:
        path = self.write("devices.xlsx", b"PK\x03\x04" + bytes(range(256)) * 4)
        self.assertEqual(
            self.refusal(path),
            "The file is damaged: it is not a complete Excel workbook. Open it in Excel, save it again as an Excel "
            "workbook (.xlsx) and upload the new copy.",
        )

    def test_it_refuses_a_truncated_workbook(self) -> None:
        whole = self.xlsx({"Devices": [["IMEI"], [imei(1)]]}).read_bytes()
        path = self.write("half.xlsx", whole[: len(whole) // 2])
        self.assertIn("The file is damaged", self.refusal(path))

    def test_it_refuses_a_zip_that_is_not_a_workbook(self) -> None:
        cases = {"word/document.xml": "a Word document", "content.xml": "an OpenDocument file", "a.txt": "a zip"}
        for member, kind in cases.items():
            with self.subTest(member=member):
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w") as archive:
                    archive.writestr(member, "x")
                self.assertIn(f"This file is {kind}", self.refusal(self.write("devices.xlsx", buffer.getvalue())))

    def test_it_refuses_unknown_extensions(self) -> None:
        for name, start in (
            ("devices.pdf", "Files ending in .pdf"),
            ("devices.ods", "Files ending in .ods"),
            ("devices", "Files without an extension"),
        ):
            with self.subTest(name=name):
                message = self.refusal(self.write(name, b"IMEI\r\n359221145350335\r\n"))
                self.assertTrue(message.startswith(start), message)
                self.assertIn("Upload an Excel workbook (.xlsx, .xlsm or .xls) or a CSV file (.csv or .txt).", message)

    def test_it_refuses_binary_data_named_csv(self) -> None:
        path = self.write("devices.csv", bytes(range(256)) * 20)
        self.assertIn("This file is not a spreadsheet", self.refusal(path))

    def test_it_refuses_an_html_page_named_xls(self) -> None:
        path = self.write("export.xls", b"<html><body><table><tr><td>IMEI</td></tr></table></body></html>")
        self.assertIn("This file is a web page or XML file", self.refusal(path))

    def test_it_refuses_a_file_that_is_too_large(self) -> None:
        content = b"IMEI\r\n" + (imei(1).encode() + b"\r\n") * 100
        path = self.write("devices.csv", content)
        message = self.refusal(path, max_bytes=len(content) - 1)
        self.assertIn("the limit is", message)
        self.assertIn("Split it into smaller files", message)
        # Exactly at the limit is fine.
        self.open(path, max_bytes=len(content))

    def test_it_states_sizes_in_megabytes(self) -> None:
        path = self.write("devices.csv", b"IMEI\r\n" + b"1" * (3 * 1024 * 1024 - 6))
        self.assertEqual(
            self.refusal(path, max_bytes=2 * 1024 * 1024),
            "The file is 3.0 MB; the limit is 2.0 MB. Split it into smaller files and upload them one at a time.",
        )

    def test_it_rounds_a_size_just_over_the_limit_up(self) -> None:
        path = self.write("devices.csv", b"IMEI\r\n" + b"1" * (2 * 1024 * 1024))
        self.assertIn("The file is 2.1 MB; the limit is 2.0 MB", self.refusal(path, max_bytes=2 * 1024 * 1024))

    def test_it_reports_a_damaged_csv_row_while_reading(self) -> None:
        # A cell longer than the csv module accepts, below the rows looked at when opening.
        good = "".join(f"{imei(n)},ok\r\n" for n in range(30))
        huge = '"' + "x" * 200_000 + '"'
        content = f"IMEI,Notes\r\n{good}{imei(99)},{huge}\r\n".encode()
        rows = self.open(self.write("devices.csv", content)).iter_rows()
        self.assertEqual(len([next(rows) for _ in range(30)]), 30)
        with self.assertRaises(SpreadsheetError) as caught:
            next(rows)
        self.assertTrue(caught.exception.message.startswith("Row 32 could not be read"), caught.exception.message)

    def test_it_refuses_too_many_rows_in_a_workbook_when_opening(self) -> None:
        path = self.xlsx({"Devices": [["IMEI"], *([imei(n)] for n in range(6))]})
        self.assertEqual(
            self.refusal(path, max_rows=5),
            "The file has more than 5 rows; the limit is 5. Split it into smaller files and upload them one at a time.",
        )
        self.assertEqual(len(list(self.open(path, max_rows=6).iter_rows())), 6)

    def test_it_refuses_too_many_rows_in_a_csv_while_reading(self) -> None:
        # A CSV's length is known only by reading it, so the limit stops the iteration.
        path = self.write("devices.csv", ("IMEI\r\n" + "".join(f"{imei(n)}\r\n" for n in range(6))).encode())
        sheet = self.open(path, max_rows=5)
        rows = sheet.iter_rows()
        self.assertEqual(len([next(rows) for _ in range(5)]), 5)
        with self.assertRaises(SpreadsheetError) as caught:
            next(rows)
        self.assertIn("more than 5 rows", caught.exception.message)
        self.assertEqual(len(list(self.open(path, max_rows=6).iter_rows())), 6)

    def test_it_applies_the_default_row_limit(self) -> None:
        # One device far down the sheet makes a tiny file that is 200,010 rows tall.
        workbook = openpyxl.Workbook()
        workbook.active.append(["IMEI"])
        workbook.active.cell(row=200_010, column=1, value=imei(1))
        path = self.folder / "tall.xlsx"
        workbook.save(path)
        self.assertEqual(
            self.refusal(path),
            "The file has more than 200,000 rows; the limit is 200,000. Split it into smaller files and upload them "
            "one at a time.",
        )


class FormatsTestCase(FilesTestCase):
    def test_it_reads_a_legacy_xls(self) -> None:
        sheet = self.open(DATA / "legacy.xls")
        self.assertEqual(sheet.format, "xls")
        self.assertEqual(sheet.sheets, ["Devices"])
        rows = read(sheet)
        self.assertEqual([row.status for row in rows.values()], [Status.VALID, Status.VALID, Status.INVALID])
        self.assertEqual(rows[3].raw, "351121670763365")  # a number cell, shown without ".0"
        self.assertEqual(rows[3].extra, {"model": "SM-S918B", "order_no": "1002"})
        self.assertIn("without its check digit", rows[4].message)

    def test_it_reads_an_xlsm(self) -> None:
        path = self.xlsx({"Devices": [["IMEI"], [imei(1)]]}, name="devices.xlsm")
        sheet = self.open(path)
        self.assertEqual(sheet.format, "xlsx")
        self.assertEqual(sheet.notices, [])

    def test_it_reads_excel_unicode_text(self) -> None:
        # Excel's "Unicode text": UTF-16 with a BOM, tab-separated, saved as .txt.
        text = "IMEI\tModel\tOrder No\r\n" + "".join(f"{imei(n)}\tSM-A546B\tPO-ü{n}\r\n" for n in range(3))
        path = self.write("devices.txt", text.encode("utf-16"))
        sheet = self.open(path)
        self.assertEqual((sheet.format, sheet.encoding, sheet.delimiter), ("csv", "utf-16", "\t"))
        rows = list(sheet.iter_rows())
        self.assertEqual([row.status for row in rows], [Status.VALID] * 3)
        self.assertEqual(rows[0].extra, {"model": "SM-A546B", "order_no": "PO-ü0"})

    def test_it_reads_utf16_across_chunks(self) -> None:
        text = "IMEI\tModel\r\n" + "".join(f"{imei(n)}\tSM-A546B é\r\n" for n in range(4000))
        path = self.write("devices.txt", text.encode("utf-16"))
        self.assertGreater(path.stat().st_size, 3 * 64 * 1024)
        rows = list(self.open(path).iter_rows())
        self.assertEqual(len(rows), 4000)
        self.assertTrue(all(row.status == Status.VALID and row.extra["model"] == "SM-A546B é" for row in rows))
        self.assertEqual([row.number for row in rows], list(range(2, 4002)))

    def test_it_reads_cp1252_with_an_accented_header(self) -> None:
        text = "Numéro de série;Modèle;Catégorie\r\nRWEZ6K82DT3;Galaxy Tab Active;Tablette été\r\n"
        path = self.write("appareils.csv", text.encode("cp1252"))
        sheet = self.open(path)
        self.assertEqual((sheet.encoding, sheet.delimiter), ("cp1252", ";"))
        self.assertEqual(sheet.device_column, Column(0, "Numéro de série", "serial"))
        self.assertEqual([column.header for column in sheet.columns], ["Numéro de série", "Modèle", "Catégorie"])
        (row,) = sheet.iter_rows()
        self.assertEqual((row.status, row.extra), (Status.VALID, {"model": "Galaxy Tab Active"}))

    def test_it_reads_a_semicolon_csv_with_decimal_commas(self) -> None:
        text = "IMEI;Model;Price\r\n" + "".join(f"{imei(n)};SM-A546B;199,{n}0\r\n" for n in range(5))
        sheet = self.open(self.write("devices.csv", text.encode()))
        self.assertEqual(sheet.delimiter, ";")
        self.assertEqual([column.header for column in sheet.columns], ["IMEI", "Model", "Price"])
        self.assertEqual(sheet.summary()["total"], 0)  # nothing read yet
        self.assertEqual(len([row for row in sheet.iter_rows() if row.status == Status.VALID]), 5)

    def test_it_reads_utf8_with_a_bom(self) -> None:
        content = b"\xef\xbb\xbfIMEI,Model\r\n" + f"{imei(1)},Galaxy S24 \u2013 128 GB\r\n".encode()
        sheet = self.open(self.write("devices.csv", content))
        self.assertEqual(sheet.encoding, "utf-8-sig")
        self.assertEqual(sheet.device_column, Column(0, "IMEI", "imei"))
        (row,) = sheet.iter_rows()
        self.assertEqual(row.extra, {"model": "Galaxy S24 \u2013 128 GB"})

    def test_it_reads_utf8_without_a_bom(self) -> None:
        sheet = self.open(self.write("devices.csv", f"IMEI,Modèle\n{imei(1)},Galaxy\n".encode()))
        self.assertEqual(sheet.encoding, "utf-8")
        self.assertEqual(sheet.columns[1].kind, "model")

    def test_it_reads_a_tab_separated_csv(self) -> None:
        sheet = self.open(self.write("devices.tsv", f"Model\tIMEI\nA\t{imei(1)}\n".encode()))
        self.assertEqual((sheet.delimiter, sheet.device_column.index), ("\t", 1))

    def test_it_reads_old_mac_line_endings(self) -> None:
        content = ("IMEI\r" + "".join(f"{imei(n)}\r" for n in range(3))).encode()
        rows = list(self.open(self.write("devices.csv", content)).iter_rows())
        self.assertEqual([row.number for row in rows], [2, 3, 4])

    def test_it_keeps_line_breaks_split_between_chunks_together(self) -> None:
        # Enough rows that "\r\n" falls across the 64 KB read boundary somewhere; no phantom rows appear.
        content = ("IMEI,Model\r\n" + "".join(f"{imei(n)},SM-A546B\r\n" for n in range(5000))).encode()
        rows = list(self.open(self.write("devices.csv", content)).iter_rows())
        self.assertEqual([row.number for row in rows], list(range(2, 5002)))
        self.assertTrue(all(row.status == Status.VALID for row in rows))

    def test_it_counts_a_quoted_multi_line_cell_as_one_row(self) -> None:
        content = f'IMEI,Model\r\n{imei(1)},"Galaxy\r\nTab"\r\n{imei(2)},S24\r\n'.encode()
        rows = list(self.open(self.write("devices.csv", content)).iter_rows())
        self.assertEqual([(row.number, row.extra["model"]) for row in rows], [(2, "Galaxy\r\nTab"), (3, "S24")])

    def test_it_says_when_the_name_and_the_content_disagree(self) -> None:
        workbook = self.xlsx({"Devices": [["IMEI"], [imei(1)]]}).read_bytes()
        sheet = self.open(self.write("devices.csv", workbook))
        self.assertEqual(sheet.format, "xlsx")
        self.assertEqual(
            sheet.notices,
            ["The file is named devices.csv, but it is really an Excel workbook (.xlsx); it was read as one."],
        )
        self.assertEqual(sheet.summary()["valid"], 0)
        self.assertEqual(len(list(sheet.iter_rows())), 1)

        sheet = self.open(self.write("devices.xlsx", f"IMEI\r\n{imei(1)}\r\n".encode()))
        self.assertEqual(sheet.format, "csv")
        self.assertIn("it is really a text (CSV) file", sheet.notices[0])
        self.assertEqual([row.status for row in sheet.iter_rows()], [Status.VALID])

        sheet = self.open(self.write("devices.xlsx", (DATA / "legacy.xls").read_bytes()))
        self.assertIn("it is really an Excel 97-2003 workbook (.xls)", sheet.notices[0])


class HeaderTestCase(FilesTestCase):
    def test_it_recognises_header_synonyms(self) -> None:
        cases = {
            "IMEI": "imei",
            "imei": "imei",
            " IMEI1 ": "imei",
            "IMEI 1": "imei",
            "IMEI Number": "imei",
            "IMEI_No.": "imei",
            "IMEI #": "imei",
            "IMEI 2": "imei2",
            "MEID": "meid",
            "Serial": "serial",
            "serial number": "serial",
            "Serial No.": "serial",
            "S/N": "serial",
            "SN": "serial",
            "serial-number": "serial",
            "Order No": "order_no",
            "ORDER NUMBER": "order_no",
            "PO": "order_no",
            "P.O.": "order_no",
            "Approve ID": "approve_id",
            "ApproveID": "approve_id",
            "approve_id": "approve_id",
            "Model": "model",
            "Device ID": "device",
            "Phone": None,
            "": None,
        }
        for text, kind in cases.items():
            with self.subTest(text=text):
                self.assertEqual(header_kind(text), kind)

    def test_it_finds_a_header_below_title_rows(self) -> None:
        path = self.xlsx(
            {"Devices": [["Reseller order export"], ["Printed 2026-01-05"], [], ["IMEI", "Model"], [imei(1), "A"]]}
        )
        sheet = self.open(path)
        self.assertEqual(sheet.header_row, 4)
        (row,) = sheet.iter_rows()
        self.assertEqual(row.number, 5)

    def test_it_numbers_rows_as_excel_does_when_the_data_starts_lower_right(self) -> None:
        workbook = openpyxl.Workbook()
        worksheet = workbook.active
        worksheet["C3"] = "IMEI"
        worksheet["D3"] = "Model"
        worksheet["C5"] = imei(1)
        worksheet["D6"] = "only a model"
        worksheet["C8"] = imei(2)
        path = self.folder / "offset.xlsx"
        workbook.save(path)
        sheet = self.open(path)
        self.assertEqual(sheet.header_row, 3)
        self.assertEqual(sheet.device_column.letter, "C")
        rows = read(sheet)
        self.assertEqual(sorted(rows), [5, 6, 8])  # the empty rows 4 and 7 aren't yielded
        self.assertEqual(rows[6].status, Status.SKIPPED)
        self.assertEqual(rows[8].status, Status.VALID)

    def test_it_only_looks_at_the_first_20_rows_for_the_header(self) -> None:
        rows = [[f"note {n}"] for n in range(20)] + [["IMEI"], [imei(1)]]
        message = self.refusal(self.xlsx({"Devices": rows}))
        self.assertIn("No column of IMEIs, MEIDs or serial numbers was found", message)
        rows = [[f"note {n}"] for n in range(19)] + [["IMEI"], [imei(1)]]
        self.assertEqual(self.open(self.xlsx({"Devices": rows})).header_row, 20)

    def test_it_uses_the_first_sheet_with_a_device_column(self) -> None:
        path = self.xlsx(
            {"Read me": [["How to fill this in"], ["Put one device per row"]], "Devices": [["IMEI"], [imei(1)]]}
        )
        sheet = self.open(path)
        self.assertEqual(sheet.sheets, ["Read me", "Devices"])
        self.assertEqual(sheet.sheet, "Devices")
        self.assertEqual(len(list(sheet.iter_rows())), 1)

    def test_it_prefers_visible_sheets(self) -> None:
        workbook = openpyxl.Workbook()
        hidden = workbook.active
        hidden.title = "Lookup"
        hidden.append(["IMEI"])
        hidden.append([imei(9)])
        hidden.sheet_state = "hidden"
        visible = workbook.create_sheet("Devices")
        visible.append(["Serial Number"])
        visible.append(["RWEZ6K82DT3"])
        path = self.folder / "hidden.xlsx"
        workbook.save(path)
        self.assertEqual(self.open(path).sheet, "Devices")

    def test_it_uses_the_sheet_the_caller_chooses(self) -> None:
        path = self.xlsx({"January": [["IMEI"], [imei(1)]], "February": [["IMEI"], [imei(2)], [imei(3)]]})
        self.assertEqual(self.open(path).sheet, "January")
        sheet = self.open(path, sheet="February")
        self.assertEqual(sheet.sheet, "February")
        self.assertEqual(len(list(sheet.iter_rows())), 2)
        self.assertEqual(self.open(path, sheet="february").sheet, "February")
        with self.assertRaises(SpreadsheetError) as caught:
            open_spreadsheet(path, sheet="March")
        self.assertEqual(
            caught.exception.message, "There is no sheet named 'March'. The sheets are: 'January', 'February'."
        )
        self.assertEqual(caught.exception.sheets, ["January", "February"])

    def test_it_offers_a_choice_when_imei_and_serial_are_both_present(self) -> None:
        rows = [
            ["Serial Number", "Model", "IMEI"],
            ["RWEZ6K82DT3", "SM-A546B", imei(1)],
            ["R8XWASN3YLD", "SM-A546B", ""],
        ]
        path = self.xlsx({"Devices": rows})
        sheet = self.open(path)
        self.assertEqual(sheet.device_column, Column(2, "IMEI", "imei"))  # IMEI wins by default
        self.assertEqual(sheet.candidates, [Column(0, "Serial Number", "serial"), Column(2, "IMEI", "imei")])
        self.assertEqual([row.status for row in sheet.iter_rows()], [Status.VALID, Status.SKIPPED])

        for choice in ("Serial Number", "serial number", "S/N ", 0):
            with self.subTest(choice=choice):
                if choice == "S/N ":
                    self.assertIn("There is no column named 'S/N '", self.refusal(path, device_column=choice))
                    continue
                sheet = self.open(path, device_column=choice)
                self.assertEqual(sheet.device_column, Column(0, "Serial Number", "serial"))
                rows_read = list(sheet.iter_rows())
                self.assertEqual([row.verdict.kind for row in rows_read], [Kind.SERIAL, Kind.SERIAL])
                self.assertEqual(rows_read[0].extra, {"model": "SM-A546B", "imei": imei(1)})

    def test_it_accepts_a_device_column_with_an_unknown_header_when_chosen(self) -> None:
        path = self.xlsx({"Devices": [["Customer", "Handset"], ["ACME", imei(1)], ["ACME", "RWEZ6K82DT3"]]})
        message = self.refusal(path)
        self.assertIn("The headers found are: 'Customer', 'Handset'", message)
        sheet = self.open(path, device_column="Handset")
        self.assertEqual(sheet.device_column, Column(1, "Handset", None))
        self.assertEqual([row.verdict.kind for row in sheet.iter_rows()], [Kind.IMEI, Kind.SERIAL])
        sheet = self.open(path, device_column=1)
        self.assertEqual(sheet.header_row, 1)
        self.assertEqual(len(list(sheet.iter_rows())), 2)

    def test_it_lists_the_headers_when_no_device_column_is_found(self) -> None:
        path = self.xlsx(
            {"Sheet1": [["Name", "Phone", "Email"], ["Ann", "0123", "a@example.com"]], "Sheet2": [["Name", "Notes"]]}
        )
        with self.assertRaises(SpreadsheetError) as caught:
            open_spreadsheet(path)
        self.assertEqual(
            caught.exception.message,
            "No column of IMEIs, MEIDs or serial numbers was found (looked for a header such as 'IMEI' or 'Serial "
            "Number' in the first 20 rows). The headers found are: 'Name', 'Phone', 'Email', 'Notes'. Rename the "
            "device column's header, or choose the column, and upload again.",
        )
        self.assertEqual(caught.exception.headers, ["Name", "Phone", "Email", "Notes"])
        self.assertEqual(caught.exception.sheets, ["Sheet1", "Sheet2"])

    def test_it_refuses_a_negative_column_index(self) -> None:
        path = self.xlsx({"Devices": [["IMEI"], [imei(1)]]})
        self.assertIn("counting from 0 for column A", self.refusal(path, device_column=-1))

    def test_column_letters_follow_excel(self) -> None:
        letters = {0: "A", 25: "Z", 26: "AA", 51: "AZ", 701: "ZZ", 702: "AAA"}
        for index, letter in letters.items():
            with self.subTest(index=index):
                self.assertEqual(Column(index, "", None).letter, letter)


class RowsTestCase(FilesTestCase):
    def test_iter_rows_is_a_generator(self) -> None:
        sheet = self.open(
            self.write("devices.csv", ("IMEI\r\n" + "".join(f"{imei(n)}\r\n" for n in range(100))).encode())
        )
        rows = sheet.iter_rows()
        self.assertTrue(inspect.isgenerator(rows))
        self.assertEqual(next(rows).number, 2)
        self.assertEqual(sheet.summary()["total"], 1)  # counts follow what has been yielded
        rows.close()

    def test_rows_are_small(self) -> None:
        (row,) = self.open(self.write("devices.csv", f"IMEI\r\n{imei(1)}\r\n".encode())).iter_rows()
        self.assertFalse(hasattr(row, "__dict__"))

    def test_it_reads_numeric_cells_without_decimals(self) -> None:
        path = self.xlsx(
            {"Devices": [["IMEI", "Order No"], [int(imei(1)), 1001], [float(imei(2)), 1002.0], [3.58681e14, 7.5]]}
        )
        rows = read(self.open(path))
        self.assertEqual((rows[2].raw, rows[2].status, rows[2].extra), (imei(1), Status.VALID, {"order_no": "1001"}))
        self.assertEqual((rows[3].raw, rows[3].status, rows[3].extra), (imei(2), Status.VALID, {"order_no": "1002"}))
        self.assertEqual(rows[4].raw, "358681000000000")
        self.assertIn("lost to scientific notation", rows[4].message)
        self.assertEqual(rows[4].extra, {"order_no": "7.5"})

    def test_it_rejects_scientific_notation_in_a_workbook_text_cell(self) -> None:
        (row,) = self.open(self.xlsx({"Devices": [["IMEI"], ["3.58681E+14"]]})).iter_rows()
        self.assertIn("format the column as Text in Excel", row.message)

    def test_it_reports_each_duplicate_against_the_first_occurrence(self) -> None:
        values = [imei(1), imei(2), "35-" + imei(1)[2:], imei(1), "359221145350336", "359221145350336"]
        path = self.write("devices.csv", ("IMEI\r\n" + "\r\n".join(values) + "\r\n").encode())
        sheet = self.open(path)
        rows = read(sheet)
        self.assertEqual(rows[2].status, Status.VALID)
        self.assertEqual(
            (rows[4].status, rows[4].duplicate_of, rows[4].message),
            (Status.DUPLICATE, 2, "duplicate of row 2; dashes removed"),
        )
        self.assertEqual((rows[5].status, rows[5].duplicate_of), (Status.DUPLICATE, 2))
        # Invalid values are reported for what is wrong with them, not as duplicates.
        self.assertEqual([rows[6].status, rows[7].status], [Status.INVALID, Status.INVALID])
        self.assertEqual(
            sheet.summary(), {"valid": 2, "invalid": 2, "duplicate": 2, "skipped": 0, "warnings": 0, "total": 6}
        )

    def test_it_passes_allow_bad_check_digit_on(self) -> None:
        path = self.write("devices.csv", b"IMEI\r\n359221145350336\r\n")
        (row,) = self.open(path, allow_bad_check_digit=True).iter_rows()
        self.assertEqual(row.status, Status.VALID)
        self.assertIn("should be 5, not 6", row.message)
        sheet = self.open(path, allow_bad_check_digit=True)
        list(sheet.iter_rows())
        self.assertEqual(sheet.summary()["warnings"], 1)

    def test_it_skips_empty_device_cells_but_not_empty_rows(self) -> None:
        content = f"IMEI,Order No\r\n{imei(1)},PO-1\r\n,PO-1\r\n\u200b,PO-1\r\n,\r\n\r\n{imei(2)},PO-2\r\n".encode()
        rows = read(self.open(self.write("devices.csv", content)))
        self.assertEqual(
            {number: row.status for number, row in rows.items()},
            {2: Status.VALID, 3: Status.SKIPPED, 4: Status.SKIPPED, 7: Status.VALID},
        )
        self.assertEqual(rows[3].message, "empty, skipped")

    def test_it_never_evaluates_formula_text(self) -> None:
        content = b"IMEI,Model\r\n=HYPERLINK(\"http://evil.example\"),=cmd|' /C calc'!A0\r\n"
        (row,) = self.open(self.write("devices.csv", content)).iter_rows()
        self.assertEqual(row.raw, '=HYPERLINK("http://evil.example")')
        self.assertEqual(row.status, Status.INVALID)
        self.assertEqual(row.extra["model"], "=cmd|' /C calc'!A0")

    def test_it_neutralises_formulas_for_export(self) -> None:
        for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"):
            with self.subTest(text=text):
                self.assertEqual(neutralise_formula(text), "'" + text)
        for text in ("", "359221145350335", "SM-A546B", "'=already"):
            with self.subTest(text=text):
                self.assertEqual(neutralise_formula(text), text)
