"""Reconcile: the page, running a comparison with Knox, its drift report, and the daily schedule."""

from __future__ import annotations

import io
import re
from html import unescape

import pytest
import python_calamine
from django.db.models import Count
from django.test import Client
from django_q.models import Schedule

from kdp.models import Customer, Device, ReconcileItem
from kdp.tasks import run_reconcile
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, fresh_imeis, make_user
from tests.kdp.helpers import ready_account

SCHEDULED_FUNC = "kdp.tasks.scheduled_reconcile"


class ReconcilePageTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account("Acme Mobile")
        self.done = Job.objects.create(kind="kdp.reconcile", account=self.acme, title="Reconcile Acme Mobile with Knox")
        self.done.claim("w")
        Job.objects.filter(pk=self.done.pk).update(succeeded=40, params={"drift": 7})
        self.done.finish()
        self.url = "/kdp/reconcile/"

    def test_it_lists_reports_and_offers_a_run_and_a_schedule_to_an_operator(self):
        Schedule.objects.create(
            name=f"KDP reconcile: account {self.acme.pk}", func=SCHEDULED_FUNC, args=repr((self.acme.pk,)),
            schedule_type=Schedule.DAILY,
        )  # fmt: skip
        self.client.force_login(self.operator)
        html = unescape(self.client.get(self.url).content.decode())
        assert f'<a href="/kdp/jobs/{self.done.pk}/">{self.done.pk}</a>' in html
        assert f'<td>40</td><td><a href="/kdp/reconcile/jobs/{self.done.pk}/">7</a></td>' in html
        assert 'action="/kdp/reconcile/run/"' in html and 'action="/kdp/reconcile/schedule/"' in html
        assert f"KDP reconcile: account {self.acme.pk}" in html
        schedule = Schedule.objects.get(func=SCHEDULED_FUNC)
        assert f'action="/kdp/reconcile/schedule/{schedule.pk}/delete/"' in html

    def test_it_shows_reports_but_no_forms_to_a_viewer(self):
        self.client.force_login(self.viewer)
        html = self.client.get(self.url).content.decode()
        assert f'<a href="/kdp/jobs/{self.done.pk}/">' in html
        assert "/kdp/reconcile/run/" not in html and "/kdp/reconcile/schedule/" not in html

    def test_it_needs_a_login_the_role_and_get(self):
        self.assertRedirects(self.client.get(self.url), "/login/?next=/kdp/reconcile/", fetch_redirect_response=False)
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.post(self.url).status_code == 405


