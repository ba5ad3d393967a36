"""Lease owners name their worker process; a starting worker resumes jobs whose holder on this host is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portal.models import Job
from portal.tasks import resume_stale_jobs
from portal.workers import new_owner, owner_pid_on_this_host, resume_orphaned_jobs

DELIVERED: list[int] = []


def record_delivery(job_pk: int) -> None:
    """A job task for these tests: django-q2 runs it in-process (sync) when the job is sent."""
    DELIVERED.append(job_pk)


@pytest.fixture(autouse=True)
def _clear():
    DELIVERED.clear()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def running_job(owner: str) -> Job:
    job = Job.objects.create(kind="kdp.upload", func="tests.portal.test_workers.record_delivery")
    assert job.claim(owner)
    return job


def test_an_owner_names_this_host_and_process():
    owner = new_owner()
    assert len(owner) <= Job._meta.get_field("lease_owner").max_length
    assert owner_pid_on_this_host(owner) == os.getpid()
    assert owner_pid_on_this_host("0badc0de-123-abcdef") is None  # another host
    assert owner_pid_on_this_host("w1") is None  # not a worker's owner (tests, old rows)


@pytest.mark.django_db
def test_a_job_held_by_a_dead_process_is_resumed_once_even_when_two_workers_start_together():
    host = new_owner().split("-")[0]
    job = running_job(f"{host}-{dead_pid()}-deadbeef0000")
    assert resume_orphaned_jobs() == 1
    assert resume_orphaned_jobs() == 0  # the second worker starting finds nothing left to release
    assert [job.pk] == DELIVERED
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.lease_owner == ""


@pytest.mark.django_db
def test_live_holders_and_other_hosts_are_left_to_their_lease():
    host = new_owner().split("-")[0]
    running_job(f"{host}-{os.getppid()}-cafe00000000")  # a live process on this host
    running_job(f"0badc0de-{dead_pid()}-cafe00000001")  # another host: we cannot tell if it is alive
    assert resume_orphaned_jobs() == 0
    assert resume_stale_jobs() == 0  # both leases are still valid
    assert not DELIVERED


def test_a_zombie_is_not_a_live_holder():
    """A killed worker whose parent (the cluster) died too lingers as a zombie until init reaps it."""
    from portal.workers import process_exists

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < wait
        assert process_exists(child.pid) is False  # exited, not yet reaped
        assert process_exists(os.getpid()) is True
    finally:
        child.wait()
    assert process_exists(child.pid) is False
