from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_redis(settings):
    """With REDIS_URL set (make test-pg) the cache and rate-limit slots live in Redis, which test transactions do
    not roll back: start every test from an empty Redis database. (The database cache needs nothing: its rows
    roll back with the test.)"""
    if settings.REDIS_URL:
        from django.core.cache import cache

        cache.clear()
    yield
