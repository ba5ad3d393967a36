"""A web server killed in the middle of receiving a spreadsheet leaves Django's temporary file behind; the clean-up
finds it (issue 13, part B).

The production web server (gunicorn, as in the Procfile) runs as a real process. A spreadsheet upload over 2.5 MB
(Django's FILE_UPLOAD_MAX_MEMORY_SIZE) is streamed to disk while it arrives; half-way through, the server is
killed with SIGKILL, so Django never deletes the file. It must be in PORTAL_TEMP_DIR under the portal's prefix
(Django's own default is the system's /tmp, under a name shared by every Django site), and `manage.py
cleanup_uploads` must delete it once it is an hour old, and not before.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portal.processes import free_port, signal_group, wait_http
from tests.base import ROOT
from tests.reliability.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.crash]

BOUNDARY = "----killed-upload-boundary"
SIZE = 4 * 1024 * 1024  # over FILE_UPLOAD_MAX_MEMORY_SIZE: received into a temporary file
SENT = 1024 * 1024  # what arrives before the kill


def csrf(port: int) -> tuple[str, str]:
    """The CSRF cookie and form token, from the login page, as a browser gets them."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/login/")
    response = conn.getresponse()
    cookie = re.search(r"csrftoken=([^;]+)", response.getheader("Set-Cookie") or "")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.read().decode())
    conn.close()
    assert cookie and token, "no CSRF cookie or token on the login page"
    return cookie.group(1), token.group(1)


def test_a_killed_web_server_leaves_a_temporary_file_the_clean_up_deletes(tmp_path: Path, migrated_sqlite: Path):
    db = tmp_path / "portal.sqlite3"
    shutil.copyfile(migrated_sqlite, db)
    temp = tmp_path / "tmp"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "REDIS_URL": "",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "PORTAL_TEMP_DIR": str(temp),
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", what="gunicorn", procs=[("gunicorn", server)])
        cookie, token = csrf(port)
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n{token}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="devices.csv"\r\n'
            "Content-Type: text/csv\r\n\r\nIMEI\r\n"
        ).encode()
        tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/kdp/uploads/")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
        conn.putheader("Content-Length", str(len(head) + SIZE + len(tail)))
        conn.putheader("Cookie", f"csrftoken={cookie}")
        conn.endheaders()
        conn.send(head + b"359221145350335\r\n" * (SENT // 17))

        # CSRF protection reads the form, so the file is being received although nobody is logged in.
        def receiving() -> list[Path]:
            return [p for p in temp.glob("portal-upload-*") if p.stat().st_size >= SENT // 2] if temp.is_dir() else []

        (left,) = wait_for(receiving, 60, "the upload's temporary file")
        signal_group(server, 9)
        server.wait(timeout=30)
        conn.close()
        assert left.exists() and left.name.endswith(".upload.csv")

        def cleanup() -> str:
            done = subprocess.run(
                [sys.executable, "manage.py", "cleanup_uploads"], cwd=ROOT, env=env, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        assert "Nothing to delete" in cleanup() and left.exists()  # younger than an hour: maybe still arriving
        then = time.time() - 2 * 3600
        os.utime(left, (then, then))
        out = cleanup()
        assert not left.exists()
        assert f"Deleted {left}: " in out and "temporary file left by a stopped process" in out
    finally:
        signal_group(server, 9)
        server.wait(timeout=30)
        log.close()
