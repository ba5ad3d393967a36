"""Who holds a job's lease, and resuming jobs whose worker process died, as soon as a worker starts.

A lease owner names the worker process that holds it: `<host tag>-<pid>-<random>` (at most 32 characters, the
width of `Job.lease_owner`). When a django-q2 worker process starts on a host, it looks for running jobs held by a
process *of the same host* that no longer exists (the cluster was killed, the machine rebooted) and resumes them at
once instead of waiting for their lease to expire. Jobs held by other hosts are left to the lease and the
every-minute `resume_stale_jobs` schedule: from here we cannot tell whether a remote process is alive.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

from django.db import DatabaseError, connection, connections, models
from django.utils import timezone

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker holds the job now; the current one must stop without touching it."""


class Lease:
    """One job's lease held by this process: renewed by the process's LeaseRenewer while the job's work runs, so a
    live worker never loses its lease however long one Knox call takes (issue 13 §4: a call that outlived the
    lease let a second worker run the same job).

    The lease is renewed every quarter of its length. A renewal that finds the job held by someone else sets
    `lost`: the worker's next `Job.heartbeat()` raises LeaseLost, and so does the next Knox request it tries
    (`check_lease()`, called by portal.knox.http before every attempt), so a worker that lost its lease sends
    nothing more. A renewal that fails because the database is unavailable is tried again at the next tick; the
    lease then still has three quarters of its length to run.

    Only meaningful when the job's row is committed: inside a transaction (tests, a synchronous run inside a
    request) another connection cannot see it, and the worker's own heartbeats are all there is.
    """

    def __init__(self, job_pk: int, owner: str, lease_seconds: float) -> None:
        self.job_pk = job_pk
        self.owner = owner
        self.interval = max(0.25, lease_seconds / 4)
        self.due = time.monotonic() + self.interval
        self.lost = threading.Event()
        self.renewals = 0


class LeaseRenewer:
    """The one thread per worker process that renews the leases of every job the process is working on.

    One thread per process, not one per job: a worker draining one-device Knox Guard jobs at Knox's rate runs a
    hundred jobs a second, and starting and joining a thread for each cost about 14 % of its time (issue 14). The
    thread sleeps until the earliest lease is due, renews what is due (one UPDATE each) and closes its own database
    connections, so an idle worker holds no extra connection. It starts on first use in each process, and again
    in a child after a fork.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._leases: dict[int, Lease] = {}
        self._thread: threading.Thread | None = None
        self._wake_at = 0.0  # when the renewer thread next wakes by itself (monotonic)

    def add(self, lease: Lease) -> None:
        with self._cv:
            self._leases[id(lease)] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self._thread.start()
            if lease.due < self._wake_at:  # else the renewer wakes in time anyway: no thread switch per job
                self._cv.notify()

    def remove(self, lease: Lease) -> None:
        with self._cv:
            self._leases.pop(id(lease), None)

    def _holds(self, lease: Lease) -> bool:
        with self._cv:
            return id(lease) in self._leases

    def _next_due(self) -> list[Lease]:
        """Wait until at least one lease is due, and return those that are."""
        with self._cv:
            while True:
                now = time.monotonic()
                due = [lease for lease in self._leases.values() if lease.due <= now]
                if due:
                    return due
                self._wake_at = min((lease.due for lease in self._leases.values()), default=now + 60)
                self._cv.wait(timeout=self._wake_at - now)

    def _run(self) -> None:
        from portal.models import Job

        while True:
            for lease in self._next_due():
                lease.due = time.monotonic() + lease.interval
                try:
                    held = Job.renew_lease(lease.job_pk, lease.owner)
                except DatabaseError as e:
                    logger.warning("job %s: could not renew its lease (%s); trying again", lease.job_pk, e)
                    continue
                except Exception:
                    # Never let this thread die: it renews every job of the process. The connection is closed
                    # below and the lease tried again at its next tick, with three quarters of it left to run.
                    logger.exception("job %s: renewing its lease failed unexpectedly; trying again", lease.job_pk)
                    continue
                if held:
                    lease.renewals += 1
                elif self._holds(lease):  # else its work ended meanwhile and the job with it
                    logger.warning("job %s: its lease is held by another worker now; this one stops", lease.job_pk)
                    lease.lost.set()
                    self.remove(lease)
            connections.close_all()  # this thread's own connections; the next renewal is a quarter lease away


_renewer = LeaseRenewer()


def _renewer_after_fork() -> None:
    """A forked child has none of its parent's threads: it starts its own renewer on first use."""
    global _renewer
    _renewer = LeaseRenewer()


