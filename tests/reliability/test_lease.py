"""One worker per job, even when one Knox call outlives the job's lease (issue 13 §4).

Before: `JOB_LEASE_SECONDS` was not above `KNOX_READ_TIMEOUT` with its retries, so while a worker waited on a slow
Knox answer its lease expired, `resume_stale_jobs` queued the job again, a second worker claimed it and both sent
the same requests. Now a thread of the worker renews the lease while the job runs (portal.workers.LeaseRenewer).

Real processes: the sandbox answers every request after 2 x the lease, a qcluster with two workers runs the job,
and `resume_stale_jobs` (the every-minute schedule) is run by hand, over and over, the whole time.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.base import fresh_imeis
from tests.reliability.helpers import Stack, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.crash]

LEASE = 5
LATENCY = 2 * LEASE + 1
UPLOAD_PATH = "/kcs/v1/rp/devices/upload"


def test_a_knox_slower_than_the_lease_never_gets_a_job_run_twice(stack: Stack, migrated_sqlite, tmp_path):
    stack.env.update({"JOB_LEASE_SECONDS": str(LEASE)})
    stack.start_sandbox("--process-delay", "0")
    stack.install(migrated_sqlite)
    customer = next(c["customerId"] for c in stack.credentials()["customers"] if c["status"] == "Verified")
    sheet = tmp_path / "devices.csv"
    sheet.write_text("IMEI\n" + "\n".join(fresh_imeis(5, "35900070")) + "\n")
    queued = stack.manage("kdp_upload", str(sheet), "--account", "Sandbox", "--customer", customer, "--json")
    assert queued.returncode == 0, queued.stderr
    job = json.loads(queued.stdout)["job"]

    # From now on Knox takes 2 x the lease to answer anything (token, upload, status).
    requests.post(f"{stack.sandbox_url}/_sandbox/faults", json={"latency": LATENCY}, timeout=5).raise_for_status()
    stack.start_cluster()
    wait_for(lambda: stack.sql("SELECT status FROM portal_job WHERE id = ?", job)[0][0] == "running", 60, "a claim")

    requeued = 0
    rounds = 0
    started = time.monotonic()
    while stack.sql("SELECT status FROM portal_job WHERE id = ?", job)[0][0] in ("queued", "running"):
        assert time.monotonic() - started < 240, "the job did not finish"
        resumed = stack.manage("shell", "-c", "from portal.tasks import resume_stale_jobs; print(resume_stale_jobs())")
        assert resumed.returncode == 0, resumed.stderr
        requeued += int(resumed.stdout.strip().splitlines()[-1])
        rounds += 1

    status, succeeded, failed = stack.sql("SELECT status, succeeded, failed FROM portal_job WHERE id = ?", job)[0]
    by_path = stack.knox()["counters"]["by_path"]
    print(f"{rounds} resume rounds over {time.monotonic() - started:.0f} s; re-queued {requeued}; by path {by_path}")
    assert (status, succeeded, failed) == ("succeeded", 5, 0)
    assert requeued == 0, "the schedule took a live worker's job away"
    assert by_path[UPLOAD_PATH] == 1, "the chunk was sent by two workers"
    assert by_path["/kcs/v1/rp/devices/status"] == 1, "two workers polled the transaction"
    assert stack.log_text("qcluster").count("was taken over by another worker") == 0
    renewals = stack.sql("SELECT heartbeat_at, started_at FROM portal_job WHERE id = ?", job)[0]
    assert renewals[0] is not None
