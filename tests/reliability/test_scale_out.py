"""Scale-out on the production stack: two `qcluster` processes sharing PostgreSQL and the Redis broker work one
large KDP upload (and a second upload beside it) together: the cluster holding the big job is killed mid-way
and the other one finishes it. No device is submitted twice and Knox's rate limit is never exceeded, though
both clusters send at once (the limiter's reservations live in Redis, shared by every process).

Runs in `make test-pg` (it needs PostgreSQL and Redis on 127.0.0.1); skipped by the SQLite run.
"""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest
from django.conf import settings

from tests.base import fresh_imeis
from tests.reliability.helpers import FINISHED, Stack, job_row, tx_states, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (settings.DATABASES["default"]["ENGINE"].endswith("postgresql") and settings.REDIS_URL),
        reason="scale-out runs on PostgreSQL + Redis: make test-pg",
    ),
]

BIG, SMALL, CHUNK = 20_000, 4_000, 500
STACK_REDIS_DB = 14  # the tests' own Redis database is 15 (Makefile); this stack gets another one


@pytest.fixture
def pg_stack(tmp_path):
    import psycopg
    import redis

    admin_url = "postgres://postgres@127.0.0.1:5432/postgres"
    name = f"portal_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    redis_url = f"redis://127.0.0.1:6379/{STACK_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    stack = Stack(
        tmp_path,
        database_url=f"postgres://postgres@127.0.0.1:5432/{name}",
        redis_url=redis_url,
        KDP_CHUNK_SIZE=str(CHUNK),
        JOB_LEASE_SECONDS="10",
        Q_WORKERS="2",
        Q_CLUSTER_NAME="portal-scale",
    )
    try:
        yield stack
    finally:
        stack.stop_all()
        stack.print_logs()
        with psycopg.connect(admin_url, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        redis.Redis.from_url(redis_url).flushdb()


def holder_pid(stack: Stack, job: int) -> int:
    owner = job_row(stack, job)["lease_owner"]
    return int(owner.split("-")[1]) if owner.count("-") >= 2 else 0


def test_two_clusters_on_redis_finish_one_large_upload_without_duplicates_or_429s(pg_stack: Stack, tmp_path):
    stack = pg_stack
    stack.start_sandbox("--process-delay", "1")
    stack.install()
    customers = [c["customerId"] for c in stack.credentials()["customers"] if c["status"] == "Verified"]
    jobs = []
    for n, (count, customer) in enumerate([(BIG, customers[0]), (SMALL, customers[1])]):
        sheet = tmp_path / f"upload-{n}.csv"
        sheet.write_text("IMEI\n" + "\n".join(fresh_imeis(count, f"359600{n}0")) + "\n")
        queued = stack.manage("kdp_upload", str(sheet), "--account", "Sandbox", "--customer", customer, "--json")
        assert queued.returncode == 0, queued.stderr
        jobs.append(json.loads(queued.stdout)["job"])
    big, small = jobs
    a, b = stack.start_cluster(), stack.start_cluster()

    # Both clusters take work from the one Redis queue; wait until the big upload is well under way.
    wait_for(lambda: tx_states(stack, big).get("submitted", 0) + tx_states(stack, big).get("complete", 0) >= 8, 120,
             "the big upload to be sending")  # fmt: skip
    first_holder = holder_pid(stack, big)
    holder_cluster = os.getpgid(first_holder)
    assert holder_cluster in (a.pid, b.pid)
    survivor = b if holder_cluster == a.pid else a
    stack.kill(a if survivor is b else b)

    # The survivor resumes it once the lease expires (JOB_LEASE_SECONDS=10, the schedule every minute).
    wait_for(lambda: holder_pid(stack, big) not in (0, first_holder), 150, "the other cluster to take over")
    assert os.getpgid(holder_pid(stack, big)) == survivor.pid
    for job in jobs:
        wait_for(lambda job=job: job_row(stack, job)["status"] in FINISHED, 240, f"job {job} to finish", interval=0.5)

    for job, count in ((big, BIG), (small, SMALL)):
        done = job_row(stack, job)
        assert (done["status"], done["succeeded"], done["failed"]) == ("succeeded", count, 0), done
        assert tx_states(stack, job) == {"complete": count // CHUNK}
    knox = stack.knox()
    assert knox["counters"]["duplicate_device_submissions"] == 0
    assert knox["counters"]["rate_limited"] == 0  # never over 10 requests/s, though both clusters sent at once
    assert len(knox["kdp"]["transactions"]) == (BIG + SMALL) // CHUNK
    assert stack.sql("SELECT count(*) FROM kdp_device WHERE state = 'registered'") == [(BIG + SMALL,)]
    survivor.send_signal(signal.SIGTERM)