os.register_at_fork(after_in_child=_renewer_after_fork)


# The lease the current thread's job runs under; portal.knox.http checks it before every request to Knox.
_current_lease: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("current_lease", default=None)


def check_lease() -> None:
    """Raise LeaseLost when the job this thread works on has been taken over by another worker."""
    lease = _current_lease.get()
    if lease is not None and lease.lost.is_set():
        raise LeaseLost(f"job {lease.job_pk} is no longer held by this worker")


class held_lease:
    """`with held_lease(job_pk, owner, seconds):` keeps the lease renewed while the block runs (see Lease)."""

    def __init__(self, job_pk: int, owner: str, lease_seconds: float) -> None:
        self.lease: Lease | None = None
        if not connection.in_atomic_block:
            self.lease = Lease(job_pk, owner, lease_seconds)

    @property
    def lost(self) -> bool:
        return self.lease is not None and self.lease.lost.is_set()

    def __enter__(self) -> Lease | None:
        if self.lease is not None:
            _renewer.add(self.lease)
        self._token = _current_lease.set(self.lease)
        return self.lease

    def __exit__(self, *exc: object) -> None:
        _current_lease.reset(self._token)
        if self.lease is not None:
            _renewer.remove(self.lease)


_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def new_owner() -> str:
    """A lease owner for one run of one job by this process."""
    return f"{_HOST_TAG}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def owner_pid_on_this_host(owner: str) -> int | None:
    """The process id in `owner` when it was issued on this host, else None (another host, or an old format)."""
    host, sep, rest = owner.partition("-")
    pid, sep2, _ = rest.partition("-")
    if not (sep and sep2) or host != _HOST_TAG or not pid.isdigit():
        return None
    return int(pid)


def process_exists(pid: int) -> bool:
    """Whether `pid` is a live process. A zombie is not: a killed worker whose parent died too stays one until
    init reaps it, which can be after the replacement cluster has started."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): kill() said it exists
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def resume_orphaned_jobs() -> int:
    """Resume every running job whose lease holder was a process of this host that has gone.

    The lease is released with a conditional UPDATE on the dead owner, so when several workers start together
    exactly one of them queues each job again.
    """
    from portal.models import Job

    n = 0
    running = Job.objects.filter(status=Job.Status.RUNNING).exclude(func="").exclude(lease_owner="")
    for job in running.only("pk", "kind", "func", "lease_owner"):
        pid = owner_pid_on_this_host(job.lease_owner)
        if pid is None or pid == os.getpid() or process_exists(pid):
            continue
        released = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease_owner=job.lease_owner).update(
            lease_owner="", lease_until=timezone.now() - timedelta(seconds=1), version=models.F("version") + 1
        )
        if released:
            logger.warning("job %s (%s) was held by process %s, which is gone; resuming it now", job.pk, job.kind, pid)
            job.send()
            n += 1
    return n


def on_worker_spawn(sender: object, proc_name: str = "", **kwargs: object) -> None:
    """django-q2's post_spawn signal: runs in each worker process as it starts."""
    try:
        resume_orphaned_jobs()
    except Exception:
        # A worker that cannot reach the database now will fail its first task visibly; the schedule retries the
        # resume every minute. Starting the worker matters more than this early resume.
        logger.exception("could not check for jobs orphaned by a dead worker at start-up")
