"""The HTTP side: a threaded stdlib server, routing, fault injection and the /_sandbox/ inspection endpoints.

The server is `http.server.ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive, one daemon thread per
connection. Django is deliberately not involved: the sandbox must not share a single line of plumbing with the
portal it is testing.

Fault injection (`--faults`, POST /_sandbox/faults) applies to Knox paths only. `error`, `throttle` and `reset`
and `garbage` are decided *before* the request is processed, so they never have an effect; `truncate` happens
*after* processing, so the effect is applied but the client cannot read the answer ("outcome unknown").
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import sys
import threading
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox import auth, efota, guard, kdp
from sandbox.constants import (
    DEFAULT_PROCESS_DELAY_SECONDS,
    DEFAULT_TOKEN_TTL_SECONDS,
    EFOTA_FUD_INVALID_REQUEST,
    EFOTA_FUD_SERVICE_BUSY,
    EFOTA_FUD_SERVICE_ERROR,
    KDP_INTERNAL_SERVER_ERROR,
    KDP_INVALID_PARAM,
    KDP_MAX_DEVICES_PER_REQUEST,
    KDP_MAX_REQUESTS_PER_SECOND,
    KDP_SERVICE_UNAVAILABLE,
    KDP_TOO_MANY_REQUESTS,
    KG_INTERNAL_SERVER_ERROR,
    KG_INVALID_PARAM,
    KG_MAX_REQUESTS_PER_SECOND,
    KG_SERVICE_UNAVAILABLE,
    KG_TOO_MANY_REQUESTS,
)
from sandbox.store import MIN_SAVE_INTERVAL_SECONDS, Config, Sandbox, parse_faults
from sandbox.wire import (
    BadJson,
    Request,
    Response,
    efota_error,
    json_response,
    kdp_error,
    kg_error,
    oauth_error,
)

if TYPE_CHECKING:
    from collections.abc import Callable

ROUTES: dict[tuple[str, str], Callable[[Sandbox, Request], Response]] = {
    ("POST", "/ams/v1/users/accesstoken"): auth.access_token,
    ("POST", "/ams/v0/users/accesstoken"): auth.access_token,
    ("POST", "/ams/v1/oauth2/token"): auth.oauth_token,
    ("POST", "/ams/v1/oauth2/revoke"): auth.oauth_revoke,
    ("POST", "/iam/auth/oauth/v2/token"): auth.efota_token,
    **kdp.ROUTES,
    **guard.ROUTES,
    **efota.ROUTES,
}
_KNOWN_PATHS = {path for _, path in ROUTES}
log = logging.getLogger("sandbox")


def service_of(path: str) -> str:
    """Which Knox service a path belongs to; it decides the shape of error bodies."""
    if path.startswith("/kcs/v1.1/kg"):
        return "kg"
    if path.startswith(("/kcs/v1/rp", "/bulkenroll", "/ams/")):
        return "kdp"
    if path.startswith("/b2bfota"):
        return "efota"
    if path.startswith("/iam/"):
        return "efota_auth"
    return "other"


def _fault_response(service: str, status: int) -> Response:
    if status == 429:
        headers = [("Retry-After", "1")]
        if service == "kg":
            resp = kg_error(KG_TOO_MANY_REQUESTS, "Too Many Requests", 429)
        elif service == "efota":
            resp = efota_error(EFOTA_FUD_SERVICE_BUSY, 429)
        elif service == "efota_auth":
            resp = oauth_error("temporarily_unavailable", "Too Many Requests", 429)
        else:
            resp = kdp_error(KDP_TOO_MANY_REQUESTS, "Too Many Requests", 429)
        resp.headers.extend(headers)
        return resp
    if service == "kg":
        pair = KG_INTERNAL_SERVER_ERROR if status == 500 else KG_SERVICE_UNAVAILABLE
        return kg_error(pair, "injected fault", status)
    if service == "efota":
        return efota_error(EFOTA_FUD_SERVICE_ERROR if status == 500 else EFOTA_FUD_SERVICE_BUSY, status)
    if service == "efota_auth":
        return oauth_error("server_error", "injected fault", status)
    pair = KDP_INTERNAL_SERVER_ERROR if status == 500 else KDP_SERVICE_UNAVAILABLE
    return kdp_error(pair, "injected fault", status)


# What a middlebox in front of Knox answers when something is wrong: complete HTTP messages, status 200, whose bodies
# are not the documented shape. Decided before processing, like the 5xx faults: the request had no effect.
_GARBAGE_BODIES: tuple[tuple[str, bytes], ...] = (
    (
        "text/html; charset=utf-8",
        b"<!DOCTYPE html><html><head><title>Service maintenance</title></head>"
        b"<body><h1>We'll be back soon</h1><p>Please try again later.</p></body></html>",
    ),
    ("application/json", b'{"code":"200","message":"SUCCESS","devices":{"totalCount":1,"transactions":[{"transac'),
    (
        "application/xml",
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><lolz>&lol3;</lolz>',
    ),
)


def _garbage_response(rng: Any) -> Response:
    content_type, body = rng.choice(_GARBAGE_BODIES)
    return Response(200, body, content_type, [])


def _not_found(service: str, method: str, path: str, known_path: bool) -> Response:
    status = 405 if known_path else 404
    text = f"{method} is not allowed on {path}" if known_path else f"no such endpoint: {method} {path}"
    if service == "kg":
        return kg_error(KG_INVALID_PARAM, text, status)
    if service == "kdp":
        return kdp_error(KDP_INVALID_PARAM, text, status)
    if service == "efota":
        return efota_error(EFOTA_FUD_INVALID_REQUEST, status)
    return json_response({"error": "not_found", "error_description": text}, status)


def dispatch(app: Sandbox, req: Request) -> Response:
    if req.path.startswith("/_sandbox/"):
        return _admin(app, req)
    app.count_request(req.path)
    service = service_of(req.path)
    faults = app.config.faults
    if faults["latency"] > 0:
        app.count("faults", "latency")
        time.sleep(faults["latency"])
    # Decided before processing: these answers never have an effect.
    rng = app.rng
    if faults["reset"] > 0 and rng.random() < faults["reset"]:
        app.count("faults", "reset")
        return Response(0, drop=True)
    if faults["error"] > 0 and rng.random() < faults["error"]:
        app.count("faults", "error")
        return _fault_response(service, rng.choice((500, 503)))
    if faults["throttle"] > 0 and rng.random() < faults["throttle"]:
        app.count("faults", "throttle")
        return _fault_response(service, 429)
    if faults["garbage"] > 0 and rng.random() < faults["garbage"]:
        app.count("faults", "garbage")
        return _garbage_response(rng)

    handler = ROUTES.get((req.method, req.path))
    if handler is not None:
        resp = handler(app, req)
    elif req.method == "GET" and req.path.startswith(guard.UPLOAD_PREFIX) and len(req.path) > len(guard.UPLOAD_PREFIX):
        resp = guard.get_upload(app, req, req.path[len(guard.UPLOAD_PREFIX) :])
    else:
        resp = _not_found(service, req.method, req.path, req.path in _KNOWN_PATHS)

    # Decided after processing: the effect happened, the client just cannot read about it.
    if faults["truncate"] > 0 and rng.random() < faults["truncate"]:
        app.count("faults", "truncate")
        resp.truncate = True
    return resp


# --- /_sandbox/ ----------------------------------------------------------------------------------------------------


def _admin(app: Sandbox, req: Request) -> Response:
    path, method = req.path, req.method
    if path == "/_sandbox/health" and method == "GET":
        return json_response({"ok": True, "base_url": app.base_url})
    if path == "/_sandbox/state" and method == "GET":
        return json_response(_inspect(app, req))
    if path == "/_sandbox/credentials" and method == "GET":
        return json_response(app.credentials)
    if path == "/_sandbox/reset" and method == "POST":
        app.reset()
        return json_response({"ok": True})
    if path == "/_sandbox/expire-tokens" and method == "POST":
        return json_response({"ok": True, "expired": app.expire_tokens()})
    if path == "/_sandbox/faults":
        if method == "GET":
            return json_response(app.config.faults)
        if method == "POST":
            try:
                body = req.json() if req.body else {}
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object of fault knobs")
                app.config.faults = parse_faults(body)
            except (BadJson, ValueError) as exc:
                return json_response({"error": str(exc)}, 400)
            return json_response(app.config.faults)
    return json_response({"error": f"no such sandbox endpoint: {method} {path}"}, 404)


def _inspect(app: Sandbox, req: Request) -> dict[str, Any]:
    snap = app.snapshot()
    # Secrets and token values stay out of the inspection view; counts are enough to reason about auth.
    auth_section = snap.pop("auth")
    snap["auth"] = {
        "accessTokens": len(auth_section["accessTokens"]),
        "oauthTokens": len(auth_section["oauthTokens"]),
        "efotaTokens": len(auth_section["efotaTokens"]),
        "jtis": len(auth_section["jtis"]),
    }
    snap["config"] = {
        "rate_limit": app.config.rate_limit,
        "kdp_rate_limit": app.config.kdp_rate_limit,
        "token_ttl": app.config.token_ttl,
        "process_delay": app.config.process_delay,
        "max_devices_per_request": app.config.max_devices_per_request,
        "faults": app.config.faults,
    }
    if req.q("devices") == "0":
        # Summary mode for very large registries.
        snap["kdp"]["devices"] = len(snap["kdp"]["devices"])
    return snap


# --- HTTP ----------------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    app: Sandbox

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _RequestHandler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that was killed (a worker under kill -9) resets its connection: nothing to report.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            sockets = list(self.connections)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KnoxSandbox/1.0"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Every answer goes out in one write; without TCP_NODELAY, Nagle plus delayed ACKs would stall keep-alive
        # clients for ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        # Per-request logging costs more than the request; the counters in /_sandbox/state say what happened.
        pass

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = self._read_chunked()
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                self._write(json_response({"error": "bad Content-Length"}, 400))
                return
            body = self.rfile.read(length) if length else b""
        req = Request(self.command, path, query, self.headers, body)
        try:
            resp = dispatch(self.server.app, req)
        except Exception as exc:  # A sandbox bug must still produce an answer in the service's shape.
            resp = _fault_response(service_of(path), 500)
            resp.headers.append(("X-Sandbox-Error", type(exc).__name__))
            log.exception("sandbox: unhandled error on %s %s", self.command, path)
        self._write(resp)

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            line = self.rfile.readline(65537)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailers end with an empty line.
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _write(self, resp: Response) -> None:
        if resp.drop:
            self._abort()
            return
        try:
            phrase = HTTPStatus(resp.status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {resp.status} {phrase}", f"Server: {self.server_version}", f"Date: {_http_date()}"]
        if resp.content_type:
            lines.append(f"Content-Type: {resp.content_type}")
        lines.append(f"Content-Length: {len(resp.body)}")
        for name, value in resp.headers:
            lines.append(f"{name}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if resp.truncate:
            # Full Content-Length, half the body, then the connection goes away. An empty body cannot be cut,
            # so it is dropped after the headers are withheld (the client sees no answer at all).
            if resp.body:
                self.wfile.write(head + resp.body[: len(resp.body) // 2])
            self._abort()
            return
        self.wfile.write(head + resp.body)

    def _abort(self) -> None:
        """Drop the connection: SO_LINGER 0 makes close() send a RST rather than a polite FIN."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


