"""The live stack and the browser for the end-to-end tests.

One stack per session, in a temporary folder: a SQLite database, the Knox sandbox, the portal account imported from
it, three staff users (admin, operator, viewer), a real django-q2 cluster and the web server, each in its own
process group. The browser is the system's Chromium driven by Playwright (never downloaded).

Run with `.venv/bin/pytest -c e2e/pytest.ini e2e` (see e2e/README.md). pytest-django is switched off there: these
tests talk to the live server over HTTP and never touch a database themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, expect, sync_playwright

from portal.processes import free_port, stop_processes, wait_http

ROOT = Path(__file__).resolve().parent.parent
# Debian's Chromium; never `playwright install` (.ci/run installs the package and may point CHROMIUM elsewhere).
CHROMIUM = os.environ.get("E2E_CHROMIUM") or os.environ.get("CHROMIUM") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "var" / "screenshots"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
# The README shows these; `E2E_DOCS_SCREENSHOTS=1` copies them to docs/screenshots/ at the end of a green run.
DOCS_SHOTS = ("dashboard", "upload-preview", "job-progress")
VIEWPORT = {"width": 1280, "height": 800}
LOG_TAIL_LINES = 60

USERS = {
    # username: (password, group, superuser)
    "e2e-admin": ("e2e-admin-Pa55word!", "admin", True),
    "e2e-operator": ("e2e-operator-Pa55word!", "operator", False),
    "e2e-viewer": ("e2e-viewer-Pa55word!", "viewer", False),
}

# Jobs take a few seconds on the sandbox; nothing a user waits for should take longer than this.
expect.set_options(timeout=20_000)
ACTION_TIMEOUT_MS = 15_000


# --- the stack ------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    base_url: str
    tmp: Path
    env: dict[str, str]
    credentials: dict[str, Any] = field(default_factory=dict)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def logs(self) -> list[Path]:
        return sorted(self.tmp.glob("*.log"))

    def password(self, username: str) -> str:
        return USERS[username][0]

    def log_tails(self) -> str:
        parts = []
        for path in self.logs:
            lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            parts.append(f"--- {path.name} (last {len(lines)} lines) ---\n" + "\n".join(lines))
        return "\n".join(parts)


_STACK: Stack | None = None


# One process for both (each manage.py start costs seconds): the sandbox account as `make run` imports it, then the
# three staff users in their role groups (created by migration portal 0002).
SETUP_SCRIPT = """
import json, os
from django.contrib.auth.models import Group, User
from django.core.management import call_command
call_command("import_sandbox_account", os.environ["E2E_SANDBOX_DIR"], name="Sandbox")
for name, (password, group, superuser) in json.loads(os.environ["E2E_USERS"]).items():
    user = User.objects.create_user(name, password=password, is_superuser=superuser, is_staff=superuser)
    user.groups.add(Group.objects.get(name=group))
