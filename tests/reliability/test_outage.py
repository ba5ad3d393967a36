"""Knox outages with real processes: the sandbox (our Knox) is stopped in the middle of a job and started again
later, or never; the portal's workers must wait for it (portal.engine.Outage), not fail the job.

How Knox is stopped: SIGTERM, not SIGKILL. The sandbox keeps its state in memory and writes state.json at most
once a second (sandbox/store.py, MIN_SAVE_INTERVAL_SECONDS) and once more on the way out; a SIGKILL loses up to
the last second of requests it had already accepted and answered, which a real Knox never does (it would be an
outage *and* a loss of data at Knox, a different test). SIGTERM closes the listening socket and every open
connection at once (the portal sees its calls refused or reset, as in a real outage) and saves the state.

What must hold, for a KDP upload and for a Knox Guard bulk lock:
- while Knox is away the job stays RUNNING and says so: Job.waiting_since / waiting_reason / next_try_at in the
  database, "Knox unreachable since HH:MM" on the job's polled progress fragment;
- once Knox is back the job resumes by itself, ends SUCCEEDED with every device succeeded and nothing sent twice
  (the sandbox's duplicate_device_submissions counter at 0), and the waiting fields are cleared;
- when Knox stays away past KNOX_OUTAGE_PATIENCE the job ends (FAILED or PARTIAL) with the reason; requests never
  sent end NOT_SENT and requests Knox may have end UNKNOWN, and nothing stays running.

The time from Knox's restart to the job's resumption is printed (run with -s to see it); it is not asserted.
"""

from __future__ import annotations

import html
import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from portal.processes import signal_group
from tests.base import fresh_imeis
from tests.reliability.helpers import FINISHED, GUARD_DEVICES, Stack, job_row, wait_for

pytestmark = [pytest.mark.slow]

# Patience the workers get: far longer than these tests keep Knox away, so a job that fails meanwhile is a bug.
PATIENCE = "120"
KDP_DEVICES = 5_000
KDP_CHUNK = 250  # 20 Knox transactions at 10 requests a second: a sending phase of about two seconds
KDP_DELAY = "3"  # seconds Knox takes over each transaction: a polling phase after the last send
GUARD_DELAY = "2"  # the process delay guard_stack (conftest.py: 3,000 devices enrolled and synced) starts with
LOCK_MESSAGE = ("--message", "Payment overdue", "--tel", "+44 20 7946 0000")
RUNNING = ("queued", "running")
# A finished job's waiting fields: cleared.
DONE_WAITING = {"status": "succeeded", "waiting_since": None, "waiting_reason": "", "next_try_at": None}


# --- helpers ----------------------------------------------------------------------------------------------------


def stop_knox(stack: Stack) -> None:
    """Stop the sandbox the way that keeps Knox's state (see the module docstring), and wait until it is gone."""
    assert stack.sandbox is not None
    signal_group(stack.sandbox, signal.SIGTERM)
    stack.sandbox.wait(timeout=30)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.sandbox_url}/_sandbox/health", timeout=2)


def counts(row: dict) -> tuple:
    return row["status"], row["total"], row["succeeded"], row["failed"]


def waiting(stack: Stack, job: int) -> dict:
    cols = ("status", "waiting_since", "waiting_reason", "next_try_at")
    row = stack.sql(f"SELECT {', '.join(cols)} FROM portal_job WHERE id = ?", job)[0]  # noqa: S608
    return dict(zip(cols, row, strict=True))


def utc_hhmm(value: str | datetime) -> str:
    """HH:MM of a UTC time as the database driver returns it (SQLite: text; PostgreSQL: an aware datetime)."""
    return value.astimezone(UTC).strftime("%H:%M") if isinstance(value, datetime) else value[11:16]


