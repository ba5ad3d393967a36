"""Lists staff expect (issue 16, "Lists and forms"): every list shows its total, exact while that is cheap and an
estimate or a lower bound, said as such, when not (portal/lists.py); filters, search and page live in the URL."""

from __future__ import annotations

import datetime as dt
from html import unescape

import pytest
from django.db import connection
from django.test import RequestFactory

from efota.models import EfotaGroup, EfotaLicence
from guard.models import GuardUpload
from kdp.models import Customer, Device, Transaction
from portal import lists
from portal.lists import Total, approximate, list_context, page_query, total
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase
from tests.guard.helpers import guard_account, make_device
from tests.kdp.helpers import ready_account

ON_POSTGRES = connection.vendor == "postgresql"


class TotalTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        for i in range(8):
            Job.objects.create(kind="kdp.upload", title=f"Job {i}")

    def test_below_the_threshold_the_count_is_exact(self):
        assert total(Job.objects.all()) == Total(8, exact=True)
        n, exact = total(Job.objects.filter(title="Job 3"))  # unpacks as (n, exact)
        assert (n, exact) == (1, True)

    def test_the_threshold_is_found_with_a_limited_subquery(self):
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            total(Job.objects.select_related("account").order_by("-id"))
        assert len(queries) == 1 and "LIMIT 10001" in queries[0]["sql"]
        assert "ORDER BY" not in queries[0]["sql"]  # sorting changes nothing to a count

    @pytest.mark.skipif(ON_POSTGRES, reason="SQLite's fallback")
    def test_above_the_threshold_sqlite_counts_exactly_while_it_is_quick(self):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(lists, "EXACT_COUNT_LIMIT", 5)
            assert total(Job.objects.all()) == Total(8, exact=True)

    @pytest.mark.skipif(ON_POSTGRES, reason="SQLite's fallback")
    def test_above_the_threshold_a_slow_sqlite_count_gives_an_honest_lower_bound(self):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(lists, "EXACT_COUNT_LIMIT", 5)
            mp.setattr(lists, "COUNT_TIME_BUDGET", -1.0)  # every check finds the budget spent
            mp.setattr(lists, "PROGRESS_STEPS", 1)
            t = total(Job.objects.all())
        assert t == Total(5, exact=False, at_least=True)
        assert t.words("job") == "more than 5 jobs"
        # The interrupted count left the connection and the test's transaction usable.
        assert Job.objects.count() == 8

    @pytest.mark.skipif(ON_POSTGRES, reason="SQLite's fallback")
    def test_an_exact_sqlite_count_above_the_threshold_is_reused_as_an_estimate(self):
        from django.test.utils import CaptureQueriesContext

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(lists, "EXACT_COUNT_LIMIT", 5)
            assert total(Job.objects.all()) == Total(8, exact=True)
            Job.objects.create(kind="kdp.upload", title="Job 8")
            with CaptureQueriesContext(connection) as queries:
                again = total(Job.objects.all())
            # The count of a moment ago, said as an estimate; no second COUNT over the table.
            assert again == Total(8, exact=False) and again.words("job") == "about 8 jobs"
            assert not any("COUNT(*)" in q["sql"] and "LIMIT" not in q["sql"] for q in queries.captured_queries)
            # Other filters are counted afresh.
            assert total(Job.objects.exclude(title="Job 0")) == Total(8, exact=True)
            # A count that ran out of time is not kept.
            mp.setattr(lists, "COUNT_TIME_BUDGET", -1.0)
            mp.setattr(lists, "PROGRESS_STEPS", 1)
            assert total(Job.objects.filter(kind="kdp.upload")) == Total(5, exact=False, at_least=True)
            mp.setattr(lists, "COUNT_TIME_BUDGET", 5.0)
            assert total(Job.objects.filter(kind="kdp.upload")) == Total(9, exact=True)

    @pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL's planner estimate (DATABASE_URL=postgres://...)")
    def test_above_the_threshold_postgresql_gives_the_planner_estimate(self):
        with connection.cursor() as cursor:
            cursor.execute('ANALYZE "portal_job"')
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(lists, "EXACT_COUNT_LIMIT", 5)
            t = total(Job.objects.all())
        assert not t.exact and not t.at_least and t.n >= 6
        assert t.words("job").startswith("about ")

    @pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL's planner estimate (DATABASE_URL=postgres://...)")
    def test_the_planner_estimate_follows_the_filter(self):
        with connection.cursor() as cursor:
            cursor.execute('ANALYZE "portal_job"')
        assert lists.planner_estimate(Job.objects.all()) >= 1
        assert lists.planner_estimate(Job.objects.filter(pk=-1)) <= 1

    def test_it_says_estimates_as_estimates(self):
        assert Total(1, exact=True).words("job") == "1 job"
        assert Total(12345, exact=True).words("device") == "12,345 devices"
        assert Total(1_234_567, exact=False).words("device") == "about 1.2 million devices"
        assert Total(2_000_000, exact=False).words("device") == "about 2 million devices"
        assert Total(10_000, exact=False, at_least=True).words("device") == "more than 10,000 devices"
        assert approximate(12_345) == "12,000" and approximate(987) == "987"
        assert Total(2, exact=True).words("licence", "licences") == "2 licences"