"""


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    global _STACK
    tmp = Path(tempfile.mkdtemp(prefix="portal-e2e-"))
    sandbox_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(
        {
            # Set even when empty: a developer's .env only fills variables that are not set at all.
            "REDIS_URL": "",
            "Q_SYNC": "False",
            "DEBUG": "True",
            "DATABASE_URL": f"sqlite:///{tmp}/e2e.sqlite3",
            "MEDIA_ROOT": str(tmp / "media"),
            "KNOX_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
            "Q_POLL": "0.2",
            "Q_WORKERS": "2",
            # A job waits this long for an unreachable Knox before it ends (e2e/test_guard_retry.py takes Knox away).
            "KNOX_OUTAGE_PATIENCE": "4",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    manage = [sys.executable, str(ROOT / "manage.py")]
    stack = Stack(base_url=f"http://127.0.0.1:{web_port}", tmp=tmp, env=env)
    _STACK = stack

    def run(name: str, *args: str, extra_env: dict[str, str] | None = None) -> None:
        with (tmp / f"{name}.log").open("ab") as log:
            done = subprocess.run(  # noqa: S603
                [*manage, *args],
                cwd=ROOT,
                env={**env, **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=180,
            )
        if done.returncode:
            raise RuntimeError(f"manage.py {args[0]} failed ({done.returncode}):\n{stack.log_tails()}")

    def start(name: str, *args: str) -> None:
        log = (tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603
            [*manage, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()  # the child keeps its own descriptor
        stack.procs.append((name, proc))

    try:
        sandbox_dir = tmp / "sandbox"
        # A short processing delay keeps Knox's asynchronous states visible (the progress bar moves) but quick.
        start("sandbox", "knox_sandbox", "--port", str(sandbox_port), "--state-dir", str(sandbox_dir),
              "--process-delay", "1.5")  # fmt: skip
        run("setup", "migrate", "--noinput", "-v0")
        wait_http(f"http://127.0.0.1:{sandbox_port}/_sandbox/health", what="the Knox sandbox", procs=stack.procs)
        stack.credentials = json.loads((sandbox_dir / "credentials.json").read_text())
        run(
            "setup",
            "shell",
            "-c",
            SETUP_SCRIPT,
            extra_env={"E2E_SANDBOX_DIR": str(sandbox_dir), "E2E_USERS": json.dumps(USERS)},
        )
        start("qcluster", "qcluster")
        start("web", "runserver", f"127.0.0.1:{web_port}", "--noreload")
        wait_http(f"{stack.base_url}/healthz", what="the portal", procs=stack.procs)
        yield stack
    finally:
        # Web and worker first, the sandbox they talk to last.
        stop_processes(proc for _, proc in reversed(stack.procs))
        _STACK = None
        if os.environ.get("E2E_KEEP") or request.session.testsfailed:
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"e2e: the logs, database and sandbox state are kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test shows the end of every server log (web, qcluster, sandbox) under its traceback."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _STACK is not None:
        report.sections.append(("live stack logs", _STACK.log_tails()))
    if report.when == "call":
        item.stash[_PASSED] = report.passed


_PASSED = pytest.StashKey[bool]()


# --- the browser ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def screenshots() -> Iterator[dict[str, Path]]:
    """name -> path of every screenshot taken this session."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    taken: dict[str, Path] = {}
    yield taken
    if os.environ.get("E2E_DOCS_SCREENSHOTS") and all(name in taken for name in DOCS_SHOTS):
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in DOCS_SHOTS:
            shutil.copyfile(taken[name], DOCS_SCREENSHOTS / f"{name}.png")


class Problems:
    """JavaScript errors, failed requests and 5xx answers seen by the pages of one test."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        """Expect a problem matching `pattern` (e.g. the console line a deliberate 403 page logs)."""
        self.allowed.append(re.compile(pattern))

    def add(self, text: str) -> None:
        if not any(p.search(text) for p in self.allowed):
            self.items.append(text)

    def attach(self, page: Page) -> None:
        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                self.add(f"console error on {page.url}: {msg.text} ({msg.location.get('url', '')})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.add(f"uncaught exception on {page.url}: {exc}"))
        page.on(
            "response",
            lambda resp: (
                self.add(f"HTTP {resp.status} for {resp.request.method} {resp.url}") if resp.status >= 500 else None
            ),
        )

    def check(self) -> None:
        assert not self.items, "the browser saw problems:\n" + "\n".join(self.items)


# htmx binds the triggers of swapped-in content before it fires htmx:afterSettle; a test that acts on new content
# waits for that, as a person (who needs more than the 20 ms settle delay to react) always does.
COUNT_HTMX_SETTLES = """
window.__e2eSettles = 0;
document.addEventListener("htmx:afterSettle", () => { window.__e2eSettles += 1; });
"""


@dataclass
class Session:
    """One logged-in (or not yet) browser context for a test."""

    stack: Stack
    context: BrowserContext
    page: Page
    problems: Problems
    shots: dict[str, Path]

    def url(self, path: str) -> str:
        return self.stack.base_url + path

    def login(self, username: str) -> None:
        page = self.page
        page.goto(self.url("/login/"))
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(self.stack.password(username))
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(self.url("/"))
        expect(page.locator(".usermenu .who")).to_have_text(username)

    def screenshot(self, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots[name] = path
        return path

    @contextlib.contextmanager
    def htmx_swap(self) -> Iterator[None]:
        """Wait, after the block, until an HTMX swap it caused has settled."""
        before = self.page.evaluate("window.__e2eSettles")
        yield
        self.page.wait_for_function("n => window.__e2eSettles > n", arg=before)

    def csrf_token(self) -> str:
        for cookie in self.context.cookies(self.stack.base_url):
            if cookie["name"] == "csrftoken":
                return cookie["value"]
        raise AssertionError("no csrftoken cookie")


@pytest.fixture
def new_session(
    stack: Stack, browser: Browser, screenshots: dict[str, Path], request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A factory of fresh browser contexts (no shared cookies); each page's problems fail the test."""
    opened: list[Session] = []

    def make() -> Session:
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True, base_url=stack.base_url)
        context.add_init_script(COUNT_HTMX_SETTLES)
        page = context.new_page()
        page.set_default_timeout(ACTION_TIMEOUT_MS)
        problems = Problems()
        problems.attach(page)
        session = Session(stack, context, page, problems, screenshots)
        opened.append(session)
        return session

    yield make
    for session in opened:
        session.context.close()
    if request.node.stash.get(_PASSED, False):
        for session in opened:
            session.problems.check()


