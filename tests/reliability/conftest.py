"""Fixtures of the crash, outage and scale-out tests: a migrated database, and a stack of real processes
(tests/reliability/helpers.py) around a copy of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.base import fresh_imeis, migrated_database
from tests.reliability.helpers import GUARD_DEVICES, Stack


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One freshly migrated SQLite database, copied by every test that needs an installation."""
    path = tmp_path_factory.mktemp("migrated") / "portal.sqlite3"
    migrated_database(path)
    return path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.stop_all()
        s.print_logs()


@pytest.fixture
def guard_stack(stack: Stack, migrated_sqlite, tmp_path) -> tuple[Stack, list[str]]:
    stack.start_sandbox("--process-delay", "2")
    stack.install(migrated_sqlite)
    devices = fresh_imeis(GUARD_DEVICES, "35910020")
    (tmp_path / "guard.json").write_text(json.dumps(devices))
    # Enrol the devices with Knox Guard (upload + auto-accept, then the sandbox enrols them) and sync the portal,
    # the way a reseller's devices arrive; done in a one-off process with the job run in-process.
    script = f"""
import json, time
from guard.client import GuardClient
from guard.tasks import sync_devices
from portal.models import Job, KnoxAccount
account = KnoxAccount.objects.get(name="Sandbox")
uids = json.load(open({str(tmp_path / "guard.json")!r}))
GuardClient(account).upload([(u, "") for u in uids], {{"autoAccept": True}}, transaction_id="crashtestupload")
time.sleep(2.5)
job = Job.objects.create(kind="guard.sync", account=account)
sync_devices(job.pk)
job.refresh_from_db()
assert job.status == "succeeded", job.error_summary
"""
    done = stack.manage("shell", "-c", script, Q_SYNC="True")
    assert done.returncode == 0, done.stdout + done.stderr
    enrolled = stack.sql("SELECT count(*) FROM guard_guarddevice WHERE state = 'Enrolled'")[0][0]
    assert enrolled >= GUARD_DEVICES
    return stack, devices
