"""Running the portal's processes side by side: `make run` (manage.py dev), the browser tests' live stack and the
crash tests' miniature deployment all start children in their own process groups and stop them the same way."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable

STOP_GRACE_SECONDS = 10


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal `proc`'s whole process group (it was started with start_new_session=True)."""
    with contextlib.suppress(ProcessLookupError):  # already gone: nothing to signal
        os.killpg(proc.pid, sig)


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM each group leader, wait up to `grace` seconds, then SIGKILL whatever is left in each group.

    Only the leader gets SIGTERM: qcluster's sentinel stops its own workers in order, and a SIGTERM to its whole
    group left it waiting for workers that had already died until the grace period ran out."""
    procs = list(procs)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        signal_group(proc, signal.SIGKILL)
        proc.wait()


def wait_http(
    url: str, *, what: str, procs: Iterable[tuple[str, subprocess.Popen[bytes]]] = (), timeout: float = 60
) -> None:
    """Wait until `url` answers 200; RuntimeError if it does not in time or one of `procs` exits meanwhile."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} while waiting for {what}")
        # Not listening yet, or an error status (HTTPError is an OSError): try again.
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer 200 at {url} within {timeout:.0f} s")