class ReconcileDifferencesTestCase(BaseTestCase):
    """A report's differences on screen: counts per kind, filter by kind and identifier prefix, paged, all in the
    URL."""

    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account("Acme Mobile")
        self.job = Job.objects.create(kind="kdp.reconcile", account=self.acme, succeeded=120, params={"drift": 63})
        items = [
            ReconcileItem(job=self.job, identifier=f"3592211453{n:05d}", drift="knox_only", knox_customer_id="K1")
            for n in range(60)
        ]
        items += [
            ReconcileItem(job=self.job, identifier="R58N123ABCD", drift="local_only", local_customer_id="C1"),
            ReconcileItem(job=self.job, identifier="359221145399998", drift="customer", knox_customer_id="K2",
                          local_customer_id="C1", model="SM-G991B"),
            ReconcileItem(job=self.job, identifier="359221145399999", drift="customer", knox_customer_id="K2",
                          local_customer_id="C1"),
        ]  # fmt: skip
        ReconcileItem.objects.bulk_create(items)
        self.url = f"/kdp/reconcile/jobs/{self.job.pk}/"

    def identifiers(self, html: str) -> list[str]:
        return re.findall(r'<tr class="drift-\w+"><td><code>([\w]+)</code>', html)

    def test_it_lists_every_difference_with_counts_per_kind(self):
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(self.url).content.decode())
        assert "<strong>60</strong> in knox, not in the portal" in html
        assert "<strong>1</strong> in the portal, not in knox" in html
        assert "<strong>2</strong> different customer" in html
        assert "63 differences." in html
        shown = self.identifiers(html)
        # Ordered by kind, then identifier: the two customer differences first, then the first Knox-only ones.
        assert len(shown) == 50 and shown[:3] == ["359221145399998", "359221145399999", "359221145300000"]
        assert "<code>K2</code>" in html and "SM-G991B" in html
        assert f'href="/kdp/jobs/{self.job.pk}/report.xlsx"' in html

    def test_it_pages_with_a_cursor_in_the_url(self):
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(self.url).content.decode())
        next_link = re.search(r'<a href="(/kdp/reconcile/jobs/\d+/\?after=[^"]+)"', html).group(1)
        assert next_link == f"{self.url}?after=knox_only%3A359221145300047"
        html = unescape(self.client.get(next_link).content.decode())
        shown = self.identifiers(html)
        assert shown[0] == "359221145300048" and shown[-1] == "R58N123ABCD" and len(shown) == 13
        assert re.search(rf'<a href="{self.url}\??" [^>]*>First page</a>', html)
        assert "Next" not in html.split('class="pager"')[1].split("</nav>")[0]

    def test_it_filters_by_kind_and_identifier_prefix(self):
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(self.url + "?drift=local_only").content.decode())
        assert self.identifiers(html) == ["R58N123ABCD"]
        assert "1 of 63 differences match" in html
        assert '<option value="local_only" selected>' in html
        html = unescape(self.client.get(self.url + "?q=35922114530005").content.decode())
        assert len(self.identifiers(html)) == 10 and "10 of 63 differences match" in html
        html = unescape(self.client.get(self.url + "?drift=customer&q=nothing").content.decode())
        assert self.identifiers(html) == [] and "No difference matches." in html

    def test_htmx_gets_the_table_alone_and_the_url_is_pushed(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url + "?drift=customer", headers={"HX-Request": "true", "HX-Target": "differences"})
        html = r.content.decode()
        assert "<html" not in html and html.lstrip().startswith('<section id="differences"')
        assert 'hx-push-url="true"' in html and len(self.identifiers(html)) == 2

    def test_a_bad_filter_or_position_is_refused(self):
        self.client.force_login(self.viewer)
        for query in ("?drift=nonsense", "?after=knox_only", "?after=nonsense:1", "?q=" + "9" * 21):
            with self.subTest(query=query):
                assert self.client.get(self.url + query).status_code == 400

    def test_a_job_that_is_not_a_reconcile_goes_to_its_own_page(self):
        other = Job.objects.create(kind="kdp.upload", account=self.acme)
        self.client.force_login(self.viewer)
        r = self.client.get(f"/kdp/reconcile/jobs/{other.pk}/")
        self.assertRedirects(r, f"/kdp/jobs/{other.pk}/", fetch_redirect_response=False)
        assert self.client.get("/kdp/reconcile/jobs/999999/").status_code == 404

    def test_an_empty_report_says_the_portal_and_knox_agree(self):
        empty = Job.objects.create(kind="kdp.reconcile", account=self.acme, params={"drift": 0})
        self.client.force_login(self.viewer)
        assert (
            "No difference: the portal and Knox agree."
            in self.client.get(f"/kdp/reconcile/jobs/{empty.pk}/").content.decode()
        )

    def test_it_needs_a_login_the_role_and_get(self):
        r = self.client.get(self.url)
        assert r.status_code == 302 and "/login/" in r["Location"]
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        self.client.force_login(self.viewer)
        assert self.client.post(self.url).status_code == 405


class ReconcileRunTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account("Acme Mobile")
        self.url = "/kdp/reconcile/run/"

    def test_it_queues_a_reconcile_job(self):
        self.client.force_login(self.operator)
        r = self.client.post(self.url, {"account": self.acme.pk})
        job = Job.objects.get(kind="kdp.reconcile")
        self.assertRedirects(r, f"/kdp/jobs/{job.pk}/", fetch_redirect_response=False)
        assert (job.account, job.created_by, job.func) == (self.acme, self.operator, "kdp.tasks.run_reconcile")
        assert AuditEvent.objects.get(action="kdp.reconcile", target_id=str(job.pk)).summary["via"] == "portal"
        page = self.client.get(r["Location"]).content.decode()
        assert "The comparison is still running." in page

    def test_it_refuses_a_missing_or_unknown_account(self):
        # The page only offers existing accounts, so anything else is a malformed request (style D2: 400).
        self.client.force_login(self.operator)
        assert self.client.post(self.url).status_code == 400
        assert self.client.post(self.url, {"account": self.acme.pk + 100}).status_code == 400
        assert not Job.objects.exists()

    def test_it_does_not_crash_on_a_non_numeric_account(self):
        client = Client(raise_request_exception=False)
        client.force_login(self.operator)
        assert client.post(self.url, {"account": "acme"}).status_code == 400

    def test_it_is_post_only_and_forbidden_to_a_viewer(self):
        self.client.force_login(self.operator)
        assert self.client.get(self.url).status_code == 405
        self.client.force_login(self.viewer)
        assert self.client.post(self.url, {"account": self.acme.pk}).status_code == 403
        self.client.logout()
        r = self.client.post(self.url, {"account": self.acme.pk})
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        assert not Job.objects.exists()


class ReconcileScheduleTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account("Acme Mobile")
        self.url = "/kdp/reconcile/schedule/"
        self.name = f"KDP reconcile: account {self.acme.pk}"

    def test_it_schedules_a_daily_reconcile(self):
        self.client.force_login(self.operator)
        r = self.client.post(self.url, {"account": self.acme.pk, "hour": 3}, follow=True)
        self.assertContains(r, "Acme Mobile will be reconciled with Knox every day at 03:00 UTC.")
        schedule = Schedule.objects.get(name=self.name)
        assert (schedule.func, schedule.args, schedule.cron, schedule.repeats) == (
            SCHEDULED_FUNC, f"({self.acme.pk},)", "0 3 * * *", -1
        )  # fmt: skip
        self.client.post(self.url, {"account": self.acme.pk, "hour": 22})
        assert Schedule.objects.get(name=self.name).cron == "0 22 * * *"  # one schedule per account, updated

    def test_it_refuses_an_impossible_hour_or_account(self):
        self.client.force_login(self.operator)
        for data in ({"account": self.acme.pk, "hour": 24}, {"account": self.acme.pk, "hour": "3am"}):
            r = self.client.post(self.url, data, follow=True)
            self.assertContains(r, "Choose an hour between 0 and 23")
        assert self.client.post(self.url, {"hour": 3}).status_code == 400  # the page always sends an account
        assert not Schedule.objects.filter(func=SCHEDULED_FUNC).exists()

    def test_it_removes_a_schedule(self):
        schedule = Schedule.objects.create(
            name=self.name, func=SCHEDULED_FUNC, args=repr((self.acme.pk,)), schedule_type=Schedule.DAILY
        )
        url = f"/kdp/reconcile/schedule/{schedule.pk}/delete/"
        self.client.force_login(self.viewer)
        assert self.client.post(url).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.get(url).status_code == 405
        r = self.client.post(url, follow=True)
        self.assertContains(r, "Daily reconcile removed.")
        assert not Schedule.objects.filter(pk=schedule.pk).exists()
        assert AuditEvent.objects.get(action="kdp.reconcile_unschedule").summary == {"schedule": self.name}

    def test_it_only_removes_reconcile_schedules(self):
        other = Schedule.objects.get(func="portal.tasks.resume_stale_jobs")
        self.client.force_login(self.operator)
        assert self.client.post(f"/kdp/reconcile/schedule/{other.pk}/delete/").status_code == 404
        assert Schedule.objects.filter(pk=other.pk).exists()

    def test_it_is_post_only_and_forbidden_to_a_viewer(self):
        self.client.force_login(self.operator)
        assert self.client.get(self.url).status_code == 405
        self.client.force_login(self.viewer)
        assert self.client.post(self.url, {"account": self.acme.pk, "hour": 3}).status_code == 403
        self.client.logout()
        assert self.client.post(self.url, {"account": self.acme.pk, "hour": 3}).status_code == 302
        assert not Schedule.objects.filter(func=SCHEDULED_FUNC).exists()


# --- against the sandbox ----------------------------------------------------------------------------------------


