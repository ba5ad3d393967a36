"""Ingest: a generated N-row xlsx (IMEI, serial, model, order number) read three ways in one run.

- `calamine_read_s`: python-calamine reading every row, nothing else (the reference);
- `openpyxl_read_s`: openpyxl in read-only mode reading every row;
- `ingest_s`: the real upload path, portal.uploads.stage_upload (parse + validate + local checks + stage);
- `ingest_ratio` = ingest_s / calamine_read_s (target ≤ 2.0);
- `ingest_peak_rss_mb`: peak RSS of a separate process doing only the ingest (target ≤ 250 MB);
- `stage_insert_s`: only writing the same rows, already built as tuples, into the staged-row table with its
  indexes (one `portal.db.insert_rows`): the part of the ingest no parser or validator can remove;
- `ingest_floor_ratio` = (calamine_read_s + stage_insert_s) / calamine_read_s: the best `ingest_ratio` any
  implementation that stores the rows in this database could reach;
- `describe_cell_ratio`: the cost of describing a cell of 40,000 different characters ÷ one of 4,000 (linear ≈ 10,
  target ≤ 40; it was quadratic once).

With `--suffix _pg` (bench/run.py does this when BENCH_PG_URL is set) every metric name ends in it, so the same
benchmark run on PostgreSQL reports beside the SQLite one.

    python bench/ingest.py [--rows 100000] [--suffix S] [--only-ingest FILE]
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


def stage_insert(rows: int) -> float:
    """Seconds to write `rows` staged rows, built beforehand, into a new upload: the database's share alone."""
    import uuid

    from django.db import transaction

    from portal.db import insert_rows
    from portal.models import KnoxAccount, Upload, UploadRow
    from portal.uploads import STAGE_BATCH, STAGED_FIELDS

    account = KnoxAccount.objects.create(name=f"bench-{uuid.uuid4().hex[:8]}", environment="sandbox", reseller_id="1")
    upload = Upload.objects.create(account=account, filename="floor.xlsx")
    tuples = [
        (upload.pk, i + 2, f"35{i:013d}", f"35{i:013d}", "imei", "valid", "", "", f"PO-{i // 1000}", "SM-G991B", "")
        for i in range(rows)
    ]

    def write() -> None:  # as stage_upload writes them: STAGE_BATCH rows per transaction
        for start in range(0, rows, STAGE_BATCH):
            with transaction.atomic():
                insert_rows(UploadRow, STAGED_FIELDS, tuples[start : start + STAGE_BATCH])

    seconds, _ = timed(write)
    return seconds


def describe_cell_ratio() -> float:
    """How the cost of describing a cell of n different characters grows: 40,000 ÷ 4,000 characters. Linear gives
    about 10; the quadratic version this guards against (22 s for 40,000) gave about 100. Target ≤ 40."""
    from portal import identifiers

    def cost(n: int) -> float:
        text = "".join(chr(c) for c in range(0x4E00, 0x4E00 + n))
        seconds, _ = timed(lambda: [identifiers.check_identifier(text, column_kind="imei") for _ in range(3)])
        return seconds

    cost(4_000)  # warm up
    return cost(40_000) / cost(4_000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--suffix", default="", help="appended to every metric's name (e.g. _pg)")
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
        insert_s = stage_insert(args.rows)
        results = {
            "ingest_s": round(ingest_s, 3),
            "calamine_read_s": round(calamine_s, 3),
            "openpyxl_read_s": round(openpyxl_s, 3),
            "ingest_ratio": round(ingest_s / calamine_s, 2),
            "ingest_peak_rss_mb": rss,
            "ingest_rows": n - 1,
            "stage_insert_s": round(insert_s, 3),
            "ingest_floor_ratio": round((calamine_s + insert_s) / calamine_s, 2),
            "describe_cell_ratio": round(describe_cell_ratio(), 1),
        }
        emit({f"{name}{args.suffix}": value for name, value in results.items()})


if __name__ == "__main__":
    main()
