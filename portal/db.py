"""Bulk inserts for the hot paths that stage or plan hundreds of thousands of rows.

Django's bulk_create builds a model instance per row and compiles every value through the field machinery,
about 100 µs a row; a 100,000-row spreadsheet then spends most of its time there. `insert_rows` sends plain
tuples with one prepared INSERT per batch (`executemany`), which both SQLite and PostgreSQL run in a fraction of
the time. Callers pass database-ready values: strings, numbers, None, foreign keys as ids, and datetimes through
`db_datetime()`.
"""

from __future__ import annotations

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
    columns = ", ".join(qn(meta.get_field(name).column) for name in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608 - names come from the model
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    sent = 0
    iterator = iter(rows)
    with connection.cursor() as cursor:
        while chunk := list(islice(iterator, batch)):
            cursor.executemany(sql, chunk)
            sent += len(chunk)
    return sent
