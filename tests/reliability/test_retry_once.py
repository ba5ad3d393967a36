""" "Retry the failed devices" is idempotent (issue 13 §5), with real processes: a web server, a worker and Knox.

Before: six simultaneous clicks queued six jobs, and a later replay of the same POST re-sent the devices to Knox.
Now a job is retried once (Job.create_retry, a unique constraint on Job.retry_of): concurrent and replayed
retries find that retry and say so.
"""

from __future__ import annotations

import json
import threading

import pytest
import requests

from tests.base import fresh_imeis
from tests.reliability.helpers import Stack, wait_for

pytestmark = [pytest.mark.slow]

CLICKS = 6
UPLOAD_PATH = "/kcs/v1/rp/devices/upload"


def job_status(stack: Stack, pk: int) -> str:
    return stack.sql("SELECT status FROM portal_job WHERE id = ?", pk)[0][0]


def test_six_simultaneous_retries_and_a_replay_queue_one_job(stack: Stack, migrated_sqlite, tmp_path):
    stack.env.update({"KNOX_MAX_RETRIES": "0"})
    stack.start_sandbox("--process-delay", "0")
    stack.install(migrated_sqlite)
    stack.add_user("olivia", "olivia-Pa55word!", "operator")
    customer = next(c["customerId"] for c in stack.credentials()["customers"] if c["status"] == "Verified")
    sheet = tmp_path / "devices.csv"
    sheet.write_text("IMEI\n" + "\n".join(fresh_imeis(4, "35900080")) + "\n")

    queued = stack.manage("kdp_upload", str(sheet), "--account", "Sandbox", "--customer", customer, "--json")
    assert queued.returncode == 0, queued.stdout + queued.stderr
    job = json.loads(queued.stdout)["job"]
    # Knox answers 500 to everything: the upload fails with every device "not sent".
    requests.post(f"{stack.sandbox_url}/_sandbox/faults", json={"error": 1}, timeout=5).raise_for_status()
    stack.start_cluster()
    wait_for(lambda: job_status(stack, job) == "failed", 120, "the upload to fail")
    requests.post(f"{stack.sandbox_url}/_sandbox/faults", json={}, timeout=5).raise_for_status()

    web = stack.start_web()
    sessions = [stack.login(web, "olivia", "olivia-Pa55word!") for _ in range(CLICKS)]
    start = threading.Barrier(CLICKS)
    answers: list[requests.Response] = []

    def click(session: requests.Session) -> None:
        start.wait()
        answers.append(session.post(f"{web}/kdp/jobs/{job}/retry/", allow_redirects=False, timeout=60))

    threads = [threading.Thread(target=click, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    retries = stack.sql("SELECT id FROM portal_job WHERE kind = ? AND id != ?", "kdp.upload", job)
    print(f"{CLICKS} simultaneous clicks: statuses {sorted(r.status_code for r in answers)}; retry jobs {retries}")
    assert sorted(r.status_code for r in answers) == [302] * CLICKS
    assert len(retries) == 1
    retry = retries[0][0]
    assert {r.headers["Location"] for r in answers} == {f"/kdp/jobs/{retry}/"}
    wait_for(lambda: job_status(stack, retry) == "succeeded", 120, "the retry to succeed")
    uploads = stack.knox()["counters"]["by_path"][UPLOAD_PATH]

    # A replay of the same POST, after the retry has finished, sends nothing to Knox and queues nothing.
    replay = sessions[0].post(f"{web}/kdp/jobs/{job}/retry/", timeout=60)
    assert replay.status_code == 200 and f"was already retried as job #{retry}" in replay.text
    assert stack.sql("SELECT count(*) FROM portal_job WHERE kind = 'kdp.upload'") == [(2,)]
    assert stack.knox()["counters"]["by_path"][UPLOAD_PATH] == uploads
    assert stack.knox()["counters"]["duplicate_device_submissions"] == 0
    assert stack.sql("SELECT count(*) FROM portal_auditevent WHERE action = 'kdp.retry'") == [(1,)]
