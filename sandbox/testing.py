"""Helpers for tests and scripts that need a live sandbox in-process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sandbox.server import SandboxServer


@contextmanager
def running_sandbox(state_dir: str | Path, **options: Any) -> Iterator[SandboxServer]:
    """Start a sandbox on an ephemeral port (unless `port` is given) and stop it, state saved, on exit.

    `options` are SandboxServer's keyword arguments: host, port, rate_limit, kdp_rate_limit, token_ttl,
    process_delay, faults, max_devices_per_request.
    """
    server = SandboxServer(state_dir, **options).start()
    try:
        yield server
    finally:
        server.stop()
