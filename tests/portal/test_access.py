"""Every URL pattern, walked as each persona. A view added without an access rule fails here."""

from __future__ import annotations

import re

from django.urls import URLPattern, URLResolver, get_resolver

from portal.models import Job, KnoxAccount
from tests.base import BaseTestCase

PUBLIC = {"login", "healthz", "admin:login"}
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
    route = route.replace("^", "").replace("$", "").replace("\\", "")
    return "/" + route


class AccessTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        from django_q.models import Schedule

        from kdp.models import Customer, Device, Transaction
        from portal.models import Upload

        self.account = KnoxAccount.objects.create(name="Acme", environment="sandbox")
        self.job = Job.objects.create(kind="kdp.upload", account=self.account)
        customer = Customer.objects.create(account=self.account, customer_id="C1", name="Cust")
        upload = Upload.objects.create(account=self.account, filename="f.csv", file="kdp/f.csv", status="ready")
        device = Device.objects.create(
            account=self.account, identifier="359221145350335", kind="imei", customer=customer
        )
        tx = Transaction.objects.create(account=self.account, job=self.job, sequence=1, operation="upload", generation="gen2",
                                        customer=customer, device_type="IMEI")  # fmt: skip
        schedule = Schedule.objects.create(func="kdp.tasks.scheduled_reconcile", name="KDP reconcile: account x")
        from guard.models import GuardDevice

        guard_device = GuardDevice.objects.create(account=self.account, device_uid="359221145350335")
        guard_upload = Upload.objects.create(
            account=self.account,
            service="guard",
            operation="guard",
            filename="g.csv",
            file="guard/g.csv",
            status="ready",
        )
        # Which object each named route with a primary key needs (first matching word wins).
        self.ids = {"guard:device": guard_device.pk, "guard:bulk": guard_upload.pk, "job": self.job.pk, "upload": upload.pk, "device": device.pk, "transaction": tx.pk,
                    "unschedule": schedule.pk, "account": self.account.pk, "customers": self.account.pk}  # fmt: skip

    def urls(self):
        for route, name, pattern in iter_patterns():
            pk = next((v for word, v in self.ids.items() if word in name), self.account.pk)
            yield concrete(route, {"pk": pk}), name, pattern

    def test_anonymous_users_reach_only_login_healthz_and_static(self):
        served = []
        for url, name, _ in self.urls():
            for method in ("get", "post"):
                r = getattr(self.client, method)(url)
                if r.status_code < 300 and name not in PUBLIC:
                    served.append((method, url, r.status_code))
                if name not in PUBLIC:
                    assert r.status_code in (302, 403, 404, 405), (method, url, r.status_code)
                    if r.status_code == 302:
                        assert "/login/" in r["Location"], (method, url, r["Location"])
        assert served == []
        assert self.client.get("/static/css/portal.css").status_code == 200

    def test_every_portal_view_declares_its_permission(self):
        missing = []
        for _, name, pattern in iter_patterns():
            if name.split(":")[0] in OUR_NAMESPACES and not hasattr(pattern.callback, "required_perm"):
                missing.append(name)
        assert missing == []

    def test_viewer_gets_403_on_every_state_changing_view_and_nothing_is_queued(self):
        self.client.force_login(self.viewer)
        checked = 0
        for url, name, pattern in self.urls():
            perm = getattr(pattern.callback, "required_perm", None)
            if name.split(":")[0] not in OUR_NAMESPACES or perm in (None, "portal.access_portal"):
                continue
            r = self.client.post(url, {"name": "x"})
            assert r.status_code == 403, (url, r.status_code)
            checked += 1
        assert checked >= 5
        assert Job.objects.count() == 1 and KnoxAccount.objects.count() == 1

    def test_viewer_reads_every_page(self):
        self.client.force_login(self.viewer)
        for url, _name, pattern in self.urls():
            if getattr(pattern.callback, "required_perm", None) == "portal.access_portal":
                r = self.client.get(url, follow=True)
                assert r.status_code in (200, 400), (url, r.status_code)

    def test_outsider_without_a_role_is_refused_everywhere(self):
        self.client.force_login(self.outsider)
        for url, name, _pattern in self.urls():
            if name.split(":")[0] in OUR_NAMESPACES:
                assert self.client.get(url).status_code in (403, 405), url

    def test_operator_cannot_manage_accounts(self):
        self.client.force_login(self.operator)
        assert self.client.get("/accounts/new/").status_code == 403
        assert self.client.post(f"/accounts/{self.account.pk}/test/").status_code == 403

    def test_admin_site_needs_staff(self):
        self.client.force_login(self.operator)
        r = self.client.get("/admin/")
        assert r.status_code == 302 and "/admin/login/" in r["Location"]
        self.client.force_login(self.admin)
        assert self.client.get("/admin/").status_code == 200
        assert self.client.get("/admin/portal/auditevent/").status_code == 200

    def test_state_changing_views_refuse_get(self):
        self.client.force_login(self.admin)
        for url in (
            f"/jobs/{self.job.pk}/cancel/",
            f"/accounts/{self.account.pk}/keys/",
            f"/accounts/{self.account.pk}/test/",
        ):
            assert self.client.get(url).status_code == 405, url
