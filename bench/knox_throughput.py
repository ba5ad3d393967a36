"""Knox throughput against the sandbox (run as its own process) at its default per-service rate limits and zero
added latency.

- KDP: an N-device upload job end to end (planning, chunks, status polling, records updated), in this process:
  `kdp_upload_s`; `kdp_floor_s` = upload requests ÷ the published KDP limit + the sandbox's process delay, and
  `kdp_vs_floor`; `kdp_practical_floor_s` = (upload requests + one status read per chunk, which Knox's one-
  transactionId status call needs) ÷ the rate the limiter paces at + the process delay, and
  `kdp_vs_practical_floor` (target ≤ 1.25); `kdp_first_request_s` = from queuing the job to the first upload
  reaching the sandbox (target within a second); `kdp_requests`; `kdp_429_fraction` (target 0).
- Knox Guard: M single-device actions ("message", which leaves the state unchanged), one job each, run by a real
  `qcluster` with 2 workers: `guard_rate_ratio` = achieved requests/s ÷ the Guard limit (target ≥ 0.95),
  `guard_429_fraction` (target < 0.005).

    python bench/knox_throughput.py [--kdp-devices 100000] [--guard-actions 20000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, emit, setup_django, workdir

PROCESS_DELAY = 2.0  # the sandbox's default --process-delay
# Real Knox does not share the portal's cores; the sandbox does. Rewriting its whole state every second costs it about
# 2 ms of CPU per request at 20,000 devices, taken from the workers being measured, so the bench saves once a minute.
SANDBOX_SAVE_INTERVAL = 60.0


def start_sandbox(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(ROOT / "manage.py"), "knox_sandbox", "--port", str(port)]
    command += ["--state-dir", str(tmp / "sandbox"), "--process-delay", str(PROCESS_DELAY)]
    command += ["--save-interval", str(SANDBOX_SAVE_INTERVAL)]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the sandbox did not start")


def counters(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/state?devices=0", timeout=30) as r:
        return json.loads(r.read())["counters"]


def by_prefix(c: dict, prefix: str, key: str = "by_path") -> int:
    return sum(n for path, n in c.get(key, {}).items() if path.startswith(prefix))


def kdp_upload(port: int, tmp: Path, n: int) -> dict:
    from django.core.files.base import ContentFile

    from kdp.models import Customer, submit_upload
    from kdp.tasks import run_transfer, sync_customers
    from portal.identifiers import luhn_check_digit
    from portal.models import Job, KnoxAccount, Upload
    from portal.uploads import stage_upload

    account = KnoxAccount.objects.get(name="Sandbox")
    sync = Job.objects.create(kind="kdp.customers", account=account)
    sync_customers(sync.pk)
    customer = Customer.objects.filter(account=account, status="Verified").first()
    out = io.StringIO()
    out.write("IMEI\n")
    for i in range(n):
        body = f"35{i + 20_000_000:012d}"
        out.write(body + luhn_check_digit(body) + "\n")
    upload = Upload(account=account, filename="bench.csv", service="kdp")
    upload.file.save("bench.csv", ContentFile(out.getvalue().encode()), save=False)
    upload.save()
    stage_upload(upload)
    before = counters(port)
    queued_at = time.time()  # wall clock: compared with the sandbox's own submittedAt times
    start = time.perf_counter()
    job = submit_upload(upload, user=None, customer=customer)
    run_transfer(job.pk)
    elapsed = time.perf_counter() - start
    job.refresh_from_db()
    assert job.succeeded == n, (job.status, job.succeeded, job.failed, job.error_summary)
    after = counters(port)
    requests = by_prefix(after, "/kcs/v1/rp") - by_prefix(before, "/kcs/v1/rp")
    uploads = by_prefix(after, "/kcs/v1/rp/devices/upload") - by_prefix(before, "/kcs/v1/rp/devices/upload")
    limited = after["rate_limited"] - before["rate_limited"]
    sent_at = upload_times(port, queued_at)
    floor, practical = kdp_floors(uploads)
    print(
        f"kdp timeline: uploads {uploads}, status reads {requests - uploads}, first upload at {sent_at[0]:.2f} s, "
        f"last upload at {sent_at[-1]:.2f} s, job done at {elapsed:.2f} s",
        file=sys.stderr,
    )
    return {
        "kdp_upload_s": round(elapsed, 2),
        "kdp_floor_s": round(floor, 2),
        "kdp_vs_floor": round(elapsed / floor, 2),
        "kdp_practical_floor_s": round(practical, 2),
        "kdp_vs_practical_floor": round(elapsed / practical, 2),
        "kdp_first_request_s": round(sent_at[0], 2),
        "kdp_429_fraction": round(limited / max(1, requests), 4),
        "kdp_requests": requests,
    }


def kdp_floors(uploads: int) -> tuple[float, float]:
    """The two floors of a KDP upload of `uploads` chunks: (uploads only at the published limit + the process delay,
    uploads and one status read per chunk at the paced rate + the process delay).

    The practical floor uses the rate the limiter really sends at, not the published one: below LOW_RATE it paces
    at LOW_RATE_HEADROOM (0.9) of the limit with no burst tolerance, so 9 requests/s for KDP's 10. One status read
    per chunk because Knox's status call takes one transactionId (knox-api.md §3.6)."""
    from django.conf import settings

    from portal.knox.ratelimit import RateLimiter

    limit = settings.KNOX_KDP_RATE_LIMIT
    paced = 1 / RateLimiter("bench:kdp", limit).interval
    return uploads / limit + PROCESS_DELAY, 2 * uploads / paced + PROCESS_DELAY