class SandboxServer:
    """The sandbox, bound to a socket at construction (so `.url` is known at once) and served by `start()`.

    Use it as a context manager in tests::

        with SandboxServer(tmp_path, process_delay=0.2).start() as sandbox:
            requests.get(sandbox.url + "/_sandbox/health")
    """

    def __init__(
        self,
        state_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int = KG_MAX_REQUESTS_PER_SECOND,
        kdp_rate_limit: int = KDP_MAX_REQUESTS_PER_SECOND,
        token_ttl: float = DEFAULT_TOKEN_TTL_SECONDS,
        process_delay: float = DEFAULT_PROCESS_DELAY_SECONDS,
        faults: str | dict[str, Any] = "",
        max_devices_per_request: int = KDP_MAX_DEVICES_PER_REQUEST,
        save_interval: float = MIN_SAVE_INTERVAL_SECONDS,
    ) -> None:
        config = Config(
            rate_limit=rate_limit,
            kdp_rate_limit=kdp_rate_limit,
            token_ttl=token_ttl,
            process_delay=process_delay,
            faults=parse_faults(faults),
            max_devices_per_request=max_devices_per_request,
            save_interval=save_interval,
        )
        self.httpd = _Server((host, port))
        bound_port = self.httpd.server_address[1]
        shown_host = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104 - only a display choice
        self.url = f"http://{shown_host}:{bound_port}"
        self.port = bound_port
        self.app = Sandbox(Path(state_dir), config, self.url)
        self.httpd.app = self.app
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._serving = False

    @property
    def keys_path(self) -> Path:
        return self.app.keys_path

    @property
    def credentials_path(self) -> Path:
        return self.app.credentials_path

    @property
    def credentials(self) -> dict[str, Any]:
        return self.app.credentials

    def start(self) -> SandboxServer:
        """Serve in a background (daemon) thread and return self."""
        self.app.start_persister()
        self._serving = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="sandbox-http", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until stop() or KeyboardInterrupt; the state is saved on the way out."""
        self.app.start_persister()
        self._serving = True
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self._serving = False
            self.stop()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.httpd.server_close()
        self.httpd.close_connections()
        self.app.close()

    def __enter__(self) -> SandboxServer:
        if not self._serving:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
