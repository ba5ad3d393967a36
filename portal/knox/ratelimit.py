"""Request pacing shared by every process, so N workers together stay under a Knox rate limit.

The algorithm is a reservation form of GCRA: each (account, service) key stores the earliest time the next
request may be sent. A caller atomically reads that time and pushes it forward by one interval (1 / rate), then
sleeps until its reserved slot. Requests therefore leave evenly spaced, which keeps every sliding one-second
window under the limit the server counts with.

A slot nobody was ready for is not always lost: at high rates the store lets a late caller take the slot it
missed, at most BURST_SLOTS intervals in the past (GCRA's burst tolerance). Without it, two workers that are each
fast enough lost a slot whenever both were busy at once: at Knox Guard's 100/s, 5 % of the slots (measured: 92
instead of 97 requests/s, the gaps between sends 20 ms instead of 10 ms about 900 times in 20,000).

Two stores, picked by settings: Redis (an atomic Lua script, when REDIS_URL is set) or the database
(`portal.RateLimitSlot`, one UPDATE … RETURNING: on PostgreSQL the row lock, on SQLite the write lock, serialises
the read-modify-write).
"""

from __future__ import annotations

import time
from functools import cache
from typing import Protocol

from django.conf import settings
from django.db import connections, router, transaction

# Pace at this fraction of the published limit, so Knox's own counter never sees it crossed. A send that is
# late (scheduling, a slow commit) lets the next one leave sooner than its spacing; at low limits one such pair
# is a large share of a second (measured: 2 of 298 KDP requests refused at 10/s with 0.97), hence more headroom.
RATE_LIMIT_HEADROOM = 0.97
LOW_RATE_HEADROOM = 0.9
LOW_RATE = 20.0
# How many missed slots a late caller may take back (rates of LOW_RATE and above only). Any one-second window then
# holds at most rate x headroom + 1 + BURST_SLOTS sends (98 + 1 = 99 at 100/s), still under the limit; below
# LOW_RATE one slot is too large a share of the second for that.
BURST_SLOTS = 1

SERVICE_LIMIT_SETTINGS = {
    "guard": "KNOX_GUARD_RATE_LIMIT",
    "kdp": "KNOX_KDP_RATE_LIMIT",
    "kdp_gen1": "KNOX_KDP_RATE_LIMIT",
    "efota": "KNOX_EFOTA_RATE_LIMIT",
}


def limit_for(service: str) -> float:
    """Requests per second allowed for `service` (0 = unpaced)."""
    name = SERVICE_LIMIT_SETTINGS.get(service)
    return float(getattr(settings, name)) if name else 0.0


class SlotStore(Protocol):
    def reserve(self, key: str, interval: float, now: float, tolerance: float = 0.0) -> float:
        """Reserve the next slot for `key`, one missed up to `tolerance` seconds ago included; return the time at
        which the caller may send (in the past: at once)."""


class DatabaseSlotStore:
    def reserve(self, key: str, interval: float, now: float, tolerance: float = 0.0) -> float:
        from portal.models import RateLimitSlot

        taken = self._take(key, interval, now, tolerance)
        if taken is not None:
            return taken
        with transaction.atomic():
            # First use of this key. A concurrent creator makes get_or_create return the existing row; then take a
            # slot the normal way.
            _, created = RateLimitSlot.objects.get_or_create(key=key, defaults={"next_free": now + interval})
            if created:
                return now
            taken = self._take(key, interval, now, tolerance)
        if taken is None:
            raise RuntimeError(f"the rate-limit slot {key!r} vanished while it was being reserved")
        return taken

    @staticmethod
    def _take(key: str, interval: float, now: float, tolerance: float) -> float | None:
        """Push the key's next free time forward and read it back in one statement (UPDATE … RETURNING, SQLite
        3.35+ and PostgreSQL): every Knox request pays for this, so it is one round trip and one short write.
        None when the key has no row yet."""
        from portal.models import RateLimitSlot

        connection = connections[router.db_for_write(RateLimitSlot)]
        with connection.cursor() as cursor:
            cursor.execute(_TAKE_SQL[connection.vendor == "sqlite"], [now - tolerance, interval, key])
            rows = cursor.fetchall()  # read to the end: SQLite ends the statement's write only then
        return float(rows[0][0]) - interval if rows else None


# DatabaseSlotStore._take for PostgreSQL (False) and SQLite (True), whose two-argument MAX is PostgreSQL's GREATEST.
_TAKE_SQL = {
    False: 'UPDATE "portal_ratelimitslot" SET "next_free" = GREATEST("next_free", %s) + %s WHERE "key" = %s '
    'RETURNING "next_free"',
    True: 'UPDATE "portal_ratelimitslot" SET "next_free" = MAX("next_free", %s) + %s WHERE "key" = %s '
    'RETURNING "next_free"',
}


_RESERVE_LUA = """
local earliest = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
if nxt < earliest then nxt = earliest end
redis.call('SET', KEYS[1], tostring(nxt + interval), 'EX', 3600)
return tostring(nxt)
"""


class RedisSlotStore:
    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.script = self.client.register_script(_RESERVE_LUA)

    def reserve(self, key: str, interval: float, now: float, tolerance: float = 0.0) -> float:
        args = [repr(now - tolerance), repr(interval)]
        return float(self.script(keys=[f"portal:ratelimit:{key}"], args=args))


@cache
def _redis_store(url: str) -> RedisSlotStore:
    return RedisSlotStore(url)


def default_store() -> SlotStore:
    if settings.REDIS_URL:
        return _redis_store(settings.REDIS_URL)
    return DatabaseSlotStore()


class RateLimiter:
    """Blocks until the caller may send one request under `rate` requests per second for `key`."""

    def __init__(self, key: str, rate: float, store: SlotStore | None = None) -> None:
        self.key = key
        headroom = LOW_RATE_HEADROOM if rate < LOW_RATE else RATE_LIMIT_HEADROOM
        self.interval = 1.0 / (rate * headroom) if rate > 0 else 0.0
        self.tolerance = self.interval * BURST_SLOTS if rate >= LOW_RATE else 0.0
        self.store = store or default_store()

    def acquire(self) -> float:
        """Wait for a slot; return how long we waited (seconds)."""
        if not self.interval:
            return 0.0
        # Wall-clock time: every process on every host compares against the same clock (keep hosts on NTP).
        now = time.time()
        at = self.store.reserve(self.key, self.interval, now, self.tolerance)
        wait = at - now
        if wait > 0:
            time.sleep(wait)
            return wait
        return 0.0
