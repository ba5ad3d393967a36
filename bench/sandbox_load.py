"""Load test of the Knox sandbox: how many authenticated requests per second it serves on loopback.

    .venv/bin/python bench/sandbox_load.py [--seconds 5] [--processes 2] [--threads 4] [--endpoint kg|kdp] [--json]

The sandbox runs in this process with its rate limits off; the load comes from separate worker processes (so
they do not compete with the server for this process's GIL), each running a few threads with one keep-alive
connection apiece. Every request carries the same signed x-knox-apitoken, as a real client caching its token
would. The result is printed as JSON: {"sandbox_rps": ...}.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.server import SandboxServer

PATHS = {"kg": "/kcs/v1.1/kg/authorization", "kdp": "/kcs/v1/rp/customers"}


def _api_token(base_url: str, credentials_path: Path) -> str:
    """Sign in the way knox-api.md section 2.2 describes (independently of the portal's client code)."""
    creds = json.loads(credentials_path.read_text())
    keys = json.loads(Path(creds["keys_file"]).read_text())
    key = serialization.load_der_private_key(base64.b64decode(keys["Private"]), password=None)
    now = int(time.time())

    def sign(claims: dict[str, Any]) -> str:
        full = {"aud": "KnoxWSM", "jti": uuid.uuid4().hex, "iat": now, "exp": now + 1800, **claims}
        return jwt.encode(full, key, algorithm="RS512")  # type: ignore[arg-type]

    client_jwt = sign({"clientIdentifier": creds["client_identifier"], "publicKey": keys["Public"]})
    r = requests.post(
        base_url + "/ams/v1/users/accesstoken",
        json={
            "base64EncodedStringPublicKey": keys["Public"],
            "clientIdentifierJwt": client_jwt,
            "validityForAccessTokenInMinutes": 30,
        },
        timeout=10,
    )
    r.raise_for_status()
    return sign({"accessToken": r.json()["accessToken"], "publicKey": keys["Public"]})


def _worker(
    host: str, port: int, path: str, token: str, threads: int, start_at: float, stop_at: float, out: Any
) -> None:
    counts = [0] * threads
    errors = [0] * threads

    def loop(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        headers = {"x-knox-apitoken": token}
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < stop_at:
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    counts[i] += 1
                else:
                    errors[i] += 1
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.close()

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    out.put((sum(counts), sum(errors)))


def run(seconds: float, processes: int, threads: int, endpoint: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state_dir:
        server = SandboxServer(state_dir, rate_limit=0, kdp_rate_limit=0).start()
        try:
            token = _api_token(server.url, server.credentials_path)
            ctx = multiprocessing.get_context("spawn")
            out = ctx.Queue()
            # Workers spawn in well under two seconds; all of them start sending at the same moment.
            start_at = time.time() + 2.0
            stop_at = start_at + seconds
            procs = [
                ctx.Process(
                    target=_worker,
                    args=("127.0.0.1", server.port, PATHS[endpoint], token, threads, start_at, stop_at, out),
                )
                for _ in range(processes)
            ]
            for p in procs:
                p.start()
            results = [out.get(timeout=seconds + 60) for _ in procs]
            for p in procs:
                p.join()
        finally:
            server.stop()
    ok = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    return {
        "sandbox_rps": round(ok / seconds, 1),
        "requests": ok,
        "errors": errors,
        "seconds": seconds,
        "clients": processes * threads,
        "endpoint": PATHS[endpoint],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="keep-alive connections per client process")
    parser.add_argument("--endpoint", choices=sorted(PATHS), default="kg")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()
    result = run(args.seconds, args.processes, args.threads, args.endpoint)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['requests']} requests in {result['seconds']} s from {result['clients']} keep-alive clients "
            f"({result['errors']} errors) on {result['endpoint']}"
        )
        print(json.dumps({"sandbox_rps": result["sandbox_rps"]}))


if __name__ == "__main__":
    main()