@pytest.fixture
def ui(new_session: Any) -> Session:
    """One fresh browser session for a test."""
    return new_session()


# --- state the scenarios need, reached through the UI -----------------------------------------------------------


def run_account_job(session: Session, path: str, button: str, account: str = "Sandbox") -> None:
    """Press an account's button on `path` (a form per account) and wait on the job page until it succeeded."""
    page = session.page
    page.goto(session.url(path))
    scope = page.locator("section.card", has=page.get_by_role("heading", name=account, exact=True))
    if not scope.count():
        scope = page.locator("li", has=page.get_by_role("link", name=account, exact=True))
    scope.get_by_role("button", name=button).click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+/$"))
    expect(page.locator(".job-progress .badge")).to_have_text("Succeeded")


@pytest.fixture(scope="session")
def kdp_customers(stack: Stack, browser: Browser, screenshots: dict[str, Path]) -> None:
    """The customers of the Sandbox account, refreshed from Knox by the operator on the Customers page."""
    session = _one_off_session(stack, browser, screenshots)
    try:
        session.login("e2e-operator")
        run_account_job(session, "/kdp/customers/", "Refresh from Knox")
        session.page.goto(session.url("/kdp/customers/"))
        verified = [c for c in stack.credentials["customers"] if c["status"] == "Verified"]
        for customer in verified:
            expect(session.page.get_by_text(customer["customerId"], exact=True)).to_be_visible()
        session.problems.check()
    finally:
        session.context.close()


@pytest.fixture(scope="session")
def guard_devices(stack: Stack, browser: Browser, screenshots: dict[str, Path]) -> None:
    """The Knox Guard devices of the Sandbox account, synced from Knox by the operator on the Knox Guard page."""
    session = _one_off_session(stack, browser, screenshots)
    try:
        session.login("e2e-operator")
        run_account_job(session, "/guard/", "Sync devices from Knox")
        session.page.goto(session.url("/guard/devices/"))
        for device in stack.credentials["guard"]["devices"]:
            expect(session.page.get_by_role("link", name=device["deviceUid"])).to_be_visible()
        session.problems.check()
    finally:
        session.context.close()


def _one_off_session(stack: Stack, browser: Browser, screenshots: dict[str, Path]) -> Session:
    context = browser.new_context(viewport=VIEWPORT, base_url=stack.base_url)
    context.add_init_script(COUNT_HTMX_SETTLES)
    page = context.new_page()
    page.set_default_timeout(ACTION_TIMEOUT_MS)
    problems = Problems()
    problems.attach(page)
    return Session(stack, context, page, problems, screenshots)
