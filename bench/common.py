"""Shared helpers for the benchmarks: a throw-away Django environment per benchmark, timing and percentiles.

Each benchmark runs in its own process with its own SQLite file (or DATABASE_URL if set), so figures do not
depend on earlier runs, and peak memory (ru_maxrss) is that benchmark's own.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def setup_django(tmp: Path, *, migrate: bool = True) -> None:
    """Point Django at a fresh database in `tmp` (unless DATABASE_URL is set) and migrate it (unless `migrate` is
    False: a benchmark that never touches the database, like a parse, loads the apps as a worker does)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    # BENCH_DATABASE_URL (set by bench/run.py from DATABASE_URL) runs the benchmarks on PostgreSQL; otherwise
    # every benchmark process gets its own SQLite file.
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp}/bench.sqlite3"
    os.environ["MEDIA_ROOT"] = str(tmp / "media")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    if not migrate:
        return
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="knox-bench-") as d:
        yield Path(d)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def emit(result: dict[str, Any]) -> None:
    """Benchmarks print exactly one JSON object on their last line of output."""
    print(json.dumps(result))
