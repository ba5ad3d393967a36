"""Ingest: a generated N-row xlsx (IMEI, serial, model, order number) read three ways in one run.

- `calamine_read_s`: python-calamine reading every row, nothing else (the reference);
- `openpyxl_read_s`: openpyxl in read-only mode reading every row;
- `ingest_s`: the real upload path, portal.uploads.stage_upload (parse + validate + local checks + stage);
- `ingest_ratio` = ingest_s / calamine_read_s (target ≤ 2.0);
- `ingest_peak_rss_mb`: peak RSS of a separate process doing only the ingest (target ≤ 250 MB).

    python bench/ingest.py [--rows 100000] [--only-ingest FILE]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, peak_rss_mb, setup_django, timed, workdir


def make_xlsx(path: Path, rows: int) -> None:
    from openpyxl import Workbook

    from portal.identifiers import luhn_check_digit

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Devices")
    ws.append(["IMEI", "Serial Number", "Model", "Order Number"])
    for i in range(rows):
        body = f"35{i:012d}"
        ws.append([body + luhn_check_digit(body), f"R{i:010d}", "SM-G991B", f"PO-{i // 1000}"])
    wb.save(path)


def calamine_read(path: Path) -> int:
    import python_calamine

    book = python_calamine.CalamineWorkbook.from_path(str(path))
    n = 0
    for _ in book.get_sheet_by_index(0).iter_rows():
        n += 1
    return n


def openpyxl_read(path: Path) -> int:
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True)
    n = sum(1 for _ in book.worksheets[0].iter_rows(values_only=True))
    book.close()
    return n


def ingest(path: Path) -> int:
    import uuid

    from django.core.files import File

    from portal.models import KnoxAccount, Upload
    from portal.uploads import stage_upload

    account = KnoxAccount.objects.create(name=f"bench-{uuid.uuid4().hex[:8]}", environment="sandbox", reseller_id="1")
    upload = Upload(account=account, filename=path.name)
    with path.open("rb") as f:
        upload.file.save(path.name, File(f), save=False)
    upload.save()
    stage_upload(upload)
    return upload.valid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--only-ingest", help="(internal) ingest this file and report peak RSS")
    args = parser.parse_args()
    with workdir() as tmp:
        setup_django(tmp)
        if args.only_ingest:
            valid = ingest(Path(args.only_ingest))
            emit({"valid": valid, "peak_rss_mb": round(peak_rss_mb(), 1)})
            return
        path = tmp / "devices.xlsx"
        make_xlsx(path, args.rows)
        calamine_s, n = timed(lambda: calamine_read(path))
        openpyxl_s, _ = timed(lambda: openpyxl_read(path))
        ingest_s, valid = timed(lambda: ingest(path))
        assert valid == args.rows, (valid, args.rows)
        # Memory in a fresh process that does only the ingest, as a worker would.
        child = subprocess.run(
            [sys.executable, __file__, "--only-ingest", str(path)], capture_output=True, text=True, check=True
        )
        import json

        rss = json.loads(child.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        emit({
            "ingest_s": round(ingest_s, 3),
            "calamine_read_s": round(calamine_s, 3),
            "openpyxl_read_s": round(openpyxl_s, 3),
            "ingest_ratio": round(ingest_s / calamine_s, 2),
            "ingest_peak_rss_mb": rss,
            "ingest_rows": n - 1,
        })  # fmt: skip


if __name__ == "__main__":
    main()
