"""No web request waits on Knox (issue 13): with a "Knox" that accepts connections and never answers, every page
that reads from Knox still answers at once, because the read is a job for the workers.

A real web server (`manage.py runserver --noreload`, a subprocess) on a private SQLite database, its accounts'
Knox base URLs pointing at a socket server that accepts and never says a word. No worker runs, so every lookup
must be left queued, and the silent Knox must never see a connection from the web process. Before the fix each
of these requests held until the HTTP client gave up (the reported figures were 309 s for a firmware lookup and
918 s for Test connection: KNOX_READ_TIMEOUT times the attempts, per service).

The last test is the other half, with real processes too: the sandbox, a `qcluster` and the web server; a lookup
queued by a page is answered by the worker, and the page's polling (the progress fragment, then the result
region on `jobFinished`) brings the answer.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from portal.processes import free_port, wait_http
from tests.keys import keys_json
from tests.reliability.helpers import Stack

pytestmark = [pytest.mark.slow]

# The HTTP client's patience: far above a normal page, far below any Knox timeout. A request that takes longer
# counts as hung.
CLIENT_TIMEOUT = 10.0
PASSWORD = "hang-test-Pa55word!"
CUSTOMER = "EEEE4444-FF55-AA66-BB77-CCCCCC888888"
LICENCE = "EFOTA1-fff555-ggg666-hh77"
SERIALS = ["R5CMXWARTYK", "R58N123ABCD"]

SETUP_SCRIPT = """
import json, os
from django.contrib.auth.models import Group, User
from efota.models import ForceUpdate, ForceUpdateDevice
from portal.knox.auth import parse_keys_json
from portal.models import Job, KnoxAccount

account = KnoxAccount(name="Silent", environment="sandbox", reseller_id="4612345678", efota_client_id="efota-hang",
                      efota_mdm_id="d1e2f3g4h5")
account.set_keys(parse_keys_json(os.environ["HANG_KEYS"].encode()))
account.set_secret("client_identifier", "not-a-real-identifier")
account.set_secret("efota_client_secret", "not-a-real-secret")
account.save()
# The licence a check on the Licences page would have taught the portal: the E-FOTA forms refuse unknown ones.
from django.utils import timezone
from efota.models import EfotaLicence
EfotaLicence.objects.create(account=account, customer_id=os.environ["HANG_CUSTOMER"], key=os.environ["HANG_LICENCE"],
                            checked_at=timezone.now())
for name, group in (("hang-admin", "admin"), ("hang-operator", "operator"), ("hang-viewer", "viewer")):
    User.objects.create_user(name, password=os.environ["HANG_PASSWORD"]).groups.add(Group.objects.get(name=group))
# A force update whose one part E-FOTA still counts as processing: its status page is polled.
serials = json.loads(os.environ["HANG_SERIALS"])
job = Job.objects.create(kind="efota.force_update", account=account, status="succeeded", total=len(serials),
                         succeeded=len(serials), title="Force update")
part = ForceUpdate.objects.create(account=account, job=job, customer_id=os.environ["HANG_CUSTOMER"],
                                  licence=os.environ["HANG_LICENCE"], model="SM-G991B", sales_code="BTU",
                                  serials=serials, force_update_id="FU-HANG", processing=len(serials))
ForceUpdateDevice.objects.bulk_create([ForceUpdateDevice(force_update=part, serial=s, status="PROCESSING")
                                       for s in serials])
print(json.dumps({"account": account.pk, "force_update_job": job.pk}))
"""


class SilentKnox:
    """A TCP server that accepts every connection, reads nothing and never answers: a Knox that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="silent-knox", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listening socket was closed: stop
            while True:
                conn, _ = self.sock.accept()
                self.connections.append(conn)  # held open, never read, never answered

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent_knox() -> Iterator[SilentKnox]:
    knox = SilentKnox()
    yield knox
    knox.close()


def start_web(stack: Stack) -> str:
    """The web server (`runserver --noreload`, threaded like a real one) on a free port, stopped with the stack's
    other processes; its base URL once it answers."""
    port = free_port()
    proc = stack._spawn("web", "runserver", "--noreload", f"127.0.0.1:{port}")
    stack.clusters.append(proc)  # stop_all kills it with the rest
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", what="the portal", procs=[("runserver", proc)])
    return url


