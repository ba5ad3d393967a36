"""A real deployment in miniature for the crash and scale-out tests: its own database, the Knox sandbox and
django-q2 clusters, each a separate process started with `manage.py`, the way production runs them.

The tests talk to it only from outside: management commands, SQL on its database and the sandbox's
`/_sandbox/` endpoints. Nothing here shares memory with the processes under test, so `kill -9` is a real crash.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from portal.processes import free_port, signal_group
from tests.base import ROOT


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Stack:
    """One portal installation: a database, a sandbox process, and any number of qcluster processes."""

    def __init__(self, tmp: Path, *, database_url: str = "", redis_url: str = "", **env: str) -> None:
        self.tmp = tmp
        self.sandbox_port = free_port()
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.db_path = tmp / "portal.sqlite3"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url or f"sqlite:///{self.db_path}",
            "REDIS_URL": redis_url,
            "KNOX_SANDBOX_URL": self.sandbox_url,
            "MEDIA_ROOT": str(tmp / "media"),
            "Q_SYNC": "False",
            "Q_POLL": "0.1",
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.env.pop("PYTEST_CURRENT_TEST", None)
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.clusters: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    # --- processes ---------------------------------------------------------------------------------------------

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def manage(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_sandbox(self, *args: str) -> None:
        self.sandbox = self._spawn(
            "sandbox", "knox_sandbox", "--port", str(self.sandbox_port), "--state-dir", str(self.tmp / "sandbox"), *args
        )
        wait_for(self._sandbox_up, 60, "the Knox sandbox to answer")

    def _sandbox_up(self) -> bool:
        try:
            return requests.get(f"{self.sandbox_url}/_sandbox/health", timeout=1).ok
        except requests.RequestException:
            return False

    def install(self, migrated: Path | None = None) -> None:
        """Migrate and import the sandbox's accounts, as an operator would with a fresh installation. `migrated`,
        a database file `manage.py migrate` already built, saves running the migrations again for each test."""
        if migrated is not None and self.env["DATABASE_URL"].startswith("sqlite"):
            shutil.copyfile(migrated, self.db_path)
        else:
            done = self.manage("migrate", "-v0")
            assert done.returncode == 0, done.stdout + done.stderr
        done = self.manage("import_sandbox_account", str(self.tmp / "sandbox"))
        assert done.returncode == 0, done.stdout + done.stderr

    def start_cluster(self, **env: str) -> subprocess.Popen[bytes]:
        saved = self.env
        self.env = {**self.env, **env}
        try:
            proc = self._spawn("qcluster", "qcluster")
        finally:
            self.env = saved
        self.clusters.append(proc)
        return proc

    def start_web(self) -> str:
        """The portal's web server (runserver, threaded like a real one) on a free port; returns its base URL."""
        port = free_port()
        self.web = self._spawn("web", "runserver", "--noreload", f"127.0.0.1:{port}")
        self.clusters.append(self.web)  # stopped with the rest
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: self._answers(f"{url}/healthz"), 60, "the web server to answer")
        return url

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            return requests.get(url, timeout=2).status_code < 500
        except requests.RequestException:
            return False

    def add_user(self, username: str, password: str, group: str) -> None:
        script = (
            "from django.contrib.auth.models import Group, User\n"
            f"u = User.objects.create_user({username!r}, password={password!r})\n"
            f"u.groups.add(Group.objects.get(name={group!r}))\n"
        )
        done = self.manage("shell", "-c", script)
        assert done.returncode == 0, done.stdout + done.stderr

    @staticmethod
    def login(base_url: str, username: str, password: str) -> requests.Session:
        """A browser-like session signed in to the portal; POSTs carry the CSRF token the way htmx sends it."""
        session = requests.Session()
        session.get(f"{base_url}/login/", timeout=30)
        token = session.cookies["csrftoken"]
        r = session.post(
            f"{base_url}/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token},
            timeout=30,
            allow_redirects=False,
        )
        assert r.status_code == 302, r.text[:500]
        session.headers["X-CSRFToken"] = session.cookies["csrftoken"]
        return session

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """kill -9 the whole process group: the sentinel, its workers, the pusher and the monitor at once."""
        signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        # The test is over and its database and sandbox state are thrown away: no need for a graceful stop.
        for proc in [*self.clusters, *([self.sandbox] if self.sandbox else [])]:
            self.kill(proc)

    def print_logs(self, tail: int = 4000) -> None:
        """What the processes said, for the failure report (pytest shows captured output of failing tests only)."""
        for log in self.logs:
            if log.exists():
                print(f"--- {log.name} (last {tail} characters) ---\n{log.read_text(errors='replace')[-tail:]}")

    def log_text(self, name: str = "") -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists() and name in p.name)

    # --- looking inside ------------------------------------------------------------------------------------------

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the portal's database directly (never through the processes under test); `?` placeholders."""
        url = self.env["DATABASE_URL"]
        if url.startswith("postgres"):
            import psycopg

            with psycopg.connect(url, autocommit=True) as con:
                return con.execute(query.replace("?", "%s"), params).fetchall()
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(query, params).fetchall()
        finally:
            con.close()

    def knox(self, path: str = "/_sandbox/state?devices=0") -> dict[str, Any]:
        return requests.get(f"{self.sandbox_url}{path}", timeout=30).json()

    def credentials(self) -> dict[str, Any]:
        return json.loads((self.tmp / "sandbox" / "credentials.json").read_text())


FINISHED = ("succeeded", "partial", "failed", "cancelled")


def job_row(stack: Stack, job_pk: int) -> dict:
    cols = ("status", "total", "succeeded", "failed", "error_summary", "lease_owner")
    row = stack.sql(f"SELECT {', '.join(cols)} FROM portal_job WHERE id = ?", job_pk)[0]  # noqa: S608
    return dict(zip(cols, row, strict=True))


def tx_states(stack: Stack, job_pk: int) -> dict[str, int]:
    return dict(stack.sql("SELECT state, count(*) FROM kdp_transaction WHERE job_id = ? GROUP BY state", job_pk))


GUARD_DEVICES = 3_000  # 3 asynchronous lock requests of 1,000
