"""What every list page shows above its table: how many rows match its filters, fast at a million rows, and the
links that page through them keeping the filters, search and sort in the URL (shareable, reloadable, back works).

`total(qs)` counts exactly while that is cheap and says when it could not:
1. COUNT(*) over a LIMITed subquery (`qs[:EXACT_COUNT_LIMIT + 1]`): the database stops after EXACT_COUNT_LIMIT + 1
   rows, so this is cheap however large the table. Fewer rows than that: the exact count.
2. More on PostgreSQL: the planner's estimate for the query (EXPLAIN (FORMAT JSON), "Plan Rows"), which costs no
   scan and is shown as an estimate ("about 1.2 million devices").
3. More on SQLite, which has no estimate: the exact COUNT(*), interrupted after COUNT_TIME_BUDGET seconds; when
   interrupted, the honest lower bound ("more than 10,000 devices"). An exact count found this way is kept in the
   cache for COUNT_CACHE_SECONDS and shown as an estimate meanwhile ("about 1 million devices"): counting a
   million rows took 100 ms of every page load, more than the rest of the page, and staff paging through a
   list or reloading it need the size, not the last row.

The lists page by keyset (an id cursor such as `after` or `before`), never by OFFSET: `page_query` builds the
query string of another page from the current one, so every filter stays in the URL.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db import OperationalError, connections, transaction
from django.db.models import QuerySet
from django.http import HttpRequest

# Below this many matching rows a list shows the exact count; above it, an estimate or a lower bound.
EXACT_COUNT_LIMIT = 10_000
# How long SQLite may spend on an exact count above EXACT_COUNT_LIMIT before the list says "more than".
COUNT_TIME_BUDGET = 0.2
# SQLite calls the progress handler every this many virtual-machine steps (it checks the time budget there).
PROGRESS_STEPS = 10_000
# How long an exact SQLite count above EXACT_COUNT_LIMIT is reused (as an estimate) for the same filters.
COUNT_CACHE_SECONDS = 60


@dataclass(frozen=True)
class Total:
    """How many rows a list has. `exact` False means `n` is the planner's estimate, or, with `at_least`, a lower
    bound. Unpacks as (n, exact)."""

    n: int
    exact: bool
    at_least: bool = False

    def __iter__(self) -> Any:
        return iter((self.n, self.exact))

    def words(self, singular: str, plural: str = "") -> str:
        """ "1 job", "12,345 jobs", "about 1.2 million devices", "more than 10,000 devices"."""
        noun = singular if self.n == 1 and self.exact else (plural or singular + "s")
        if self.exact:
            return f"{self.n:,} {noun}"
        if self.at_least:
            return f"more than {self.n:,} {noun}"
        return f"about {approximate(self.n)} {noun}"


def approximate(n: int) -> str:
    """An estimate in words, rounded to what an estimate can claim: "1.2 million", "12,000", "950"."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}".removesuffix(".0") + " million"
    if n >= 1000:
        digits = len(str(n)) - 2  # two significant figures
        return f"{round(n, -digits):,}"
    return f"{n:,}"


def total(qs: QuerySet[Any]) -> Total:
    """How many rows `qs` holds (its filters, not its page cursor: pass the queryset before the cursor filter)."""
    qs = qs.order_by()  # sorting changes nothing to a count and costs a sort
    capped = qs if qs.query.distinct else qs.values("pk")  # the subquery reads ids only
    n = capped[: EXACT_COUNT_LIMIT + 1].count()  # SELECT COUNT(*) FROM (SELECT ... LIMIT N + 1)
    if n <= EXACT_COUNT_LIMIT:
        return Total(n, exact=True)
    vendor = connections[qs.db].vendor
    if vendor == "postgresql":
        return Total(max(planner_estimate(qs), EXACT_COUNT_LIMIT + 1), exact=False)
    if vendor == "sqlite":
        return _sqlite_count(qs)
    return Total(qs.count(), exact=True)


def planner_estimate(qs: QuerySet[Any]) -> int:
    """PostgreSQL's estimate of how many rows `qs` returns (no scan: the plan only). Runs EXPLAIN itself:
    QuerySet.explain(format="json") re-serialises psycopg's parsed answer without its outer list."""
    sql, params = qs.query.sql_with_params()
    with connections[qs.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):  # a driver that does not parse json columns
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def _sqlite_count(qs: QuerySet[Any]) -> Total:
    """The exact count if SQLite finds it within COUNT_TIME_BUDGET, else "more than EXACT_COUNT_LIMIT"; a count
    found in the last COUNT_CACHE_SECONDS for the same query, as an estimate."""
    sql, params = qs.query.sql_with_params()
    key = "lists:count:" + hashlib.sha256(f"{qs.db}|{sql}|{params!r}".encode()).hexdigest()
    cached = cache.get(key)
    if cached is not None:
        return Total(cached, exact=False)
    found = _sqlite_exact_count(qs)
    if found.exact:
        cache.set(key, found.n, COUNT_CACHE_SECONDS)
    return found


def _sqlite_exact_count(qs: QuerySet[Any]) -> Total:
    connection = connections[qs.db]
    connection.ensure_connection()
    raw = connection.connection
    deadline = time.monotonic() + COUNT_TIME_BUDGET
    raw.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_STEPS)
    try:
        # A savepoint: the interrupted statement is a read, and the caller's transaction carries on unharmed.
        with transaction.atomic(using=qs.db):
            return Total(qs.count(), exact=True)
    except OperationalError:
        return Total(EXACT_COUNT_LIMIT, exact=False, at_least=True)
    finally:
        raw.set_progress_handler(None, 0)


def page_query(request: HttpRequest, **changes: Any) -> str:
    """The current query string with `changes` applied (None removes a parameter): the link to another page of
    the same list, or the first page (`page_query(request, after=None)`), keeping every filter."""
    params = request.GET.copy()
    for name, value in changes.items():
        params.pop(name, None)
        if value is not None and value != "":
            params[name] = str(value)
    return params.urlencode()


def list_context(
    request: HttpRequest,
    qs: QuerySet[Any],
    *,
    singular: str,
    plural: str = "",
    cursor: str = "",
    next_value: Any = None,
) -> dict[str, Any]:
    """What templates/portal/_list_total.html needs: the total of `qs` (filtered, without its page cursor) in
    words and, for a list that lets the partial draw its page links, the query strings of the next page (when
    `next_value`, the cursor's value there) and of the first page (when the list is past it). Without `cursor`,
    the page keeps its own links."""
    count = total(qs)
    ctx: dict[str, Any] = {
        "list_total": count,
        "list_total_words": count.words(singular, plural),
        "list_next_query": None,
        "list_first_query": None,
    }
    if cursor:
        if next_value is not None:
            ctx["list_next_query"] = page_query(request, **{cursor: next_value})
        if request.GET.get(cursor):
            ctx["list_first_query"] = page_query(request, **{cursor: None})
    return ctx


def cut_page(rows: Any, size: int, cursor: Callable[[Any], Any] = lambda row: row.pk) -> tuple[list[Any], Any]:
    """One page of a keyset-paged list: the first `size` of `rows` (ordered, and already filtered past the
    previous page's cursor) and the cursor of the last of them when more follow, else None. One row more than
    the page is read to know that: no COUNT, no OFFSET."""
    page = list(rows[: size + 1])
    return page[:size], (cursor(page[size - 1]) if len(page) > size else None)
