"""The customer list (with KME profile aliases) and the refresh job that syncs it from Knox."""

from __future__ import annotations

import re
from html import unescape

from kdp.models import Customer, ProfileAlias
from kdp.tasks import sync_customers
from portal.models import AuditEvent, Job, KnoxAccount
from tests.base import BaseTestCase, make_user
from tests.kdp.helpers import ready_account


class CustomersPageTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account("Acme Mobile")
        self.cafes = Customer.objects.create(
            account=self.acme, customer_id="4600000001", name="Harbour Cafés", status="Verified", device_count=1234
        )
        for name in ("Default", "Kiosk"):
            ProfileAlias.objects.create(customer=self.cafes, name=name, profile_id=f"p-{name}")
        Customer.objects.create(account=self.acme, customer_id="4600000002", name="New Bakery", status="Pending")
        Customer.objects.create(account=self.acme, customer_id="4600000003", name="Gone Ltd", present_in_knox=False)
        self.unready = KnoxAccount.objects.create(name="Half set up", environment="sandbox", auth_mode="oauth")
        self.url = "/kdp/customers/"
        self.refresh_url = f"/kdp/customers/{self.acme.pk}/refresh/"

    def test_it_lists_customers_with_their_alias_badges(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url)
        html = unescape(r.content.decode())
        assert "Harbour Cafés" in html and "<code>4600000001</code>" in html and "1,234" in html
        assert re.findall(r'<span class="badge" title="Knox profile ID p-\w+">(\w+)</span>', html) == [
            "Default",
            "Kiosk",
        ]
        assert '<span class="badge badge-partial">Pending</span>' in html
        assert "Gone Ltd</a> (no longer in Knox)" in html
        assert f'href="/kdp/devices/?customer={self.cafes.pk}"' in html
        assert "Refresh from Knox" not in html  # a viewer cannot queue jobs

    def test_it_offers_a_refresh_only_for_ready_accounts(self):
        self.client.force_login(self.operator)
        html = unescape(self.client.get(self.url).content.decode())
        assert f'action="{self.refresh_url}"' in html
        assert f'action="/kdp/customers/{self.unready.pk}/refresh/"' not in html
        assert "Not ready for KDP: needs the OAuth client ID and secret, the reseller ID." in html

    def test_it_queues_a_refresh_job(self):
        self.client.force_login(self.operator)
        r = self.client.post(self.refresh_url)
        job = Job.objects.get(kind="kdp.customers")
        self.assertRedirects(r, f"/kdp/jobs/{job.pk}/", fetch_redirect_response=False)
        assert (job.account, job.created_by, job.status, job.func) == (
            self.acme, self.operator, Job.Status.QUEUED, "kdp.tasks.sync_customers"
        )  # fmt: skip
        assert AuditEvent.objects.filter(action="kdp.customers_refresh", target_id=str(job.pk)).exists()
        self.assertContains(self.client.get(r["Location"]), f"Job #{job.pk} is refreshing the customers of Acme Mobile")

    def test_it_explains_an_account_that_cannot_call_kdp(self):
        self.client.force_login(self.operator)
        r = self.client.post(f"/kdp/customers/{self.unready.pk}/refresh/", follow=True)
        self.assertContains(r, "Half set up cannot call KDP yet: it needs the OAuth client ID and secret")
        assert not Job.objects.exists()

    def test_it_404s_for_an_unknown_or_inactive_account(self):
        KnoxAccount.objects.filter(pk=self.unready.pk).update(is_active=False)
        self.client.force_login(self.operator)
        assert self.client.post(f"/kdp/customers/{self.unready.pk}/refresh/").status_code == 404
        assert self.client.post(f"/kdp/customers/{self.acme.pk + 100}/refresh/").status_code == 404

    def test_the_refresh_is_post_only(self):
        self.client.force_login(self.operator)
        assert self.client.get(self.refresh_url).status_code == 405
        assert self.client.post(self.url).status_code == 405
        assert not Job.objects.exists()

    def test_a_viewer_cannot_refresh(self):
        self.client.force_login(self.viewer)
        assert self.client.post(self.refresh_url).status_code == 403
        assert not Job.objects.exists()

    def test_it_needs_a_login_and_the_role(self):
        self.assertRedirects(self.client.get(self.url), "/login/?next=/kdp/customers/", fetch_redirect_response=False)
        r = self.client.post(self.refresh_url)
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        assert not Job.objects.exists()


