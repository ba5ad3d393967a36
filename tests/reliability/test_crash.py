"""Crash safety with real processes: the sandbox and django-q2 clusters run as `manage.py` subprocesses and are
killed with SIGKILL (the whole process group) in the middle of a job, then started again.

What must hold afterwards (issue 8): every device in its correct final state at Knox and in the portal, the
sandbox's `duplicate_device_submissions` counter at 0, the job's counters adding up, nothing left "running". The
restarted cluster's workers resume the dead worker's job as they start (portal.workers), without waiting for the
lease to expire.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.base import fresh_imeis
from tests.reliability.helpers import FINISHED, GUARD_DEVICES, Stack, job_row, tx_states, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.crash]

KDP_DEVICES = 20_000
KDP_CHUNK = 500  # 40 Knox transactions: long enough a sending phase to kill it in the middle


def latest_job(stack: Stack, kind: str) -> int:
    return stack.sql("SELECT max(id) FROM portal_job WHERE kind = ?", kind)[0][0]


def crash_and_restart(stack: Stack, cluster, job_pk: int, when, what: str):
    """Wait for `when`, kill -9 the cluster, check the job was left running mid-way, start a new cluster."""
    wait_for(lambda: when(), 180, what, interval=0.02)
    stack.kill(cluster)
    left = job_row(stack, job_pk)
    assert left["status"] == "running", left
    restarted_at = time.monotonic()
    new = stack.start_cluster()
    # Resumed by the new workers at start-up: the dead worker's lease is taken over long before it expires.
    try:
        wait_for(lambda: job_row(stack, job_pk)["lease_owner"] not in ("", left["lease_owner"]), 60, "the job's resume")
    except AssertionError:
        pid = left["lease_owner"].split("-")[1] if left["lease_owner"].count("-") >= 2 else "?"
        status = Path(f"/proc/{pid}/status")
        state = status.read_text().splitlines()[:3] if status.exists() else "gone"
        raise AssertionError(f"not resumed; the dead holder was {left['lease_owner']} (process: {state})") from None
    return new, time.monotonic() - restarted_at


@pytest.fixture
def kdp_stack(stack: Stack, migrated_sqlite) -> Stack:
    stack.env.update({"KDP_CHUNK_SIZE": str(KDP_CHUNK)})
    # Knox takes 3 s to process each transaction, so the status-polling phase is long enough to kill it too.
    stack.start_sandbox("--process-delay", "3")
    stack.install(migrated_sqlite)
    return stack


def test_kdp_upload_survives_kill_9_while_sending_and_while_polling(kdp_stack: Stack, tmp_path):
    stack = kdp_stack
    customer = next(c["customerId"] for c in stack.credentials()["customers"] if c["status"] == "Verified")
    devices = fresh_imeis(KDP_DEVICES, "35900010")
    sheet = tmp_path / "devices.csv"
    sheet.write_text("IMEI\n" + "\n".join(devices) + "\n")
    queued = stack.manage("kdp_upload", str(sheet), "--account", "Sandbox", "--customer", customer, "--json")
    assert queued.returncode == 0, queued.stderr
    job = json.loads(queued.stdout)["job"]
    assert job_row(stack, job)["status"] == "queued"

    cluster = stack.start_cluster()

    # 1. Mid-sending: some chunks sent, some still to send.
    def sending() -> bool:
        s = tx_states(stack, job)
        return s.get("submitted", 0) + s.get("complete", 0) >= 5 and s.get("prepared", 0) >= 5

    cluster, resumed_1 = crash_and_restart(stack, cluster, job, sending, "the cluster to be sending chunks")

    # 2. Mid-polling: every chunk sent, some still waiting for Knox's result.
    def polling() -> bool:
        s = tx_states(stack, job)
        return s.get("prepared", 0) == 0 and s.get("submitted", 0) >= 1

    cluster, resumed_2 = crash_and_restart(stack, cluster, job, polling, "the cluster to be polling Knox")

    wait_for(lambda: job_row(stack, job)["status"] in FINISHED, 300, "the job to finish", interval=0.5)
    done = job_row(stack, job)
    assert (done["status"], done["total"], done["succeeded"], done["failed"]) == ("succeeded", KDP_DEVICES, KDP_DEVICES, 0), done  # fmt: skip
    assert stack.sql("SELECT count(*) FROM portal_job WHERE status IN ('running', 'queued')") == [(0,)]

    # The portal's records: one outcome per device, all succeeded, every device registered to the customer.
    outcomes = dict(stack.sql("SELECT outcome, count(*) FROM kdp_transactiondevice WHERE job_id = ? GROUP BY outcome", job))  # fmt: skip
    assert outcomes == {"succeeded": KDP_DEVICES}
    assert stack.sql("SELECT count(DISTINCT identifier) FROM kdp_transactiondevice WHERE job_id = ?", job) == [(KDP_DEVICES,)]  # fmt: skip
    assert dict(stack.sql("SELECT state, count(*) FROM kdp_device GROUP BY state")) == {"registered": KDP_DEVICES}
    assert tx_states(stack, job) == {"complete": KDP_DEVICES // KDP_CHUNK}

    # Knox's side: each device registered once, each chunk one Knox transaction, nothing sent twice.
    knox = stack.knox()
    assert knox["counters"]["duplicate_device_submissions"] == 0
    ours = [t for t in knox["kdp"]["transactions"].values() if t.get("customerId") == customer]
    assert len(ours) == KDP_DEVICES // KDP_CHUNK
    registered = stack.knox("/_sandbox/state")["kdp"]["devices"]
    assert all(registered[d]["customerId"] == customer for d in devices)
    assert "resuming it now" in stack.log_text("qcluster")
    print(f"resumed after restart: {resumed_1:.1f} s (sending), {resumed_2:.1f} s (polling)")


def test_guard_bulk_lock_survives_kill_9_mid_job(guard_stack, tmp_path):
    stack, devices = guard_stack
    sheet = tmp_path / "lock.csv"
    sheet.write_text("IMEI\n" + "\n".join(devices) + "\n")
    queued = stack.manage(
        "guard_action", "lock", str(sheet), "--account", "Sandbox", "--message", "Payment overdue", "--tel", "+44 20 7946 0000", "--json"
    )  # fmt: skip
    assert queued.returncode == 0, queued.stdout + queued.stderr
    job = json.loads(queued.stdout)["job"]
    cluster = stack.start_cluster()

    def chunks() -> dict[str, int]:
        return dict(stack.sql("SELECT state, count(*) FROM guard_guardchunk WHERE job_id = ? GROUP BY state", job))

    # Killed once some of the job's asynchronous lock requests are at Knox and before the job ends.
    cluster, resumed = crash_and_restart(
        stack, cluster, job, lambda: chunks().get("submitted", 0) >= 1, "a lock request to be at Knox"
    )
    wait_for(lambda: job_row(stack, job)["status"] in FINISHED, 300, "the lock job to finish", interval=0.5)
    done = job_row(stack, job)
    assert (done["status"], done["total"], done["succeeded"], done["failed"]) == ("succeeded", GUARD_DEVICES, GUARD_DEVICES, 0), done  # fmt: skip
    assert chunks() == {"complete": GUARD_DEVICES // 1000}
    outcomes = dict(stack.sql("SELECT outcome, count(*) FROM guard_guardaction WHERE job_id = ? GROUP BY outcome", job))  # fmt: skip
    assert outcomes == {"succeeded": GUARD_DEVICES}
    assert stack.sql("SELECT count(*) FROM portal_job WHERE status IN ('running', 'queued')") == [(0,)]
    # At Knox every device was locked exactly once: a second lock of a Locking/Locked device would have failed
    # (state invalid) and shown up above as a failed device.
    knox_devices = stack.knox("/_sandbox/state")["guard"]["devices"]
    assert {knox_devices[d]["state"] for d in devices} <= {"Locking", "Locked"}
    print(f"resumed after restart: {resumed:.1f} s")
