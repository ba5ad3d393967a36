"""Pages at N devices (default 1,000,000), measured in-process with Django's test client (server time only).

- `device_list_p95_ms`, `device_search_p95_ms` (IMEI prefix), `device_filter_p95_ms` (customer + state);
- `admin_changelist_p95_ms`: the Django admin changelist of the same model;
- `list_vs_admin_ratio` = admin_changelist_p95_ms / device_list_p95_ms (target ≥ 5);
- `job_poll_p50_ms` and `job_poll_queries` (target ≤ 3) for the HTMX job-progress fragment.

    python bench/pages.py [--devices 1000000] [--iterations 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, percentile, setup_django, workdir


def seed(n: int) -> dict[str, int]:
    from django.utils import timezone

    from kdp.models import Customer, Device
    from kdp.tasks import DEVICE_FIELDS
    from portal.db import db_datetime, insert_rows
    from portal.models import KnoxAccount

    account = KnoxAccount.objects.create(name="bench", environment="sandbox", reseller_id="1")
    customers = [Customer.objects.create(account=account, customer_id=f"C{i}", name=f"Customer {i}") for i in range(20)]
    now = db_datetime(timezone.now())
    states = ["registered"] * 8 + ["failed", "deleted"]
    fields = (*DEVICE_FIELDS, "customer", "registered_at")  # the columns planning fills, and two more

    def row(i: int) -> tuple:
        identifier = f"35{i:013d}"
        values = {
            "account": account.pk,
            "identifier": identifier,
            "kind": "imei",
            "imei": identifier,
            "model": "SM-A536B" if i % 3 == 0 else "SM-G991B",
            "state": states[i % 10],
            "customer": customers[i % 20].pk,
            "created_at": now,
            "updated_at": now,
            "registered_at": now,
        }
        return tuple(values.get(name, "") for name in fields)  # the other text columns empty

    rows = (row(i) for i in range(n))
    insert_rows(Device, fields, rows, batch=20000)
    from django.db import connection

    if connection.vendor == "sqlite":
        with connection.cursor() as c:
            c.execute("ANALYZE")
    return {"account": account.pk, "customer": customers[7].pk}


def measure(client, url: str, iterations: int) -> list[float]:
    client.get(url)  # warm caches (templates, session, query plans)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert r.status_code in (200, 204), (url, r.status_code)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    with workdir() as tmp:
        setup_django(tmp)
        from django.contrib.auth.models import Group, User
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        from portal.models import Job

        ids = seed(args.devices)
        viewer = User.objects.create_user("viewer", password="x")  # noqa: S106 - throw-away benchmark database
        viewer.groups.add(Group.objects.get(name="viewer"))
        root = User.objects.create_superuser("root", password="x")  # noqa: S106
        client = Client()
        client.force_login(viewer)
        admin = Client()
        admin.force_login(root)
        n = args.iterations
        listing = measure(client, "/kdp/devices/", n)
        search = measure(client, "/kdp/devices/?q=35000004", n)
        filtered = measure(client, f"/kdp/devices/?customer={ids['customer']}&state=registered", n)
        changelist = measure(admin, "/admin/kdp/device/", max(5, n // 4))
        job = Job.objects.create(kind="kdp.upload", total=100, status=Job.Status.RUNNING)
        url = f"/jobs/{job.pk}/progress/?v={job.version}"
        poll = measure(client, url, n)
        with CaptureQueriesContext(connection) as queries:
            client.get(url, headers={"HX-Request": "true"})
        p95 = {
            name: percentile(v, 95)
            for name, v in (("list", listing), ("search", search), ("filter", filtered), ("admin", changelist))
        }
        emit(
            {
                "device_list_p95_ms": round(p95["list"], 1),
                "device_search_p95_ms": round(p95["search"], 1),
                "device_filter_p95_ms": round(p95["filter"], 1),
                "admin_changelist_p95_ms": round(p95["admin"], 1),
                "list_vs_admin_ratio": round(p95["admin"] / p95["list"], 1),
                "job_poll_p50_ms": round(percentile(poll, 50), 2),
                "job_poll_queries": len(queries.captured_queries),
                "pages_devices": args.devices,
                "pages_database": connection.vendor,
            }
        )


if __name__ == "__main__":
    main()
