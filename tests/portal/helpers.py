"""Builders the portal tests share (and some service tests use): htmx lookups, the URL map and a world of one
object per route, production-like settings for child processes, and uploads caught mid-parse."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html import unescape
from typing import Any

from cryptography.fernet import Fernet
from django.contrib import admin
from django.db.models import Model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from portal.models import Job, KnoxAccount, Upload
from tests.base import ROOT
from tests.data.hostile.make_corpus import imei
from tests.kdp.helpers import ready_account

HTMX = {"HX-Request": "true"}


def ask(
    client: Client, url: str, data: dict[str, Any], capture: Callable[..., Any], *, htmx: bool = True
) -> tuple[Any, Job, str]:
    """POST a lookup form as a page does, let the worker run the queued job (django-q2's sync mode, on commit),
    then fetch the answer as the page does once `jobFinished` fires.

    Returns (the POST's response, the job, the answer's HTML). The POST's response is the one the browser got
    before any worker ran: the job in it is still queued."""
    before = set(Job.objects.values_list("pk", flat=True))
    with capture(execute=True):
        r = client.post(url, data, headers=HTMX if htmx else {})
    job = Job.objects.exclude(pk__in=before).get()
    answer = client.get(f"/jobs/{job.pk}/result/", headers=HTMX)
    assert answer.status_code == 200, answer.status_code
    return r, job, unescape(answer.content.decode())


def assert_following(html: str, job: Job) -> None:
    """The page's answer to the POST: the job queued, its progress polled, its answer fetched when it ends."""
    assert "<html" not in html
    assert f'hx-get="/jobs/{job.pk}/progress/?v=' in html and 'hx-trigger="every 2s"' in html
    assert f'hx-get="/jobs/{job.pk}/result/" hx-trigger="jobFinished from:body"' in html
    assert 'class="badge badge-queued">Queued<' in html


OUR_NAMESPACES = ("portal", "kdp", "guard", "efota")


def iter_patterns(patterns=None, prefix: str = "", ns: str = ""):
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(p, URLResolver):
            child_ns = ":".join(filter(None, [ns, p.namespace])) if p.namespace else ns
            yield from iter_patterns(p.url_patterns, prefix + str(p.pattern), child_ns)
        elif isinstance(p, URLPattern):
            name = f"{ns}:{p.name}" if ns and p.name else (p.name or "")
            yield prefix + str(p.pattern), name, p


def concrete(route: str, ids: dict[str, int]) -> str:
    """Turn a route (path converters or admin's regexes) into a URL that resolves."""
    pk = str(ids.get("pk", 1))
    route = re.sub(r"<int:\w+>", pk, route)
    route = re.sub(r"<path:\w+>", pk, route)
    route = re.sub(r"<(str|slug):\w+>", "x", route)
    route = re.sub(r"\(\?P<app_label>([a-z_]+)[^)]*\)", r"\1", route)
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "x", route)
    route = re.sub(r"<\w+>", pk, route)  # the default converter (the admin's auth/user/<id>/password/)
    route = route.replace("^", "").replace("$", "").replace("\\", "")
    return "/" + route


def admin_route(name: str) -> tuple[type[Model], str] | None:
    """(model, page) of a Django admin model page ("admin:portal_job_change" -> (Job, "change")), else None."""
    if not name.startswith("admin:"):
        return None
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}_"
        if name.startswith(prefix):
            return model, name[len(prefix) :]
    return None


@dataclass
class World:
    """One object of each kind the routes with a primary key need, so that every URL pattern resolves to a real
    page (tests/portal/test_access.py and test_security.py)."""

    account: KnoxAccount
    job: Job
    ids: dict[str, int]  # route name word -> primary key (first matching word wins)

    def pk_for(self, name: str) -> int:
        found = admin_route(name)
        if found is not None:
            # Admin pages: an existing object of the page's own model when there is one.
            pk = found[0]._default_manager.order_by("pk").values_list("pk", flat=True).first()
            return pk if pk is not None else self.account.pk
        return next((v for word, v in self.ids.items() if word in name), self.account.pk)

    def urls(self) -> Iterator[tuple[str, str, URLPattern]]:
        """(concrete URL, route name, pattern) for every URL pattern of the project."""
        for route, name, pattern in iter_patterns():
            url = concrete(route, {"pk": self.pk_for(name)})
            if name == "admin:autocomplete":
                url += "?app_label=portal&model_name=job&field_name=account"  # it refuses a request without them
            yield url, name, pattern


def build_world() -> World:
    from django_q.models import Schedule

    from guard.models import GuardDevice
    from kdp.models import Customer, Device, Transaction
    from portal.models import Upload

    account = KnoxAccount.objects.create(name="Acme", environment="sandbox")
    job = Job.objects.create(kind="kdp.upload", account=account)
    customer = Customer.objects.create(account=account, customer_id="C1", name="Cust")
    upload = Upload.objects.create(account=account, filename="f.csv", file="kdp/f.csv", status="ready")
    device = Device.objects.create(account=account, identifier="359221145350335", kind="imei", customer=customer)
    tx = Transaction.objects.create(
        account=account,
        job=job,
        sequence=1,
        operation="upload",
        generation="gen2",
        customer=customer,
        device_type="IMEI",
    )
    schedule = Schedule.objects.create(func="kdp.tasks.scheduled_reconcile", name="KDP reconcile: account x")
    guard_device = GuardDevice.objects.create(account=account, device_uid="359221145350335")
    guard_upload = Upload.objects.create(
        account=account, service="guard", operation="guard", filename="g.csv", file="guard/g.csv", status="ready"
    )
    # A lookup a viewer may ask for, answered (portal:lookup_result shows lookups only).
    lookup = Job.objects.create(
        kind="efota.firmware",
        account=account,
        status=Job.Status.SUCCEEDED,
        params={"customer_id": "C1", "licence": "L1", "model": "M", "sales_code": "S", "current": ""},
        result={"versions": []},
    )
    ids = {
        "lookup": lookup.pk,
        "guard:device": guard_device.pk,
        "guard:bulk": guard_upload.pk,
        "job": job.pk,
        "upload": upload.pk,
        "device": device.pk,
        "transaction": tx.pk,
        "unschedule": schedule.pk,
        "account": account.pk,
        "customers": account.pk,
    }
    return World(account=account, job=job, ids=ids)


PRODUCTION = {
    "DEBUG": "False",
    "SECRET_KEY": "x" * 20 + "-production-like-secret-key-for-tests-only-0123456789",
    "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "ALLOWED_HOSTS": "portal.example.com",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEY", "FIELD_ENCRYPTION_KEYS")
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def devices_csv(n: int, *, header: str = "IMEI,Serial Number") -> bytes:
    return (header + "\n" + "".join(f"{imei(i)},R{i:010d}\n" for i in range(n))).encode()


def parsing_upload(content: bytes, filename: str = "devices.csv") -> Upload:
    """An upload as the upload view leaves it: saved, with a parse job, PARSING."""
    from django.core.files.base import ContentFile

    account = ready_account()
    upload = Upload(account=account, filename=filename)
    upload.file.save(filename, ContentFile(content), save=False)
    upload.save()
    job = Job.objects.create(kind="kdp.parse", account=account, params={"upload": upload.pk})
    Upload.objects.filter(pk=upload.pk).update(parse_job=job, status=Upload.Status.PARSING)
    upload.refresh_from_db()
    return upload
