"""`manage.py knox_sandbox` as a real process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.base import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "knox_sandbox",
            "--port",
            str(port),
            "--state-dir",
            str(tmp_path),
            "--process-delay",
            "0.1",
            "--faults",
            "latency=0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=1)
                if r.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the sandbox did not answer"
            time.sleep(0.1)
        assert r.json()["base_url"] == f"http://127.0.0.1:{port}"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}" in out
    assert str(tmp_path / "credentials.json") in out
    assert str(tmp_path / "keys.json") in out
    assert (tmp_path / "state.json").exists()


def test_bad_options_fail_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "knox_sandbox",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path),
            "--faults",
            "oops=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "unknown fault" in proc.stderr
