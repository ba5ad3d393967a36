"""Peak memory of one parse: every file of the hostile corpus and a generated 200,000-row xlsx, each parsed in a
fresh process exactly as an upload reads it (portal.spreadsheets.open_spreadsheet with the settings' limits, then
every row of `iter_rows`), nothing else.

- `parse_peak_rss_mb`: the highest peak RSS over all those files (target ≤ 250 MB), and `parse_peak_rss_file`;
- `parse_hostile_worst_rss_mb`: the highest over the hostile corpus (committed and generated files);
- `parse_200k_xlsx_rss_mb`: the generated xlsx (IMEI, serial, model, order number, as bench/ingest.py writes it);
- `parse_baseline_rss_mb`: a process that only sets up Django, for reference (not subtracted from the others);
- `parse_dense_rss_mb`: 200,000 rows of 8 numbers, about the densest sheet the memory limit lets through (not in
  `parse_peak_rss_mb`: it shows how close a file made to fit the limits comes to the target; full runs only).

A refused file counts too: its peak is what the process reached until the refusal. Each child reports its own
ru_maxrss, so one file's peak never hides inside another's.

    python bench/parse_rss.py [--rows 200000] [--skip-big] [--only-parse FILE | --only-baseline] [--verbose]

Each child loads Django and the portal's apps as a worker does (no database: a parse reads none), so the figures
are a worker's, a little above what the parse alone needs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, emit, peak_rss_mb, setup_django, workdir
from bench.ingest import make_xlsx

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "hostile"
# A child that died has no figure; it ranks above every other so that it is what gets reported.
CRASHED = 1e9
# The generated files that take longest to write (and, in --quick runs, are skipped): a million rows, 285 MB.
BIG = ("million-rows.csv", "million-rows.xlsx", "zip-bomb-many-members.xlsx")


def make_dense_xlsx(path: Path, rows: int, columns: int) -> None:
    """An IMEI and `columns - 1` small numbers a row: many filled cells, little text."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Devices")
    ws.append(["IMEI", *(f"Value {n}" for n in range(1, columns))])
    for i in range(rows):
        ws.append([f"35{i:013d}", *range(1, columns)])
    wb.save(path)


def parse(path: Path) -> dict:
    """Read `path` as stage_upload does (same limits, every row), without staging anything."""
    from portal import spreadsheets
    from portal.uploads import spreadsheet_limits

    try:
        with spreadsheets.open_spreadsheet(
            path,
            path.name,
            **spreadsheet_limits(),
        ) as sheet:
            rows = sum(1 for _ in sheet.iter_rows())
    except spreadsheets.SpreadsheetError as error:
        return {"refused": error.message[:80]}
    return {"rows": rows}


def corpus_files(folder: Path, skip_big: bool) -> list[Path]:
    """Every committed file of the corpus, then the generated ones written into `folder`."""
    sys.path.insert(0, str(ROOT))
    from tests.data.hostile import make_corpus

    committed = [CORPUS / name for name in make_corpus.COMMITTED]
    names = [name for name in make_corpus.GENERATED if not (skip_big and name in BIG)]
    return committed + [make_corpus.build(name, folder) for name in names]


def child(*argv: str) -> dict:
    """Run this script in a fresh process with `argv`; its last line of output is its JSON result."""
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if done.returncode != 0:
        # A crash (a Rust abort, the OOM killer) is reported, not hidden: its peak is unknown.
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return {"error": tail[0][:120], "peak_rss_mb": CRASHED}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _outcome(result: dict) -> str:
    return f"{result['rows']} rows" if "rows" in result else result.get("refused") or result.get("error", "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--skip-big", action="store_true", help="leave out the slowest generated files")
    parser.add_argument("--verbose", action="store_true", help="print each file's figure to stderr")
    parser.add_argument("--only-parse", help="(internal) parse this file and report peak RSS")
    parser.add_argument("--only-baseline", action="store_true", help="(internal) set up Django, report peak RSS")
    args = parser.parse_args()
    with workdir() as tmp:
        if args.only_parse or args.only_baseline:
            setup_django(tmp, migrate=False)
            import portal.uploads  # noqa: F401 - what a worker has loaded: every app's models and the upload path

            outcome = parse(Path(args.only_parse)) if args.only_parse else {}
            emit({**outcome, "peak_rss_mb": round(peak_rss_mb(), 1)})
            return
        xlsx = tmp / f"devices-{args.rows}.xlsx"
        make_xlsx(xlsx, args.rows)
        hostile = {path.name: child("--only-parse", str(path)) for path in corpus_files(tmp, args.skip_big)}
        devices = child("--only-parse", str(xlsx))
        baseline = child("--only-baseline")
        dense = {}
        if not args.skip_big:
            make_dense_xlsx(tmp / "dense.xlsx", 200_000, 8)
            dense = child("--only-parse", str(tmp / "dense.xlsx"))
    if args.verbose:
        for name, result in sorted({**hostile, xlsx.name: devices}.items(), key=lambda item: -item[1]["peak_rss_mb"]):
            print(f"{result['peak_rss_mb']:>8} MB  {name}  {result}", file=sys.stderr)
    worst = max(hostile, key=lambda name: hostile[name]["peak_rss_mb"])
    peak_file, peak = max(
        [(worst, hostile[worst]["peak_rss_mb"]), (xlsx.name, devices["peak_rss_mb"])], key=lambda x: x[1]
    )
    emit(
        {
            "parse_peak_rss_mb": peak,
            "parse_peak_rss_file": peak_file,
            "parse_hostile_worst_rss_mb": hostile[worst]["peak_rss_mb"],
            "parse_hostile_worst_file": worst,
            "parse_200k_xlsx_rss_mb": devices["peak_rss_mb"],
            "parse_xlsx_rows": args.rows,
            "parse_baseline_rss_mb": baseline["peak_rss_mb"],
            "parse_files": len(hostile) + 1,
            **({"parse_dense_rss_mb": dense["peak_rss_mb"], "parse_dense_outcome": _outcome(dense)} if dense else {}),
        }
    )


if __name__ == "__main__":
    main()
