"""A slow spreadsheet must never lock everyone out (issue 13).

A real deployment in miniature on one SQLite file: the Knox sandbox, a `manage.py qcluster` worker and a
`manage.py runserver --noreload` web server, each its own process. Two spreadsheets are uploaded through the web
server and parsed by the worker: a 73 KB workbook of 200 sheets that each reach from A1 to XFD600 (the parse used
to hold SQLite's write lock for 100 s while calamine built 200 grids of 9.8 million cells), and a legitimate one of
100,000 devices (seconds of work). While the worker reads them, staff keep using the portal: they sign in, view a
page (which saves the session), export the device list as CSV and XLSX, and queue "refresh customers" jobs.

What must hold: every one of those requests answers 2xx or 3xx (before the fix: 500 "database is locked" after
SQLite's 30 s timeout, and a job whose claim failed stayed queued for good); both files end as they should; every
job queued meanwhile finishes. A probe on its own connection takes the write lock every 50 ms and reports the
longest wait, which is the longest time anyone held the lock (printed, not asserted: tests assert behaviour).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests

from portal.processes import free_port, wait_http
from tests.base import PASSWORD
from tests.data.hostile import make_corpus
from tests.data.hostile.make_corpus import imei
from tests.reliability.helpers import Stack, wait_for

pytestmark = [pytest.mark.slow]

LEGIT_ROWS = 100_000
FINISHED = ("succeeded", "partial", "failed", "cancelled")

CREATE_USER = """
from django.contrib.auth.models import Group, User
user = User.objects.create_user("olivia", password={password!r})
user.groups.add(Group.objects.get(name="operator"))
"""


def start_web_server(stack: Stack) -> str:
    """`manage.py runserver --noreload` (threaded, like a real server) on a free port, stopped with the clusters;
    returns its base URL once /healthz answers."""
    port = free_port()
    proc = stack._spawn("web", "runserver", f"127.0.0.1:{port}", "--noreload")
    stack.clusters.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", what="the portal", procs=[("web", proc)])
    return url


class LockProbe(threading.Thread):
    """Takes SQLite's write lock (BEGIN IMMEDIATE) on its own connection every 50 ms and records how long each
    attempt waited: the longest wait is the longest time another process held the lock."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.waits: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        db = sqlite3.connect(self.path, timeout=600, isolation_level=None)
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                db.execute("BEGIN IMMEDIATE")
                self.waits.append(time.perf_counter() - started)
                db.execute("COMMIT")
                self.stop.wait(0.05)
        finally:
            db.close()


