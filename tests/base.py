"""Shared test base with named personas (healthchecks' alice/bob/charlie, our roles), and the builders and
sandbox helpers that the tests of more than one app use."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import TestCase
from django.utils import timezone

from portal.identifiers import luhn_check_digit
from portal.knox import errors
from portal.models import Job

ROOT = Path(__file__).resolve().parents[1]  # the project: where manage.py is
PASSWORD = "correct horse battery staple"


def make_user(username: str, role: str | None = None, **extra: object) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD, email=f"{username}@example.org", **extra)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


class BaseTestCase(TestCase):
    """admin (role admin, staff), operator, viewer (read-only) and outsider (no role)."""

    def setUp(self) -> None:
        super().setUp()
        self.admin = make_user("alice", "admin", is_staff=True)
        self.operator = make_user("olivia", "operator")
        self.viewer = make_user("victor", "viewer")
        self.outsider = make_user("charlie")


# --- builders more than one app's tests use -------------------------------------------------------------


def fresh_imeis(n: int, prefix: str = "35000000") -> list[str]:
    out = []
    for i in range(n):
        body = f"{prefix}{i:06d}"[:14]
        out.append(body + luhn_check_digit(body))
    return out


def sandbox_state(server) -> dict:
    return requests.get(f"{server.url}/_sandbox/state", timeout=10).json()


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def expire_lease(job: Job) -> None:
    """What a killed worker leaves behind: the job running, its lease run out."""
    Job.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))


def set_faults(server, **knobs: float) -> None:
    requests.post(f"{server.url}/_sandbox/faults", json=knobs, timeout=10).raise_for_status()


def knox_comes_back(monkeypatch, server) -> list[str]:
    """Knox is back by the time the job has recorded that it waits for it: the first wait switches the sandbox's
    faults off (no clock involved). Returns the reasons the job gave for waiting."""
    reasons: list[str] = []
    real = Job.wait_for_knox

    def wait_for_knox(job: Job, reason: str, **kwargs) -> None:
        real(job, reason, **kwargs)
        reasons.append(reason)
        set_faults(server)

    monkeypatch.setattr(Job, "wait_for_knox", wait_for_knox)
    monkeypatch.setattr("portal.engine.OUTAGE_FIRST_WAIT_SECONDS", 0.05)
    return reasons


def lose_first_answer(monkeypatch, cls: type, name: str) -> list:
    """The first call of `cls.name` reaches Knox, then its answer is lost. Returns what Knox answered to it."""
    real = getattr(cls, name)
    lost: list = []

    def answer_lost_once(self, *args, **kwargs):
        answer = real(self, *args, **kwargs)
        if not lost:
            lost.append(answer)
            raise errors.KnoxOutcomeUnknown("the connection was reset after sending", service=cls.service)
        return answer

    monkeypatch.setattr(cls, name, answer_lost_once)
    return lost


def refuse_first_connection(monkeypatch, cls: type, name: str) -> list[int]:
    """The first call of `cls.name` finds the connection refused (nothing left); the next ones go through.
    Returns one item per attempt."""
    real = getattr(cls, name)
    attempts: list[int] = []

    def refused_once(self, *args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            error = errors.KnoxUnavailable("connection refused", service=cls.service)
            error.never_sent = True  # as the HTTP layer marks it: Knox cannot have it
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, refused_once)
    return attempts


def migrated(app: str, before: str, after: str, rows) -> None:
    """Migrate `app` back to `before`, let `rows(apps)` create rows with the historical models, migrate forward to
    `after`, and leave the database at its latest migrations whatever happens."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    try:
        executor.migrate([(app, before)])
        executor = MigrationExecutor(connection)
        rows(executor.loader.project_state(list(executor.loader.applied_migrations)).apps)
        executor = MigrationExecutor(connection)
        executor.migrate([(app, after)])
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def child_env(tmp_path: Path, server, database: str = "cli.sqlite3") -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / database}",
        "KNOX_SANDBOX_URL": server.url,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "Q_SYNC": "False",
    }


def run_command(command: str, *args: str) -> tuple[int, str, str]:
    """call_command as the shell would see it: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(command, *args, stdout=out, stderr=err)
    except CommandError as e:
        err.write(f"CommandError: {e}\n")
        return e.returncode, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def run_json(command: str, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_command(command, *args, "--json")
    return code, json.loads(out)  # exactly one JSON object on stdout, whatever the outcome


def run_manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`manage.py` with its arguments in a child process with `env` (see child_env), as a shell runs it."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


_TEMPLATE: list[Path] = []


def migrated_database(target: Path) -> None:
    """Put a migrated SQLite database at `target`, for a child process to use. Migrating takes 3 s on an idle
    machine and over 10 s on a busy one, so it runs once per test session and later callers (every app's tests
    and the reliability stacks) get a copy."""
    if not _TEMPLATE:
        template = target.parent / "migrated-template.sqlite3"
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "DATABASE_URL": f"sqlite:///{template}", "REDIS_URL": ""},
        )
        assert done.returncode == 0, done.stderr
        _TEMPLATE.append(template)
    shutil.copyfile(_TEMPLATE[0], target)