class PageQueryTestCase(BaseTestCase):
    def test_the_next_and_first_pages_keep_every_filter(self):
        request = RequestFactory().get("/jobs/", {"kind": "kdp.", "q": "Harbour & co", "before": "90"})
        assert page_query(request, before=40) == "kind=kdp.&q=Harbour+%26+co&before=40"
        assert page_query(request, before=None) == "kind=kdp.&q=Harbour+%26+co"
        ctx = list_context(request, Job.objects.none(), singular="job", cursor="before", next_value=40)
        assert ctx["list_next_query"].endswith("before=40") and ctx["list_first_query"] == "kind=kdp.&q=Harbour+%26+co"
        assert ctx["list_total_words"] == "0 jobs"


class ListPagesTestCase(BaseTestCase):
    """Every list shows its total (of the whole filtered list, not of the page) and keeps its state in the URL."""

    def setUp(self) -> None:
        super().setUp()
        self.client.force_login(self.viewer)

    def text(self, url: str, params: dict[str, str] | None = None) -> str:
        r = self.client.get(url, params or {})
        assert r.status_code == 200, url
        return " ".join(unescape(r.content.decode()).split())

    def test_the_jobs_list_counts_filters_searches_and_pages_in_the_url(self):
        for i in range(53):
            Job.objects.create(kind="kdp.upload", title=f"Register devices {i}")
        Job.objects.create(kind="guard.lock", title="Lock 3")
        r = self.client.get("/jobs/", {"kind": "kdp.", "q": "register"})
        html = unescape(r.content.decode())
        assert "53 jobs" in html and "Lock 3" not in html and len(r.context["page"]) == 50
        next_query = r.context["list_next_query"]
        assert f'href="?{next_query}">Next page</a>' in html.replace("&amp;", "&")
        assert "kind=kdp." in next_query and "q=register" in next_query
        r2 = self.client.get(f"/jobs/?{next_query}")
        assert len(r2.context["page"]) == 3 and "53 jobs" in r2.content.decode()
        assert r2.context["list_next_query"] is None and r2.context["list_first_query"] == "kind=kdp.&q=register"

    def test_the_audit_log_counts_the_filtered_events(self):
        for _ in range(3):
            AuditEvent.objects.record("account.update")
        AuditEvent.objects.record("job.cancel")
        assert "3 events" in self.text("/audit/", {"action": "account."})

    def test_kdp_device_and_transaction_lists_count(self):
        account = ready_account()
        customer = Customer.objects.create(account=account, customer_id="4600000001", name="Harbour")
        for i in range(3):
            Device.objects.create(account=account, identifier=f"35100000000000{i}", kind="imei", customer=customer)
        Transaction.objects.create(
            account=account, job=Job.objects.create(kind="kdp.upload"), sequence=1, operation="upload",
            generation="gen2", customer=customer, device_type="IMEI", transaction_id="abc123",
        )  # fmt: skip
        assert "3 devices" in self.text("/kdp/devices/")
        assert "1 device" in self.text("/kdp/devices/", {"q": "351000000000001"})
        assert "1 transaction" in self.text("/kdp/transactions/", {"q": "abc"})
        assert "0 transactions" in self.text("/kdp/transactions/", {"q": "fff"})

    def test_device_lists_push_their_filters_and_pages_to_the_url(self):
        for url in ("/kdp/devices/", "/guard/devices/"):
            html = self.client.get(url).content.decode()
            assert 'id="device-filters"' in html and html.count('hx-push-url="true"') == 2, url

    def test_guard_device_and_upload_lists_count(self):
        account = guard_account()
        for n in range(1, 4):
            make_device(account, "Accepted", n)
        GuardUpload.objects.create(account=account, upload_id="up-1", device_count=3)
        assert "3 devices" in self.text("/guard/devices/")
        assert "1 upload" in self.text("/guard/uploads/")

    def test_efota_lists_count(self):
        account = ready_account()
        EfotaGroup.objects.create(account=account, customer_id="C1", group_id="FLEET-A", licence="L1")
        EfotaGroup.objects.create(account=account, customer_id="C1", group_id="FLEET-B", licence="L1")
        EfotaLicence.objects.create(account=account, customer_id="C1", key="L1", expiration_date=dt.date(2999, 1, 1))
        assert "2 groups" in self.text("/efota/groups/")
        assert "1 licence" in self.text("/efota/licences/")
