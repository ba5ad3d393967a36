from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.server import SandboxServer
from tests.sandbox.client import KnoxClient

# Short enough to keep the suite fast, long enough that "Progress" is observable before "Complete".
PROCESS_DELAY = 0.2


@pytest.fixture(scope="session")
def shared_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """One sandbox for the conformance tests, rate limits off; each test starts from a reset world."""
    server = SandboxServer(
        tmp_path_factory.mktemp("sandbox"), process_delay=PROCESS_DELAY, rate_limit=0, kdp_rate_limit=0
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _session_client(shared_sandbox: SandboxServer) -> KnoxClient:
    return KnoxClient(shared_sandbox.url, shared_sandbox.credentials_path)


@pytest.fixture
def client(shared_sandbox: SandboxServer, _session_client: KnoxClient) -> KnoxClient:
    # Issued tokens survive a reset, so the session client keeps its cached x-knox-apitoken.
    requests.post(shared_sandbox.url + "/_sandbox/faults", json={}, timeout=10).raise_for_status()
    requests.post(shared_sandbox.url + "/_sandbox/reset", timeout=10).raise_for_status()
    return _session_client


@pytest.fixture
def make_sandbox(tmp_path: Path) -> Iterator[Callable[..., SandboxServer]]:
    """Start dedicated sandboxes (own options, own state dir unless given); all are stopped afterwards."""
    started: list[SandboxServer] = []

    def make(state_dir: Path | None = None, **options: Any) -> SandboxServer:
        options.setdefault("process_delay", PROCESS_DELAY)
        server = SandboxServer(state_dir or tmp_path / f"sandbox{len(started)}", **options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
