"""`manage.py knox_sandbox`: run the Knox simulator in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sandbox.constants import (
    DEFAULT_PORT,
    DEFAULT_PROCESS_DELAY_SECONDS,
    DEFAULT_STATE_DIR,
    DEFAULT_TOKEN_TTL_SECONDS,
    KDP_MAX_DEVICES_PER_REQUEST,
    KDP_MAX_REQUESTS_PER_SECOND,
    KG_MAX_REQUESTS_PER_SECOND,
)
from sandbox.server import SandboxServer
from sandbox.store import MIN_SAVE_INTERVAL_SECONDS


def _stop(signum: int, frame: FrameType | None) -> None:
    # Raised inside serve_forever's select loop, which unwinds through SandboxServer.serve_forever's `finally`:
    # the socket is closed and the state saved, exactly as for Ctrl-C.
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run the Knox sandbox (KDP Gen2/Gen1, Knox Guard v1.1, E-FOTA b2bfota v2 and Knox auth) on one base URL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=DEFAULT_PORT)
        parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
        parser.add_argument(
            "--rate-limit",
            type=int,
            default=KG_MAX_REQUESTS_PER_SECOND,
            help="Knox Guard requests per second per token (0 = off)",
        )
        parser.add_argument(
            "--kdp-rate-limit",
            type=int,
            default=KDP_MAX_REQUESTS_PER_SECOND,
            help="KDP requests per second per token or Gen1 key (0 = off)",
        )
        parser.add_argument("--token-ttl", type=float, default=DEFAULT_TOKEN_TTL_SECONDS, help="access-token lifetime")
        parser.add_argument(
            "--process-delay",
            type=float,
            default=DEFAULT_PROCESS_DELAY_SECONDS,
            help="seconds async work stays in progress",
        )
        parser.add_argument(
            "--faults", default="", help="e.g. error=0.05,throttle=0.05,reset=0.01,truncate=0.01,latency=0.2"
        )
        parser.add_argument("--max-devices-per-request", type=int, default=KDP_MAX_DEVICES_PER_REQUEST)
        parser.add_argument(
            "--save-interval",
            type=float,
            default=MIN_SAVE_INTERVAL_SECONDS,
            help="seconds between writes of state.json, at least (it is always written on stop)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            server = SandboxServer(
                options["state_dir"],
                host=options["host"],
                port=options["port"],
                rate_limit=options["rate_limit"],
                kdp_rate_limit=options["kdp_rate_limit"],
                token_ttl=options["token_ttl"],
                process_delay=options["process_delay"],
                faults=options["faults"],
                max_devices_per_request=options["max_devices_per_request"],
                save_interval=options["save_interval"],
            )
        except (ValueError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Knox sandbox listening on {server.url}")
        self.stdout.write(f"keys.json:        {server.keys_path}")
        self.stdout.write(f"credentials.json: {server.credentials_path}")
        self.stdout.flush()
        signal.signal(signal.SIGTERM, _stop)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
        self.stdout.write("Knox sandbox stopped; state saved.")