def upload_times(port: int, since: float) -> list[float]:
    """Seconds from `since` to each KDP transaction the sandbox accepted after it (its own submittedAt), in order."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/state?devices=0", timeout=60) as r:
        transactions = json.loads(r.read())["kdp"]["transactions"].values()
    return sorted(t["submittedAt"] - since for t in transactions if t["submittedAt"] >= since)


def guard_actions(port: int, tmp: Path, m: int) -> dict:
    from django.db import models, transaction

    from guard.client import ActionParams, GuardClient
    from guard.constants import KG_MAX_REQUESTS_PER_SECOND
    from guard.models import GuardDevice, queue_action
    from guard.tasks import upsert_devices
    from portal.identifiers import luhn_check_digit
    from portal.models import Job, KnoxAccount

    account = KnoxAccount.objects.get(name="Sandbox")
    client = GuardClient(account)
    uids = []
    for i in range(m):
        body = f"35{i + 40_000_000:012d}"
        uids.append(body + luhn_check_digit(body))
    for start in range(0, m, 10_000):
        client.upload(
            [(u, "") for u in uids[start : start + 10_000]], {"autoAccept": True}, transaction_id=f"bench{start}"
        )
    time.sleep(PROCESS_DELAY + 0.5)  # Accepted → Enrolled after the sandbox's process delay
    from guard.client import ListedDevice

    upsert_devices(account.pk, [ListedDevice("", u, "", "Enrolled") for u in uids])
    params = ActionParams(message="Your payment is due", tel="+44 20 7946 0000")
    pks = list(GuardDevice.objects.filter(account=account, device_uid__in=uids).values_list("pk", flat=True))
    # Queue every job first (the tasks wait in the database broker), then let two workers drain them.
    with transaction.atomic():
        jobs = [queue_action(account, "message", params, user=None, devices=[pk]).pk for pk in pks]
    # The jobs are consecutive rows: a range, not a 20,000-value IN list compiled every second while the workers run.
    ours = Job.objects.filter(pk__gte=min(jobs), pk__lte=max(jobs), kind="guard.message")
    assert ours.count() == len(jobs)
    before = counters(port)
    env = {**os.environ, "Q_WORKERS": "2", "Q_SYNC": "False", "Q_POLL": "0.05", "LOG_LEVEL": "WARNING"}
    cluster = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + max(120, m / 20)
        while time.time() < deadline:
            if not ours.exclude(status__in=Job.FINISHED).exists():
                break
            time.sleep(1)
    finally:
        os.killpg(cluster.pid, signal.SIGTERM)
        try:
            cluster.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
    done = ours.filter(status=Job.Status.SUCCEEDED)
    if not done.exists():
        statuses = dict(ours.values_list("status").annotate(n=models.Count("id")).order_by())
        raise RuntimeError(f"no Guard job finished: {statuses}")
    first = min(done.values_list("started_at", flat=True))
    last = max(done.values_list("finished_at", flat=True))
    after = counters(port)
    requests = by_prefix(after, "/kcs/v1.1/kg/devices/sendMessage") - by_prefix(
        before, "/kcs/v1.1/kg/devices/sendMessage"
    )
    limited = after["rate_limited"] - before["rate_limited"]
    seconds = (last - first).total_seconds()
    rate = done.count() / seconds if seconds else 0.0
    return {
        "guard_rate_ratio": round(rate / KG_MAX_REQUESTS_PER_SECOND, 3),
        "guard_429_fraction": round(limited / max(1, requests), 4),
        "guard_actions_done": done.count(),
        "guard_seconds": round(seconds, 1),
    }


def as_deployed() -> None:
    """Run this process, the sandbox and the cluster as deployed: DEBUG off (with it on, Django keeps every query
    and, on SQLite, runs one more statement per query to quote its parameters), with throw-away keys, which
    settings require once DEBUG is off. Values already in the environment win."""
    from cryptography.fernet import Fernet

    os.environ.setdefault("DEBUG", "False")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("FIELD_ENCRYPTION_KEY", Fernet.generate_key().decode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kdp-devices", type=int, default=100_000)
    parser.add_argument("--guard-actions", type=int, default=20_000)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()
    as_deployed()
    with workdir() as tmp:
        sandbox = start_sandbox(tmp, args.port)
        try:
            os.environ["KNOX_SANDBOX_URL"] = f"http://127.0.0.1:{args.port}"
            setup_django(tmp)
            from django.core.management import call_command

            call_command("import_sandbox_account", str(tmp / "sandbox"), stdout=io.StringIO())
            result = {}
            if args.kdp_devices:
                result.update(kdp_upload(args.port, tmp, args.kdp_devices))
            if args.guard_actions:
                result.update(guard_actions(args.port, tmp, args.guard_actions))
            emit(result)
        finally:
            os.killpg(sandbox.pid, signal.SIGTERM)
            sandbox.wait(timeout=30)


if __name__ == "__main__":
    main()
