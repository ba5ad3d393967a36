"""Shared pacing: several processes together never exceed the per-account, per-service limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from portal.knox.ratelimit import (
    BURST_SLOTS,
    LOW_RATE,
    RATE_LIMIT_HEADROOM,
    DatabaseSlotStore,
    RateLimiter,
    RedisSlotStore,
)
from tests.base import ROOT, migrated_database

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_database_slots_are_spaced_by_the_interval(db):
    store = DatabaseSlotStore()
    slots = [store.reserve("acct:guard", 0.01, now=1000.0) for _ in range(5)]
    assert slots == pytest.approx([1000.0, 1000.01, 1000.02, 1000.03, 1000.04])
    # After an idle period the next slot is "now", not in the past.
    assert store.reserve("acct:guard", 0.01, now=2000.0) == pytest.approx(2000.0)
    # Keys are independent.
    assert store.reserve("other:guard", 0.01, now=1000.0) == pytest.approx(1000.0)


def late_caller_slots(store) -> list[float]:
    """Slots 10 ms apart; at t=1000.05 (the slots of 1000.03 and 1000.04 were missed) three callers arrive late,
    with a tolerance of one slot."""
    for _ in range(3):
        store.reserve("acct:guard", 0.01, now=1000.0, tolerance=0.01)
    return [store.reserve("acct:guard", 0.01, now=1000.05, tolerance=0.01) for _ in range(3)]


def test_a_late_caller_takes_back_one_missed_slot_not_more(db):
    # The first late caller gets the slot of 1000.04 (one interval ago: send at once), the next the current one;
    # the slot of 1000.03 is lost for good, so no window ever holds more than one extra send.
    assert late_caller_slots(DatabaseSlotStore()) == pytest.approx([1000.04, 1000.05, 1000.06])


@pytest.mark.skipif(not redis_available(), reason="needs Redis on 127.0.0.1:6379 (see DEVELOPERS.md to start it)")
def test_redis_slots_take_back_one_missed_slot_the_same_way():
    import uuid

    store = RedisSlotStore(REDIS_URL)
    key = f"test:{uuid.uuid4().hex}"
    original = store.reserve
    store.reserve = lambda _key, *args, **kwargs: original(key, *args, **kwargs)
    assert late_caller_slots(store) == pytest.approx([1000.04, 1000.05, 1000.06], abs=1e-4)


def test_burst_tolerance_only_at_high_rates():
    assert BURST_SLOTS == 1
    fast = RateLimiter("k", 100.0, store=DatabaseSlotStore())
    assert fast.tolerance == pytest.approx(fast.interval)
    assert RateLimiter("k", LOW_RATE - 1, store=DatabaseSlotStore()).tolerance == 0.0


def test_unlimited_services_do_not_wait(db):
    assert RateLimiter("k", 0).acquire() == 0.0


WORKER = """
import json, os, sys, time
import django
django.setup()
from portal.knox.ratelimit import RateLimiter, RedisSlotStore, DatabaseSlotStore
store = RedisSlotStore(os.environ["TEST_REDIS"]) if os.environ.get("TEST_REDIS") else DatabaseSlotStore()
limiter = RateLimiter(os.environ["KEY"], float(os.environ["RATE"]), store=store)
out = []
for _ in range(int(os.environ["N"])):
    limiter.acquire()
    out.append(time.time())
print(json.dumps(out))
"""


def run_processes(n_procs: int, per_proc: int, rate: float, env: dict[str, str]) -> list[float]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "portal.settings",
                "N": str(per_proc),
                "RATE": str(rate),
                **env,
            },
        )
        for _ in range(n_procs)
    ]
    times: list[float] = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        times.extend(json.loads(out))
    return times


@pytest.mark.slow
@pytest.mark.skipif(not redis_available(), reason="needs Redis on 127.0.0.1:6379 (see DEVELOPERS.md to start it)")
def test_processes_sharing_redis_keep_the_limit():
    import uuid

    key = f"test:{uuid.uuid4().hex}"
    times = run_processes(3, 40, 60, {"TEST_REDIS": REDIS_URL, "KEY": key})
    assert len(times) == 120
    # As with SQLite below: the times are taken after each sleep ends, so on a busy machine scheduling jitter can
    # squeeze one extra call into a window; the reservations themselves are 1/(0.97 x 60) s apart.
    assert max_in_window(times) <= 61
    # And they are not needlessly slow: 120 requests at 60/s (with headroom) take about two seconds.
    assert max(times) - min(times) >= (119 / (60 * RATE_LIMIT_HEADROOM)) * 0.95


@pytest.mark.slow
def test_processes_sharing_a_sqlite_database_keep_the_limit(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/rl.sqlite3", "KEY": "1:kdp"}
    migrated_database(tmp_path / "rl.sqlite3")
    times = run_processes(3, 20, 30, env)
    assert len(times) == 60
    # Times are taken after each sleep ends, so scheduling jitter on a busy machine can squeeze one extra call
    # into a window; the pacing itself (0.97 of the limit) keeps the real send times inside it.
    assert max_in_window(times) <= 31