@dataclass
class Site:
    """A running installation: its processes, the web server's base URL, and what the set-up created."""

    stack: Stack
    url: str
    ids: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def web(tmp_path: Path, migrated_sqlite: Path, silent_knox: SilentKnox) -> Iterator[Site]:
    stack = Stack(tmp_path, KNOX_SANDBOX_URL=silent_knox.url, DEBUG="True", ALLOWED_HOSTS="127.0.0.1")
    try:
        shutil.copyfile(migrated_sqlite, stack.db_path)  # migrated once per session
        done = stack.manage(
            "shell",
            "-c",
            SETUP_SCRIPT,
            HANG_KEYS=keys_json().decode(),
            HANG_PASSWORD=PASSWORD,
            HANG_SERIALS=json.dumps(SERIALS),
            HANG_CUSTOMER=CUSTOMER,
            HANG_LICENCE=LICENCE,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        ids = json.loads(done.stdout.strip().splitlines()[-1])
        yield Site(stack, start_web(stack), ids)
    finally:
        stack.stop_all()
        stack.print_logs()


def login(site: Site, username: str) -> requests.Session:
    s = requests.Session()
    s.get(f"{site.url}/login/", timeout=CLIENT_TIMEOUT)
    r = s.post(
        f"{site.url}/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": s.cookies["csrftoken"]},
        timeout=CLIENT_TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code == 302, r.text[:500]
    s.headers["X-CSRFToken"] = s.cookies["csrftoken"]
    return s


def timed(
    send: Callable[..., requests.Response], method: str, url: str, **kwargs: Any
) -> tuple[requests.Response | None, float]:
    """(response, seconds); the response is None when the request was still unanswered after CLIENT_TIMEOUT."""
    started = time.monotonic()
    try:
        r = send(method, url, timeout=CLIENT_TIMEOUT, allow_redirects=False, **kwargs)
    except requests.Timeout:
        r = None
    return r, time.monotonic() - started


def test_no_page_waits_on_a_knox_that_never_answers(web: Site, silent_knox: SilentKnox):
    site, stack, ids = web, web.stack, web.ids
    account = ids["account"]
    efota = {"account": account, "customer_id": CUSTOMER, "licence": LICENCE}
    firmware = {**efota, "model": "SM-G991B", "sales_code": "BTU"}
    htmx = {"HX-Request": "true"}
    viewer, operator, admin = login(site, "hang-viewer"), login(site, "hang-operator"), login(site, "hang-admin")
    fu_job = ids["force_update_job"]
    asks = [
        # (who, method, path, form, headers, the kind of job it must leave queued, or None)
        (viewer, "POST", "/efota/firmware/", firmware, htmx, "efota.firmware"),
        (viewer, "POST", "/efota/firmware/", firmware, {}, "efota.firmware"),
        (viewer, "POST", "/efota/licences/", efota, htmx, "efota.licence"),
        (viewer, "POST", "/efota/abnormal/", {**efota, "serials": ", ".join(SERIALS)}, htmx, "efota.abnormal"),
        (admin, "POST", f"/accounts/{account}/test/", {}, htmx, "portal.connection_test"),
        (admin, "POST", f"/accounts/{account}/test/", {}, {}, "portal.connection_test"),
        (operator, "POST", "/guard/uploads/knox/", {"account": account}, htmx, "guard.knox_uploads"),
        (viewer, "GET", f"/efota/jobs/{fu_job}/status/", None, htmx, None),
        (operator, "POST", f"/efota/jobs/{fu_job}/refresh/", {}, htmx, "efota.force_update_refresh"),
    ]
    figures, hung = [], []
    for session, method, path, form, headers, kind in asks:
        before = stack.sql("SELECT count(*) FROM portal_job WHERE kind = ?", kind)[0][0] if kind else 0
        r, seconds = timed(session.request, method, f"{site.url}{path}", data=form, headers=headers)
        how = "htmx" if headers else "plain"
        figures.append(f"{method} {path} ({how}): {r.status_code if r is not None else 'no answer'} in {seconds:.2f} s")
        if r is None:
            hung.append(f"{method} {path} ({how})")
            continue
        assert r.status_code in (200, 302), (path, r.status_code, r.text[:500])
        if kind:
            rows = stack.sql("SELECT status FROM portal_job WHERE kind = ? ORDER BY id", kind)
            assert len(rows) == before + 1, (path, rows)  # the lookup is a job ...
            assert rows[-1][0] == "queued", (path, rows)  # ... left for a worker (none runs here)
    print("\n".join(figures))
    assert hung == [], f"held for more than {CLIENT_TIMEOUT:.0f} s, waiting on Knox: {hung}"
    # The web process never opened a connection to Knox.
    assert silent_knox.connections == []
    assert not stack.sql("SELECT count(*) FROM efota_efotacall")[0][0]


def test_a_queued_lookup_page_shows_the_job_without_javascript(web: Site):
    """The plain POST redirects to the page with the job; that page only reads the database."""
    site, ids = web, web.ids
    viewer = login(site, "hang-viewer")
    form = {
        "account": ids["account"],
        "customer_id": CUSTOMER,
        "licence": LICENCE,
        "model": "SM-G991B",
        "sales_code": "BTU",
    }
    r, seconds = timed(viewer.request, "POST", f"{site.url}/efota/firmware/", data=form)
    assert r is not None, f"the firmware lookup held the request for more than {CLIENT_TIMEOUT:.0f} s"
    assert r.status_code == 302
    page, seconds = timed(viewer.request, "GET", f"{site.url}{r.headers['Location']}")
    assert page is not None and page.status_code == 200 and re.search(r'class="badge badge-queued">Queued<', page.text)
    print(f"GET {r.headers['Location']}: {seconds * 1000:.0f} ms")


USERS_SCRIPT = """
import os
from django.contrib.auth.models import Group, User
for name, group in (("hang-admin", "admin"), ("hang-viewer", "viewer")):
    User.objects.create_user(name, password=os.environ["HANG_PASSWORD"]).groups.add(Group.objects.get(name=group))
# The sandbox's E-FOTA licence, as a check on the Licences page leaves it: the E-FOTA forms refuse unknown ones.
from django.utils import timezone
from efota.models import EfotaLicence
from portal.models import KnoxAccount
EfotaLicence.objects.create(account=KnoxAccount.objects.get(name="Sandbox"), customer_id=os.environ["HANG_CUSTOMER"],
                            key=os.environ["HANG_LICENCE"], checked_at=timezone.now())
"""


@pytest.fixture
def live(tmp_path: Path, migrated_sqlite: Path) -> Iterator[Site]:
    """The sandbox, a django-q2 cluster and the web server, each a process, on a private SQLite database."""
    stack = Stack(tmp_path, DEBUG="True", ALLOWED_HOSTS="127.0.0.1", KNOX_EFOTA_RATE_LIMIT="0")
    try:
        stack.start_sandbox("--process-delay", "0.2")
        stack.install(migrated_sqlite)
        efota = stack.credentials()["efota"]
        done = stack.manage(
            "shell",
            "-c",
            USERS_SCRIPT,
            HANG_PASSWORD=PASSWORD,
            HANG_CUSTOMER=efota["customer_id"],
            HANG_LICENCE=efota["license"],
        )
        assert done.returncode == 0, done.stdout + done.stderr
        stack.start_cluster()
        yield Site(stack, start_web(stack))
    finally:
        stack.stop_all()
        stack.print_logs()


def follow(session: requests.Session, site: Site, job: int) -> tuple[int, str]:
    """Poll the job's progress as the page does (every poll answered at once) until it fires jobFinished; then
    fetch the answer as the page's result region does. (polls, the answer's HTML)."""
    version, polls = None, 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        polls += 1
        r = session.get(
            f"{site.url}/jobs/{job}/progress/",
            params={"v": version} if version is not None else {},
            headers={"HX-Request": "true"},
            timeout=CLIENT_TIMEOUT,
        )
        assert r.status_code in (200, 204), r.status_code
        if "jobFinished" in r.headers.get("HX-Trigger", ""):
            answer = session.get(
                f"{site.url}/jobs/{job}/result/", headers={"HX-Request": "true"}, timeout=CLIENT_TIMEOUT
            )
            assert answer.status_code == 200
            return polls, answer.text
        if r.status_code == 200:
            version = int(re.search(r"\?v=(\d+)", r.text).group(1))
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not finish within 60 s")


def test_a_real_worker_answers_the_lookups_the_pages_queue(live: Site):
    site, stack = live, live.stack
    efota = stack.credentials()["efota"]
    account = stack.sql("SELECT id FROM portal_knoxaccount WHERE name = 'Sandbox'")[0][0]
    viewer, admin = login(site, "hang-viewer"), login(site, "hang-admin")
    form = {
        "account": account,
        "customer_id": efota["customer_id"],
        "licence": efota["license"],
        "model": "SM-G991B",
        "sales_code": "BTU",
    }
    r = viewer.post(f"{site.url}/efota/firmware/", data=form, headers={"HX-Request": "true"}, timeout=CLIENT_TIMEOUT)
    job = int(re.search(r'id="job-(\d+)-progress"', r.text).group(1))
    polls, answer = follow(viewer, site, job)
    for version in efota["firmware"]["SM-G991B/BTU"]:
        assert f"<li><code>{version}</code></li>" in answer
    r = admin.post(f"{site.url}/accounts/{account}/test/", headers={"HX-Request": "true"}, timeout=CLIENT_TIMEOUT)
    test = int(re.search(r'id="job-(\d+)-progress"', r.text).group(1))
    _, answer = follow(admin, site, test)
    assert answer.count('class="badge badge-succeeded">OK<') == 3, answer
    assert stack.sql("SELECT status FROM portal_job WHERE id IN (?, ?) ORDER BY id", job, test) == [
        ("succeeded",),
        ("succeeded",),
    ]
    print(f"firmware lookup answered after {polls} progress polls")
