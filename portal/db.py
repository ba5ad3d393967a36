"""Bulk inserts for the hot paths that stage or plan hundreds of thousands of rows.

Django's bulk_create builds a model instance per row and compiles every value through the field machinery,
about 100 µs a row; a 100,000-row spreadsheet then spends most of its time there. `insert_rows` sends plain
tuples with one prepared INSERT per batch (`executemany`), which both SQLite and PostgreSQL run in a fraction of
the time. On PostgreSQL, rows that need no conflict handling go through `COPY … FROM STDIN` instead, which skips
the per-row statement altogether (staging 100,000 spreadsheet rows: see docs/performance.md). Callers pass
database-ready values: strings, numbers, None, foreign keys as ids, and datetimes through `db_datetime()`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

from django.db import connection, models

BATCH = 5000


def db_datetime(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def insert_rows(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    ignore_conflicts: bool = False,
    batch: int = BATCH,
) -> int:
    """INSERT `rows` (tuples in the order of `fields`) into `model`'s table; returns how many were sent.

    With `ignore_conflicts`, rows that break a unique constraint are skipped (ON CONFLICT DO NOTHING, which
    SQLite ≥ 3.24 and PostgreSQL both understand). No model save() or signals run.
    """
    meta = model._meta
    qn = connection.ops.quote_name
    table = qn(meta.db_table)
    columns = ", ".join(qn(meta.get_field(name).column) for name in fields)
    if connection.vendor == "postgresql" and not ignore_conflicts:
        return _copy_rows(f"COPY {table} ({columns}) FROM STDIN", rows)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608 - names come from the model
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    sent = 0
    iterator = iter(rows)
    with connection.cursor() as cursor:
        while chunk := list(islice(iterator, batch)):
            cursor.executemany(sql, chunk)
            sent += len(chunk)
    return sent


def _copy_rows(sql: str, rows: Iterable[Sequence[Any]]) -> int:
    """PostgreSQL's COPY (psycopg 3 adapts each value as a parameter would be). Constraints, defaults and
    triggers apply as for INSERT; a bad row fails the whole COPY, as it fails a whole executemany batch."""
    sent = 0
    start = time.monotonic()
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)
            sent += 1
    if connection.queries_logged:  # as Django logs an execute(): DEBUG's query list, tests' CaptureQueriesContext
        connection.queries_log.append({"sql": f"{sql} -- {sent} rows", "time": f"{time.monotonic() - start:.3f}"})
    return sent