def wait_until_waiting(stack: Stack, job: int) -> dict:
    """The job records it is waiting for Knox (after the HTTP layer's own retries, up to about 15 s) and is still
    running."""

    def recorded_or_over() -> dict | None:
        w = waiting(stack, job)
        return w if w["waiting_since"] or w["status"] not in RUNNING else None

    seen = wait_for(recorded_or_over, 60, "the job to record that Knox is unreachable")
    assert seen["status"] == "running", f"the job ended instead of waiting for Knox: {job_row(stack, job)}"
    assert seen["waiting_reason"] and seen["next_try_at"], seen
    return seen


def restart_knox_and_time_resumption(stack: Stack, job: int, *args: str) -> float:
    """Start the sandbox again (same port, same state directory); seconds from Knox answering to the job's
    waiting fields being cleared (its first successful call)."""
    stack.start_sandbox(*args)
    back = time.monotonic()
    wait_for(lambda: waiting(stack, job)["waiting_since"] is None, 150, "the job to resume once Knox is back")
    return time.monotonic() - back


def chunk_states(stack: Stack, table: str, job: int) -> dict[str, int]:
    return dict(stack.sql(f"SELECT state, count(*) FROM {table} WHERE job_id = ? GROUP BY state", job))  # noqa: S608


def sending_mid_way(stack: Stack, table: str, job: int) -> bool:
    """Some requests at Knox and some still to send: the outage hits both the sending and the polling."""
    s = chunk_states(stack, table, job)
    return s.get("submitted", 0) + s.get("complete", 0) >= 3 and s.get("prepared", 0) >= 3


def queue_kdp_upload(stack: Stack, tmp_path: Path, prefix: str) -> tuple[int, str, list[str]]:
    customer = next(c["customerId"] for c in stack.credentials()["customers"] if c["status"] == "Verified")
    devices = fresh_imeis(KDP_DEVICES, prefix)
    sheet = tmp_path / "devices.csv"
    sheet.write_text("IMEI\n" + "\n".join(devices) + "\n")
    queued = stack.manage("kdp_upload", str(sheet), "--account", "Sandbox", "--customer", customer, "--json")
    assert queued.returncode == 0, queued.stdout + queued.stderr
    return json.loads(queued.stdout)["job"], customer, devices


@pytest.fixture
def kdp_stack(stack: Stack, migrated_sqlite: Path) -> Stack:
    stack.env["KDP_CHUNK_SIZE"] = str(KDP_CHUNK)
    stack.start_sandbox("--process-delay", KDP_DELAY)
    stack.install(migrated_sqlite)
    return stack


# --- (a) KDP: Knox away mid-upload, then back --------------------------------------------------------------------