@pytest.fixture
def drifted(synced, knox_sandbox):
    """The sandbox account with the three kinds of drift:

    - Knox's demo customers hold 16 devices the portal has never seen (in Knox, not in the portal);
    - the portal has one registered device Knox doesn't know (in the portal, not in Knox);
    - the portal has one of customer B's devices registered to customer A (different customer).
    """
    demo = [c for c in knox_sandbox.credentials["customers"] if c["devices"]]
    a = Customer.objects.get(account=synced, customer_id=demo[0]["customerId"])
    moved = demo[1]["devices"][0]
    Device.objects.create(account=synced, identifier=moved, kind="imei", imei=moved, customer=a, state="registered")
    ghost = fresh_imeis(1, "35930000")[0]
    Device.objects.create(account=synced, identifier=ghost, kind="imei", imei=ghost, customer=a, state="registered")
    return {
        "account": synced,
        "in_knox": sum(len(c["devices"]) for c in demo),
        "moved": (moved, demo[1]["customerId"], a.customer_id),
        "ghost": ghost,
    }


def test_a_reconcile_run_reports_every_kind_of_drift(client, drifted):
    account = drifted["account"]
    client.force_login(make_user("olivia", "operator"))
    r = client.post("/kdp/reconcile/run/", {"account": account.pk})
    job = Job.objects.get(kind="kdp.reconcile")
    assert r["Location"] == f"/kdp/jobs/{job.pk}/"
    run_reconcile(job.pk)
    job.refresh_from_db()
    n = drifted["in_knox"]
    assert job.status == Job.Status.SUCCEEDED and job.succeeded == n, job.error_summary
    assert job.params["drift"] == (n - 1) + 1 + 1
    counts = dict(ReconcileItem.objects.filter(job=job).values_list("drift").annotate(n=Count("id")).order_by())
    assert counts == {"knox_only": n - 1, "local_only": 1, "customer": 1}
    moved, knox_customer, local_customer = drifted["moved"]
    assert ReconcileItem.objects.get(job=job, drift="customer").identifier == moved
    assert ReconcileItem.objects.get(job=job, drift="local_only").identifier == drifted["ghost"]

    page = unescape(client.get(f"/kdp/jobs/{job.pk}/").content.decode())
    drift = page[page.index("Differences with Knox") :]
    assert re.findall(r"<li>([\w ,]+): <strong>(\d+)</strong></li>", drift) == [
        ("Different customer", "1"), ("In Knox, not in the portal", str(n - 1)), ("In the portal, not in Knox", "1")
    ]  # fmt: skip
    assert f'href="/kdp/jobs/{job.pk}/report.xlsx"' in page
    assert f'<a href="/kdp/reconcile/jobs/{job.pk}/">Show the differences</a>' in page

    report = client.get(f"/kdp/jobs/{job.pk}/report.xlsx")
    assert f"reconcile-{job.pk}.xlsx" in report["Content-Disposition"]
    rows = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(b"".join(report.streaming_content)))
    rows = rows.get_sheet_by_index(0).to_python()
    assert rows[0] == ["IMEI / serial", "Difference", "Customer in Knox", "Customer in the portal", "Model"]
    assert len(rows) == 1 + (n - 1) + 2
    assert [moved, "Different customer", knox_customer, local_customer] == rows[1][:4]
    assert {row[1] for row in rows[1:]} == {
        "Different customer",
        "In Knox, not in the portal",
        "In the portal, not in Knox",
    }

    listing = unescape(client.get("/kdp/reconcile/").content.decode())
    assert f'<td>{n}</td><td><a href="/kdp/reconcile/jobs/{job.pk}/">{n + 1}</a></td>' in listing
    # The same differences on screen, filtered by kind.
    screen = unescape(client.get(f"/kdp/reconcile/jobs/{job.pk}/?drift=customer").content.decode())
    assert f"<td><code>{moved}</code></td><td>Different customer</td>" in screen
    assert f"<code>{knox_customer}</code>" in screen and f"<code>{local_customer}</code>" in screen
    assert f"1 of {n + 1} differences match" in screen
    assert Device.objects.get(account=account, identifier=moved).seen_in_knox_at is not None


def test_the_job_page_names_each_kind_of_drift_in_words(client, drifted):
    client.force_login(make_user("victor", "viewer"))
    job = Job.objects.create(kind="kdp.reconcile", account=drifted["account"])
    run_reconcile(job.pk)
    page = unescape(client.get(f"/kdp/jobs/{job.pk}/").content.decode())
    for label in ("In Knox, not in the portal", "In the portal, not in Knox", "Different customer"):
        assert label in page