class RefreshFromThePreviewTestCase(BaseTestCase):
    """Item 9: a refresh asked for on a spreadsheet's preview keeps the staff there (htmx: progress in the page,
    then the customer choices are read again)."""

    def setUp(self) -> None:
        super().setUp()
        from tests.base import fresh_imeis
        from tests.kdp.helpers import imei_csv, make_upload

        self.acme = ready_account("Acme Mobile")
        self.upload = make_upload(self.acme, imei_csv(fresh_imeis(2, "35877798")), "order.csv")
        self.refresh_url = f"/kdp/customers/{self.acme.pk}/refresh/"
        self.preview = f"/kdp/uploads/{self.upload.pk}/"
        self.client.force_login(self.operator)

    def test_the_preview_offers_a_refresh_that_stays_on_the_page(self):
        r = self.client.get(self.preview)
        self.assertContains(r, f'hx-post="{self.refresh_url}" hx-target="#customer-refresh"')
        self.assertContains(r, f'<input type="hidden" name="upload" value="{self.upload.pk}">', html=True)
        self.assertContains(r, 'href="#refresh-customers"')  # "no customers yet" points at it

    def test_htmx_queues_the_refresh_and_shows_its_progress_in_the_page(self):
        r = self.client.post(self.refresh_url, {"upload": self.upload.pk}, headers={"HX-Request": "true"})
        job = Job.objects.get(kind="kdp.customers")
        assert r.status_code == 200
        self.assertNotContains(r, "<html")
        self.assertContains(r, f'id="job-{job.pk}-progress"')
        self.assertContains(r, f'hx-get="/jobs/{job.pk}/progress/?v=')  # polls, then fires jobFinished
        self.assertContains(r, 'hx-trigger="jobFinished from:body" hx-select="#customer-choice"')
        self.assertContains(r, "<dt>Customers</dt>")
        self.assertNotContains(r, "<dt>Devices</dt>")

    def test_without_javascript_it_returns_to_the_preview(self):
        r = self.client.post(self.refresh_url, {"upload": self.upload.pk})
        self.assertRedirects(r, self.preview, fetch_redirect_response=False)
        job = Job.objects.get(kind="kdp.customers")
        self.assertContains(self.client.get(self.preview), f"Job #{job.pk} is refreshing the customers of Acme Mobile")

    def test_it_refuses_a_spreadsheet_of_another_account_or_not_a_number(self):
        other = ready_account("Other")
        assert self.client.post(f"/kdp/customers/{other.pk}/refresh/", {"upload": self.upload.pk}).status_code == 404
        assert self.client.post(self.refresh_url, {"upload": "x"}).status_code == 400
        assert not Job.objects.filter(kind="kdp.customers").exists()

    def test_an_account_not_ready_says_why_in_the_page(self):
        self.acme.set_secret("oauth_client_secret", "")
        self.acme.save()
        r = self.client.post(self.refresh_url, {"upload": self.upload.pk}, headers={"HX-Request": "true"})
        self.assertContains(r, "cannot call KDP yet")
        assert not Job.objects.filter(kind="kdp.customers").exists()

    def test_the_refresh_jobs_page_counts_customers_not_devices(self):
        job = Job.objects.create(kind="kdp.customers", account=self.acme, title="Refresh customers of Acme Mobile")
        job.set_total(5)
        r = self.client.get(f"/kdp/jobs/{job.pk}/")
        self.assertContains(r, "<dt>Customers</dt><dd>5</dd>", html=True)
        self.assertNotContains(r, "<dt>Devices</dt>")


def test_a_refresh_job_brings_names_and_aliases_back_in_line_with_knox(client, synced, knox_sandbox):
    knox = {c["customerId"]: c for c in knox_sandbox.credentials["customers"]}
    first = Customer.objects.filter(account=synced).exclude(status="Pending").order_by("name").first()
    knox_aliases = set(knox[first.customer_id]["profileAliases"])
    # The portal's copy drifted: a stale name, an alias deleted in Knox, one added in Knox, a customer Knox dropped.
    Customer.objects.filter(pk=first.pk).update(name="Old name")
    ProfileAlias.objects.create(customer=first, name="Removed in Knox")
    first.aliases.filter(name=sorted(knox_aliases)[0]).delete()
    Customer.objects.create(account=synced, customer_id="4611111111", name="Closed account")

    operator = make_user("olivia", "operator")
    client.force_login(operator)
    r = client.post(f"/kdp/customers/{synced.pk}/refresh/")
    job = Job.objects.get(kind="kdp.customers", created_by=operator)
    assert r["Location"] == f"/kdp/jobs/{job.pk}/"
    sync_customers(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.succeeded == len(knox), job.error_summary

    first.refresh_from_db()
    assert first.name == knox[first.customer_id]["name"]
    assert set(first.aliases.values_list("name", flat=True)) == knox_aliases
    assert not Customer.objects.get(customer_id="4611111111").present_in_knox
    html = unescape(client.get("/kdp/customers/").content.decode())
    assert knox[first.customer_id]["name"] in html and "Old name" not in html and "Removed in Knox" not in html
    assert "Closed account</a> (no longer in Knox)" in html
    for alias in knox_aliases:
        assert f">{alias}</span>" in html
    assert '<span class="badge badge-succeeded">Succeeded</span>' in client.get(f"/kdp/jobs/{job.pk}/").content.decode()