def test_kdp_upload_waits_while_knox_is_down_and_resumes_when_it_is_back(kdp_stack: Stack, tmp_path: Path):
    stack = kdp_stack
    stack.env["TIME_ZONE"] = "UTC"
    web = stack.start_web()
    stack.add_user("victor", "correct horse battery staple", "viewer")
    browser = stack.login(web, "victor", "correct horse battery staple")
    job, customer, devices = queue_kdp_upload(stack, tmp_path, "35920030")
    stack.start_cluster(KNOX_OUTAGE_PATIENCE=PATIENCE)

    wait_for(lambda: sending_mid_way(stack, "kdp_transaction", job), 120, "the upload to be sending", interval=0.02)
    stop_knox(stack)
    stopped = time.monotonic()
    stopped_at = chunk_states(stack, "kdp_transaction", job)

    seen = wait_until_waiting(stack, job)
    noticed = time.monotonic() - stopped
    # What the job page's poll shows (the stack runs in UTC, so the database's time is the local one).
    fragment = browser.get(f"{web}/jobs/{job}/progress/", timeout=30)
    assert fragment.status_code == 200, fragment.text[:500]
    assert f"Knox unreachable since {utc_hhmm(seen['waiting_since'])}, next try" in fragment.text, fragment.text
    assert html.escape(seen["waiting_reason"]) in fragment.text, fragment.text

    down = time.monotonic() - stopped
    resumed = restart_knox_and_time_resumption(stack, job, "--process-delay", KDP_DELAY)
    wait_for(lambda: job_row(stack, job)["status"] in FINISHED, 120, "the upload to finish", interval=0.2)

    done = job_row(stack, job)
    assert counts(done) == ("succeeded", KDP_DEVICES, KDP_DEVICES, 0), done
    assert waiting(stack, job) == DONE_WAITING
    assert stack.sql("SELECT count(*) FROM portal_job WHERE status IN ('running', 'queued')") == [(0,)]
    assert chunk_states(stack, "kdp_transaction", job) == {"complete": KDP_DEVICES // KDP_CHUNK}
    outcomes = dict(
        stack.sql("SELECT outcome, count(*) FROM kdp_transactiondevice WHERE job_id = ? GROUP BY outcome", job)
    )
    assert outcomes == {"succeeded": KDP_DEVICES}
    assert dict(stack.sql("SELECT state, count(*) FROM kdp_device GROUP BY state")) == {"registered": KDP_DEVICES}

    knox = stack.knox("/_sandbox/state")
    assert knox["counters"]["duplicate_device_submissions"] == 0
    assert all(knox["kdp"]["devices"][d]["customerId"] == customer for d in devices)
    ours = [t for t in knox["kdp"]["transactions"].values() if t.get("customerId") == customer]
    assert len(ours) == KDP_DEVICES // KDP_CHUNK  # each chunk one Knox transaction, none sent twice
    print(
        f"KDP: Knox stopped with transactions {stopped_at}; outage recorded after {noticed:.1f} s; "
        f"Knox down {down:.1f} s; the job resumed {resumed:.1f} s after Knox was back"
    )


# --- (b) Knox Guard: Knox away mid-lock, then back ---------------------------------------------------------------


def test_guard_bulk_lock_waits_while_knox_is_down_and_resumes_when_it_is_back(guard_stack, tmp_path: Path):
    stack, devices = guard_stack
    sheet = tmp_path / "lock.csv"
    sheet.write_text("IMEI\n" + "\n".join(devices) + "\n")
    queued = stack.manage("guard_action", "lock", str(sheet), "--account", "Sandbox", *LOCK_MESSAGE, "--json")
    assert queued.returncode == 0, queued.stdout + queued.stderr
    job = json.loads(queued.stdout)["job"]
    stack.start_cluster(KNOX_OUTAGE_PATIENCE=PATIENCE)

    def lock_request_at_knox() -> bool:
        return chunk_states(stack, "guard_guardchunk", job).get("submitted", 0) >= 1

    wait_for(lock_request_at_knox, 120, "a lock request at Knox", interval=0.02)
    stop_knox(stack)
    stopped = time.monotonic()
    stopped_at = chunk_states(stack, "guard_guardchunk", job)
    wait_until_waiting(stack, job)
    noticed = time.monotonic() - stopped  # Knox is started again at once
    resumed = restart_knox_and_time_resumption(stack, job, "--process-delay", GUARD_DELAY)
    wait_for(lambda: job_row(stack, job)["status"] in FINISHED, 120, "the lock job to finish", interval=0.2)

    done = job_row(stack, job)
    assert counts(done) == ("succeeded", GUARD_DEVICES, GUARD_DEVICES, 0), done
    assert waiting(stack, job) == DONE_WAITING
    assert chunk_states(stack, "guard_guardchunk", job) == {"complete": GUARD_DEVICES // 1000}
    outcomes = dict(stack.sql("SELECT outcome, count(*) FROM guard_guardaction WHERE job_id = ? GROUP BY outcome", job))
    assert outcomes == {"succeeded": GUARD_DEVICES}
    assert stack.sql("SELECT count(*) FROM portal_job WHERE status IN ('running', 'queued')") == [(0,)]
    # A second lock of a Locking/Locked device fails at Knox (state invalid): it would show above as a failure.
    knox = stack.knox("/_sandbox/state")
    assert knox["counters"]["duplicate_device_submissions"] == 0
    assert {knox["guard"]["devices"][d]["state"] for d in devices} <= {"Locking", "Locked"}
    print(
        f"Guard: Knox stopped with requests {stopped_at}; outage recorded after {noticed:.1f} s; "
        f"the job resumed {resumed:.1f} s after Knox was back"
    )


# --- (c) KDP: Knox away for longer than the patience -------------------------------------------------------------


def test_kdp_upload_ends_with_the_reason_when_knox_stays_away_past_the_patience(kdp_stack: Stack, tmp_path: Path):
    stack = kdp_stack
    job, _, devices = queue_kdp_upload(stack, tmp_path, "35920040")
    stack.start_cluster(KNOX_OUTAGE_PATIENCE="3")

    wait_for(lambda: sending_mid_way(stack, "kdp_transaction", job), 120, "the upload to be sending", interval=0.02)
    stop_knox(stack)
    stopped = time.monotonic()
    at_knox_when_stopped = chunk_states(stack, "kdp_transaction", job).get("submitted", 0)
    reason = wait_until_waiting(stack, job)["waiting_reason"]
    # Bounded: the HTTP layer's retries (about 15 s at most) on each side of the 3 s of patience.
    wait_for(lambda: job_row(stack, job)["status"] in FINISHED, 90, "the job to give up on Knox", interval=0.2)
    gave_up = time.monotonic() - stopped

    done = job_row(stack, job)
    assert done["status"] in ("failed", "partial"), done
    assert reason in done["error_summary"], done
    assert waiting(stack, job)["waiting_since"] is None
    assert stack.sql("SELECT count(*) FROM portal_job WHERE status IN ('running', 'queued')") == [(0,)]
    left = chunk_states(stack, "kdp_transaction", job)
    assert set(left) <= {"complete", "failed"}, left  # nothing prepared, being sent or waiting for a result

    by_code = dict(
        stack.sql(
            "SELECT CASE WHEN outcome = 'failed' THEN code ELSE outcome END, count(*) FROM kdp_transactiondevice "
            "WHERE job_id = ? GROUP BY 1",
            job,
        )
    )
    assert set(by_code) <= {"succeeded", "NOT_SENT", "UNKNOWN"}, by_code
    assert by_code.get("NOT_SENT", 0) >= 3 * KDP_CHUNK, by_code  # the requests still to send when Knox went away
    # Requests Knox had accepted, whose result could not be read: Knox may have applied them.
    assert by_code.get("UNKNOWN", 0) >= at_knox_when_stopped * KDP_CHUNK, by_code
    assert sum(by_code.values()) == KDP_DEVICES
    ok = by_code.get("succeeded", 0)
    assert (done["succeeded"], done["failed"]) == (ok, KDP_DEVICES - ok), done
    assert stack.sql("SELECT count(*) FROM kdp_device WHERE pending_job_id IS NOT NULL") == [(0,)]  # released

    # Knox back only to read what it has (the job is over and must send nothing more): every device Knox
    # received is one the portal reports succeeded or UNKNOWN; a device reported NOT_SENT never reached Knox.
    stack.start_sandbox("--process-delay", KDP_DELAY)
    time.sleep(1)  # a worker that wrongly kept going would send something now
    knox = stack.knox("/_sandbox/state")
    at_knox = {d for d in devices if d in knox["kdp"]["devices"]}
    unsent = {
        r[0]
        for r in stack.sql("SELECT identifier FROM kdp_transactiondevice WHERE job_id = ? AND code = 'NOT_SENT'", job)
    }
    assert not at_knox & unsent, f"{len(at_knox & unsent)} devices reported NOT_SENT are at Knox"
    assert len(at_knox) >= at_knox_when_stopped * KDP_CHUNK  # Knox kept what it had accepted (SIGTERM saved it)
    assert knox["counters"]["duplicate_device_submissions"] == 0
    print(f"patience 3 s: the job ended {done['status']} {gave_up:.1f} s after Knox stopped; devices {by_code}")
