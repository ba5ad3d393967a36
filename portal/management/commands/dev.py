"""`make run`: the web server, a django-q2 worker cluster and the Knox sandbox in one foreground command.

Each child runs in its own process group so that shutdown can stop it together with anything it spawned (the
runserver autoreloader, qcluster's worker processes). Ctrl-C (SIGINT) or SIGTERM stops every child; if any child
exits on its own, the others are stopped too, so nothing is left running behind the terminal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from portal.processes import stop_processes, wait_http


class Command(BaseCommand):
    help = "Run the portal, a django-q2 cluster and the Knox sandbox together (Ctrl-C stops them all)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="Where the web server listens.")
        parser.add_argument("--no-sandbox", action="store_true", help="Do not start the Knox sandbox.")
        parser.add_argument("--sandbox-port", type=int, default=8765)
        parser.add_argument("--sandbox-dir", default=str(settings.BASE_DIR / "var" / "sandbox"))

    def handle(
        self, *args: Any, addr: str, no_sandbox: bool, sandbox_port: int, sandbox_dir: str, **options: Any
    ) -> None:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        children: list[tuple[str, subprocess.Popen[bytes]]] = []
        stopping = False

        def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
            proc = subprocess.Popen(argv, start_new_session=True, env={**os.environ, **(env or {})})  # noqa: S603
            children.append((name, proc))
            self.stdout.write(f"started {name} (pid {proc.pid})")
            return proc

        def stop_all(*_: Any) -> None:
            nonlocal stopping
            if stopping:
                return
            stopping = True
            self.stdout.write("stopping…")
            stop_processes(proc for _, proc in children)
            self.stdout.write("all stopped")

        signal.signal(signal.SIGINT, stop_all)
        signal.signal(signal.SIGTERM, stop_all)
        try:
            if not no_sandbox:
                sandbox_url = f"http://127.0.0.1:{sandbox_port}"
                start(
                    "knox sandbox", [*manage, "knox_sandbox", "--port", str(sandbox_port), "--state-dir", sandbox_dir]
                )
                try:
                    wait_http(f"{sandbox_url}/_sandbox/health", what="the Knox sandbox", procs=children, timeout=30)
                except RuntimeError as e:
                    raise CommandError(str(e)) from None
                credentials = Path(sandbox_dir) / "credentials.json"
                base_url = json.loads(credentials.read_text()).get("base_url", sandbox_url)
                if base_url.rstrip("/") != settings.KNOX_SANDBOX_URL:
                    self.stderr.write(
                        f"note: the sandbox answers at {base_url} but KNOX_SANDBOX_URL is {settings.KNOX_SANDBOX_URL}"
                    )
                call_command("import_sandbox_account", sandbox_dir, name="Sandbox")
            start("django-q2 cluster", [*manage, "qcluster"])
            start("web server", [*manage, "runserver", addr, "--noreload"])
            self.stdout.write(self.style.SUCCESS(f"\nPortal on http://{addr}/  (Ctrl-C stops everything)\n"))
            while not stopping:
                for name, proc in children:
                    if proc.poll() is not None and not stopping:
                        self.stderr.write(f"{name} exited with code {proc.returncode}; stopping the others")
                        stop_all()
                        raise CommandError(f"{name} stopped unexpectedly")
                time.sleep(0.5)
        except BaseException:
            stop_all()
            raise