class Staff:
    """A browser session against the real web server: signs in and remembers the CSRF token."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.answers: list[tuple[str, int]] = []

    def record(self, what: str, response: requests.Response) -> requests.Response:
        self.answers.append((what, response.status_code))
        return response

    def csrf(self) -> str:
        return self.http.cookies.get("csrftoken", "")

    def login(self) -> None:
        self.http.cookies.clear()
        self.record("login page", self.http.get(f"{self.base}/login/", timeout=120))
        answer = self.http.post(
            f"{self.base}/login/",
            data={"username": "olivia", "password": PASSWORD, "csrfmiddlewaretoken": self.csrf()},
            allow_redirects=False,
            timeout=120,
        )
        self.record("login", answer)
        assert answer.status_code == 302, "the operator could not sign in"

    def get(self, what: str, path: str) -> requests.Response:
        return self.record(what, self.http.get(f"{self.base}{path}", allow_redirects=False, timeout=120))

    def post(self, what: str, path: str, data: dict[str, str] | None = None, **kwargs: object) -> requests.Response:
        data = {**(data or {}), "csrfmiddlewaretoken": self.csrf()}
        answer = self.http.post(f"{self.base}{path}", data=data, allow_redirects=False, timeout=120, **kwargs)
        return self.record(what, answer)


def legit_workbook(path: Path) -> Path:
    rows = [["IMEI", "Order No", "Model"], *([imei(n), f"PO-{n // 1000}", "SM-G991B"] for n in range(LEGIT_ROWS))]
    path.write_bytes(make_corpus.xlsx([("Devices", make_corpus.sheet_xml(rows))]))
    return path


def upload(staff: Staff, account: int, path: Path) -> int:
    with path.open("rb") as f:
        answer = staff.post(
            f"upload {path.name}",
            "/kdp/uploads/",
            {"account": str(account), "operation": "upload"},
            files={"file": (path.name, f, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")},
        )
    assert answer.status_code == 302, answer.text[-2000:]
    return int(re.fullmatch(r"/kdp/uploads/(\d+)/", answer.headers["Location"])[1])


def test_a_slow_spreadsheet_never_locks_staff_out(stack: Stack, migrated_sqlite, tmp_path):
    stack.env.update({"Q_WORKERS": "2", "LOG_LEVEL": "WARNING"})
    stack.start_sandbox()
    stack.install(migrated_sqlite)
    done = stack.manage("shell", "-c", CREATE_USER.format(password=PASSWORD))
    assert done.returncode == 0, done.stdout + done.stderr
    account = stack.sql("SELECT id FROM portal_knoxaccount WHERE name = 'Sandbox'")[0][0]
    hostile = make_corpus.build("far-cells-on-every-sheet.xlsx", tmp_path)
    legit = legit_workbook(tmp_path / "devices-100k.xlsx")

    base = start_web_server(stack)
    staff = Staff(base)
    staff.login()
    # Queued before the worker starts, so that both parses run while the requests below are made.
    uploads = {upload(staff, account, hostile): "hostile", upload(staff, account, legit): "legit"}
    probe = LockProbe(stack.db_path)
    probe.start()
    stack.start_cluster()

    def parsing() -> int:
        marks = ",".join("?" * len(uploads))
        query = f"SELECT count(*) FROM portal_upload WHERE status = 'parsing' AND id IN ({marks})"  # noqa: S608
        return stack.sql(query, *uploads)[0][0]

    refreshes = 0
    started = time.monotonic()
    try:
        # Bounded: the parses end in seconds now; before the fix they took 100 s and this loop gave up at 150 s.
        while parsing() and time.monotonic() - started < 150:
            colleague = Staff(base)
            colleague.login()
            colleague.get("dashboard", "/")
            colleague.get("upload preview", f"/kdp/uploads/{next(iter(uploads))}/")
            colleague.get("export csv", "/kdp/devices/export.csv")
            colleague.get("export xlsx", "/kdp/devices/export.xlsx")
            colleague.post("refresh customers", f"/kdp/customers/{account}/refresh/")
            refreshes += 1
            staff.answers += colleague.answers
    finally:
        probe.stop.set()
        probe.join()
    parse_seconds = time.monotonic() - started

    failed = [(what, status) for what, status in staff.answers if not 200 <= status < 400]
    longest = max(probe.waits, default=0.0)
    print(
        f"\n{len(staff.answers)} requests while parsing ({refreshes} refresh jobs queued), {len(failed)} failed; "
        f"parses done after {parse_seconds:.1f} s; longest wait for the write lock {longest:.2f} s "
        f"({len(probe.waits)} probes)"
    )
    assert refreshes >= 1, "the parses ended before any request was made"
    assert not failed, failed

    statuses = dict(stack.sql("SELECT id, status FROM portal_upload"))
    hostile_pk, legit_pk = list(uploads)
    assert statuses[hostile_pk] == "refused"
    error = stack.sql("SELECT error FROM portal_upload WHERE id = ?", hostile_pk)[0][0]
    assert "the portal reads at most" in error, error
    assert statuses[legit_pk] == "ready"
    assert stack.sql("SELECT valid, rows_total FROM portal_upload WHERE id = ?", legit_pk) == [(LEGIT_ROWS,) * 2]
    assert stack.sql("SELECT count(*) FROM portal_uploadrow WHERE upload_id = ?", hostile_pk) == [(0,)]

    for pk, name in uploads.items():
        started, finished = stack.sql(
            "SELECT j.started_at, j.finished_at FROM portal_job j JOIN portal_upload u ON u.parse_job_id = j.id "
            "WHERE u.id = ?",
            pk,
        )[0]
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
        print(f"{name} parse job: {seconds:.1f} s in the worker")

    # Every job queued meanwhile was claimed and finished: none was left "queued" by a failed claim.
    wait_for(
        lambda: (
            not stack.sql("SELECT count(*) FROM portal_job WHERE status NOT IN ('succeeded', 'failed', 'refused')")[0][
                0
            ]
        ),
        120,
        "every job to finish",
        interval=0.5,
    )
    kinds = dict(stack.sql("SELECT kind, count(*) FROM portal_job WHERE status = 'succeeded' GROUP BY kind"))
    assert kinds.get("kdp.customers") == refreshes
