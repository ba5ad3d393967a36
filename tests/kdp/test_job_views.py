"""The KDP job page (per-device results), its report, retry, the portal's polling fragment for it, and the
Knox transaction pages.

Most tests build a finished job's records directly (fast, no Knox); one runs a real upload, retry and the pages
against the in-process sandbox.
"""

from __future__ import annotations

import json
import re
from html import unescape

import pytest

from kdp.models import Customer, Transaction, TransactionDevice
from kdp.tasks import run_transfer
from portal.models import AuditEvent, Job, Upload
from tests.base import BaseTestCase, fresh_imeis, make_user
from tests.kdp.helpers import finished_job, imei_csv, make_upload, ready_account, xlsx_rows

pytestmark = pytest.mark.usefixtures("quick_kdp")  # tests/conftest.py: no pacing, first poll sooner

# A failure a retry can fix (portal.knox.errors.is_retryable): Knox could not be reached.
NOT_SENT = ("NOT_SENT", "not sent", "not sent: The connection to Knox failed (refused or reset)")


def result_identifiers(html: str) -> list[str]:
    section = html[html.index('id="job-results"') :]
    return re.findall(r"<tr><td><code>(\w+)</code></td>", section)


class JobPageTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = ready_account()
        self.customer = Customer.objects.create(account=self.account, customer_id="4600000001", name="Harbour Cafés")
        self.ok = fresh_imeis(3, "35100000")
        self.bad = fresh_imeis(2, "35200000")
        self.job = finished_job(self.customer, user=self.operator, succeeded=self.ok, failed=self.bad)
        self.url = f"/kdp/jobs/{self.job.pk}/"
        self.report_url = f"/kdp/jobs/{self.job.pk}/report.xlsx"

    def test_it_shows_progress_facts_and_every_device(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url)
        html = r.content.decode()
        assert f"Job #{self.job.pk} · Register devices for Harbour Cafés" in unescape(html)
        assert result_identifiers(html) == [*self.ok, *self.bad]
        self.assertContains(r, "Partially failed")
        self.assertContains(r, "<dd>Kiosk</dd>")
        self.assertContains(r, '<code title="Knox&#x27;s message: DEVICE_ALREADY_EXISTS">4092100</code>')
        self.assertContains(r, "already registered in Knox")
        self.assertContains(r, f'href="{self.report_url}"')
        self.assertContains(r, 'hx-trigger="jobFinished from:body"')
        self.assertNotContains(r, 'hx-trigger="every 2s"')  # finished: nothing polls
        self.assertNotContains(r, "/retry/")  # a viewer gets no retry button

    def test_it_offers_no_retry_when_every_failure_is_permanent_and_says_why(self):
        self.client.force_login(self.operator)
        r = self.client.get(self.url)
        self.assertNotContains(r, "/retry/")  # Knox would refuse both again: already registered
        self.assertContains(r, "nothing to retry")
        self.assertContains(r, "2 already registered in Knox.")
        r = self.client.post(f"/kdp/jobs/{self.job.pk}/retry/", follow=True)
        self.assertContains(r, "only failures a retry can fix")
        assert not Job.objects.filter(retry_of=self.job).exists()

    def test_it_filters_by_outcome(self):
        self.client.force_login(self.viewer)
        assert result_identifiers(self.client.get(self.url, {"outcome": "failed"}).content.decode()) == self.bad
        assert result_identifiers(self.client.get(self.url, {"outcome": "succeeded"}).content.decode()) == self.ok
        assert result_identifiers(self.client.get(self.url, {"outcome": "pending"}).content.decode()) == []

    def test_it_shows_every_device_for_an_invalid_filter(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url, {"outcome": "exploded", "after": "x"})
        assert r.status_code == 200
        assert result_identifiers(r.content.decode()) == [*self.ok, *self.bad]

    def test_it_pages_the_results_by_id(self):
        first = TransactionDevice.objects.filter(job=self.job).order_by("id").first()
        self.client.force_login(self.viewer)
        r = self.client.get(self.url, {"after": first.pk})
        assert result_identifiers(r.content.decode()) == [*self.ok[1:], *self.bad]

    def test_it_returns_the_results_fragment_to_htmx(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url, {"outcome": "failed"}, headers={"HX-Request": "true", "HX-Target": "job-results"})
        assert r.status_code == 200 and b"<html" not in r.content
        assert r.content.lstrip().startswith(b'<section id="job-results"')
        assert re.findall(r"<tr><td><code>(\w+)</code></td>", r.content.decode()) == self.bad
        assert b'aria-current="true">Failed</a>' in r.content
        assert "HX-Request" in r["Vary"]

    def test_it_needs_a_login_and_the_role(self):
        self.assertRedirects(self.client.get(self.url), f"/login/?next={self.url}", fetch_redirect_response=False)
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        assert self.client.get(self.report_url).status_code == 403

    def test_it_is_get_only(self):
        self.client.force_login(self.operator)
        assert self.client.post(self.url).status_code == 405
        assert self.client.post(self.report_url).status_code == 405

    def test_it_404s_for_a_job_of_another_service(self):
        other = Job.objects.create(kind="guard.lock", title="Lock 3")
        self.client.force_login(self.viewer)
        assert self.client.get(f"/kdp/jobs/{other.pk}/").status_code == 404
        assert self.client.get(f"/kdp/jobs/{self.job.pk + 100}/").status_code == 404

    def test_it_downloads_the_report(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.report_url)
        assert r.status_code == 200 and f"job-{self.job.pk}-report.xlsx" in r["Content-Disposition"]
        rows = xlsx_rows(b"".join(r.streaming_content))
        assert rows[0][:4] == ["IMEI / serial", "Row in file", "Outcome", "Knox code"]
        assert [row[0] for row in rows[1:]] == [*self.ok, *self.bad]  # identifiers stay text
        failed = rows[-1]
        assert failed[2:4] == ["failed", "4092100"] and "already registered in Knox" in failed[5]
        assert AuditEvent.objects.filter(action="kdp.export", target_id=str(self.job.pk)).exists()


class JobProgressTestCase(BaseTestCase):
    """The portal's polled fragment as the KDP job page uses it."""

    def setUp(self) -> None:
        super().setUp()
        account = ready_account()
        customer = Customer.objects.create(account=account, customer_id="4600000001", name="Harbour Cafés")
        self.job = Job.objects.create(kind="kdp.upload", account=account, params={"customer": customer.pk}, total=4)
        self.job.claim("test-worker")
        self.url = f"/jobs/{self.job.pk}/progress/"
        self.client.force_login(self.viewer)

    def test_the_kdp_page_polls_the_portal_fragment(self):
        r = self.client.get(f"/kdp/jobs/{self.job.pk}/")
        self.assertContains(r, f'hx-get="{self.url}?v={self.job.version}"')
        self.assertContains(r, 'hx-trigger="every 2s"')

    def test_it_answers_204_while_nothing_changed(self):
        r = self.client.get(self.url, {"v": self.job.version}, headers={"HX-Request": "true"})
        assert r.status_code == 204 and r.content == b""

    def test_it_returns_the_fragment_when_the_job_moved(self):
        seen = self.job.version
        self.job.add_progress(succeeded=1)
        r = self.client.get(self.url, {"v": seen}, headers={"HX-Request": "true"})
        assert r.status_code == 200 and b"<html" not in r.content
        self.assertContains(r, "25%")
        self.assertContains(r, 'hx-trigger="every 2s"')
        assert "HX-Trigger" not in r

    def test_it_stops_polling_and_tells_the_page_when_the_job_ends(self):
        seen = self.job.version
        self.job.add_progress(succeeded=3, failed=1)
        self.job.finish()
        r = self.client.get(self.url, {"v": seen}, headers={"HX-Request": "true"})
        assert r.status_code == 200
        self.assertNotContains(r, "hx-trigger")
        self.assertContains(r, "Partially failed")
        assert "jobFinished" in json.loads(r["HX-Trigger"])
        # a finished job answers even an up-to-date cursor (the last swap must happen), and only htmx gets the event
        plain = self.client.get(self.url, {"v": self.job.version})
        assert plain.status_code == 200 and "HX-Trigger" not in plain

    def test_it_ignores_a_bad_cursor(self):
        r = self.client.get(self.url, {"v": "yesterday"})
        assert r.status_code == 200

    def test_the_portal_job_page_sends_kdp_jobs_to_the_kdp_page(self):
        r = self.client.get(f"/jobs/{self.job.pk}/")
        self.assertRedirects(r, f"/kdp/jobs/{self.job.pk}/", fetch_redirect_response=False)


class RetryTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = ready_account()
        self.customer = Customer.objects.create(account=self.account, customer_id="4600000001", name="Harbour Cafés")
        self.bad = fresh_imeis(2, "35200000")
        self.job = finished_job(
            self.customer, user=self.operator, succeeded=fresh_imeis(3), failed=self.bad, failure=NOT_SENT
        )
        self.url = f"/kdp/jobs/{self.job.pk}/retry/"

    def test_the_page_offers_a_retry_of_what_a_retry_can_fix(self):
        self.client.force_login(self.operator)
        r = self.client.get(f"/kdp/jobs/{self.job.pk}/")
        self.assertContains(r, f'action="{self.url}"')
        self.assertContains(r, "Retry the 2 failed devices")
        self.assertNotContains(r, "Left out")

    def test_a_mixed_job_retries_only_the_transient_failures_and_says_why_the_rest_are_left_out(self):
        permanent = fresh_imeis(3, "35210000")
        TransactionDevice.objects.bulk_create(
            TransactionDevice(transaction=Transaction.objects.get(job=self.job), job=self.job, identifier=i,
                              outcome="failed", code=code)
            for i, code in zip(permanent, ("4092100", "40000044", "40000004"), strict=True)
        )  # fmt: skip
        Job.objects.filter(pk=self.job.pk).update(failed=5)
        self.client.force_login(self.operator)
        page = self.client.get(f"/kdp/jobs/{self.job.pk}/")
        self.assertContains(page, "Retry the 2 failed devices")
        self.assertContains(page, "Left out:")
        self.assertContains(page, "1 already registered in Knox")
        self.assertContains(page, "1 registered to another customer, or not by this reseller")
        self.assertContains(page, "1 refused as not valid")
        self.client.post(self.url)
        retry = Job.objects.get(retry_of=self.job)
        assert retry.total == 2
        from kdp.tasks import plan_items

        assert sorted(i.identifier for i in plan_items(retry)) == sorted(self.bad)

    def test_it_queues_a_job_for_the_failed_devices(self):
        self.client.force_login(self.operator)
        r = self.client.post(self.url)
        retry = Job.objects.exclude(pk=self.job.pk).get()
        self.assertRedirects(r, f"/kdp/jobs/{retry.pk}/", fetch_redirect_response=False)
        assert (retry.kind, retry.total, retry.status, retry.created_by) == ("kdp.upload", 2, "queued", self.operator)
        assert retry.params["retry_of"] == self.job.pk and retry.params["profile_alias"] == "Kiosk"
        assert retry.func == "kdp.tasks.run_transfer"
        assert AuditEvent.objects.filter(action="kdp.retry", target_id=str(retry.pk), actor=self.operator).exists()
        page = self.client.get(r["Location"])
        self.assertContains(page, f"Job #{retry.pk} queued for the 2 failed devices.")
        self.assertContains(page, f'<a href="/kdp/jobs/{self.job.pk}/">job #{self.job.pk}</a>')

    def test_a_second_retry_of_the_same_job_queues_nothing_and_says_so(self):
        # A double click, another operator, or a replayed POST long after (issue 13 §5).
        self.client.force_login(self.operator)
        first = self.client.post(self.url)
        retry = Job.objects.get(retry_of=self.job)
        self.client.force_login(self.admin)
        again = self.client.post(self.url, follow=True)
        assert again.redirect_chain[0][0] == first["Location"] == f"/kdp/jobs/{retry.pk}/"
        self.assertContains(again, f"Job #{self.job.pk} was already retried as job #{retry.pk} (queued)")
        Job.objects.filter(pk=retry.pk).update(status=Job.Status.SUCCEEDED)
        self.client.post(self.url)
        assert Job.objects.filter(kind="kdp.upload").count() == 2
        assert AuditEvent.objects.filter(action="kdp.retry").count() == 1

    def test_it_refuses_a_job_without_failures(self):
        clean = finished_job(self.customer, succeeded=fresh_imeis(2, "35300000"))
        self.client.force_login(self.operator)
        r = self.client.post(f"/kdp/jobs/{clean.pk}/retry/", follow=True)
        self.assertContains(r, "Only a finished upload or delete job with failed devices can be retried")
        assert r.redirect_chain[-1][0] == f"/kdp/jobs/{clean.pk}/"
        assert Job.objects.count() == 2

    def test_it_refuses_a_job_that_is_still_running(self):
        Job.objects.filter(pk=self.job.pk).update(status=Job.Status.RUNNING)
        self.client.force_login(self.operator)
        self.assertContains(self.client.post(self.url, follow=True), "can be retried")
        assert Job.objects.count() == 1

    def test_it_is_post_only(self):
        self.client.force_login(self.operator)
        assert self.client.get(self.url).status_code == 405
        assert Job.objects.count() == 1

    def test_it_forbids_a_viewer_and_an_anonymous_user(self):
        self.client.force_login(self.viewer)
        assert self.client.post(self.url).status_code == 403
        self.client.logout()
        r = self.client.post(self.url)
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        assert Job.objects.count() == 1

    def test_it_404s_for_an_unknown_job(self):
        self.client.force_login(self.operator)
        assert self.client.post(f"/kdp/jobs/{self.job.pk + 100}/retry/").status_code == 404


class TransactionPagesTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        account = ready_account()
        customer = Customer.objects.create(account=account, customer_id="4600000001", name="Harbour Cafés")
        self.bad = fresh_imeis(1, "35200000")
        self.job = finished_job(customer, succeeded=fresh_imeis(2), failed=self.bad, transaction_id="ab" * 16)
        self.other = finished_job(customer, succeeded=fresh_imeis(1, "35400000"), transaction_id="cd" * 16)
        self.tx = Transaction.objects.get(job=self.job)
        self.url = "/kdp/transactions/"
        self.detail_url = f"/kdp/transactions/{self.tx.pk}/"

    def test_it_lists_transactions_newest_first(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url)
        assert re.findall(r"<code>(\w{32})</code>", r.content.decode()) == ["cd" * 16, "ab" * 16]
        self.assertContains(r, f'href="{self.detail_url}"')

    def test_it_finds_a_transaction_by_its_id_prefix(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url, {"q": " ABAB "})
        assert re.findall(r"<code>(\w{32})</code>", r.content.decode()) == ["ab" * 16]
        assert b"No transactions." in self.client.get(self.url, {"q": "zz"}).content

    def test_it_tolerates_a_bad_cursor(self):
        self.client.force_login(self.viewer)
        assert self.client.get(self.url, {"before": "soon"}).status_code == 200
        r = self.client.get(self.url, {"before": Transaction.objects.get(job=self.other).pk})
        assert re.findall(r"<code>(\w{32})</code>", r.content.decode()) == ["ab" * 16]

    def test_it_shows_a_transaction_and_its_failed_devices(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.detail_url)
        self.assertContains(r, f"<code>{self.bad[0]}</code>")
        self.assertContains(r, "already registered in Knox")
        self.assertContains(r, f'<a href="/kdp/jobs/{self.job.pk}/">#{self.job.pk}</a>, chunk 1')
        assert self.client.get(f"/kdp/transactions/{self.tx.pk + 100}/").status_code == 404

    def test_it_needs_a_login_the_role_and_get(self):
        assert self.client.get(self.url).status_code == 302
        assert self.client.get(self.detail_url).status_code == 302
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        assert self.client.get(self.detail_url).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.post(self.url).status_code == 405
        assert self.client.post(self.detail_url).status_code == 405


# --- end to end against the sandbox ---------------------------------------------------------------------------


def test_an_upload_with_a_failure_shows_results_and_retries_through_the_pages(client, customer, knox_sandbox):
    operator = make_user("olivia", "operator")
    theirs = knox_sandbox.credentials["second_reseller"]["device_ids"][0]  # an IMEI another reseller owns
    mine = fresh_imeis(2, "35910000")
    staged = make_upload(customer.account, imei_csv([*mine, theirs]), "mixed.csv", user=operator)
    client.force_login(operator)
    r = client.post(f"/kdp/uploads/{staged.pk}/confirm/", {"customer": customer.pk})
    job = Job.objects.get(kind="kdp.upload")
    assert r["Location"] == f"/kdp/jobs/{job.pk}/"
    queued = client.get(r["Location"]).content.decode()
    assert "The job has not started yet." in queued and 'hx-trigger="every 2s"' in queued
    seen = job.version
    assert client.get(f"/jobs/{job.pk}/progress/", {"v": seen}).status_code == 204

    run_transfer(job.pk)
    job.refresh_from_db()
    assert (job.status, job.succeeded, job.failed) == (Job.Status.PARTIAL, 2, 1)
    progress = client.get(f"/jobs/{job.pk}/progress/", {"v": seen}, headers={"HX-Request": "true"})
    assert "jobFinished" in json.loads(progress["HX-Trigger"]) and b"hx-trigger" not in progress.content

    page = client.get(f"/kdp/jobs/{job.pk}/").content.decode()
    assert result_identifiers(page) == [*mine, theirs]
    assert ">4092100</code>" in page and "already registered in Knox" in page
    assert f'href="/kdp/uploads/{staged.pk}/">mixed.csv</a>' in page
    fragment = client.get(
        f"/kdp/jobs/{job.pk}/", {"outcome": "failed"}, headers={"HX-Request": "true", "HX-Target": "job-results"}
    ).content.decode()
    assert "<html" not in fragment and re.findall(r"<tr><td><code>(\w+)</code></td>", fragment) == [theirs]
    report = xlsx_rows(b"".join(client.get(f"/kdp/jobs/{job.pk}/report.xlsx").streaming_content))
    assert [(row[0], row[2]) for row in report[1:]] == [
        (mine[0], "succeeded"),
        (mine[1], "succeeded"),
        (theirs, "failed"),
    ]

    tx = Transaction.objects.get(job=job)
    listed = client.get("/kdp/transactions/", {"q": tx.transaction_id[:8]}).content.decode()
    assert f"<code>{tx.transaction_id}</code>" in listed
    detail = client.get(f"/kdp/transactions/{tx.pk}/").content.decode()
    assert f"<code>{theirs}</code>" in detail and "Complete" in detail

    # Knox would refuse the device registered elsewhere again: no retry is offered, and none can be queued.
    assert "/retry/" not in page and "1 already registered in Knox." in page
    client.post(f"/kdp/jobs/{job.pk}/retry/")
    assert not Job.objects.filter(params__retry_of=job.pk).exists()
    assert Upload.objects.get(pk=staged.pk).status == Upload.Status.SUBMITTED


class PlainLabelsTestCase(BaseTestCase):
    """Item 10: KDP pages and the admin speak plain words, not Knox's field names or Python's."""

    def setUp(self) -> None:
        super().setUp()
        self.account = ready_account()
        self.customer = Customer.objects.create(account=self.account, customer_id="4600000001", name="Harbour Cafés")
        self.job = finished_job(self.customer, user=self.operator, failed=fresh_imeis(1, "35200000"))
        self.tx = Transaction.objects.get(job=self.job)
        Transaction.objects.filter(pk=self.tx.pk).update(raw_status={"state": "Complete", "failures": {}})

    def test_the_admin_headings_are_plain_plurals(self):
        self.client.force_login(make_user("root", is_staff=True, is_superuser=True))
        r = self.client.get("/admin/")
        for heading in ("Knox transactions", "Device outcomes", "Reconcile differences"):
            self.assertContains(r, heading)
        # The customer page's inline heading (shown in capitals) read "PROFILE ALIASS".
        page = self.client.get(f"/admin/kdp/customer/{self.customer.pk}/change/")
        self.assertContains(page, "KME profile aliases")
        self.assertNotContains(page, "aliass")

    def test_pages_name_knox_fields_in_words(self):
        self.client.force_login(self.viewer)
        job_page = self.client.get(f"/kdp/jobs/{self.job.pk}/")
        self.assertContains(job_page, "<th>Knox transaction ID</th>")
        self.assertNotContains(job_page, "transactionId")
        self.assertNotContains(job_page, "> DEVICE_ALREADY_EXISTS")  # Knox's message is a tooltip, its meaning shown
        detail = self.client.get(f"/kdp/transactions/{self.tx.pk}/")
        self.assertContains(detail, "(GEN2, IMEI)")
        self.assertContains(detail, "&quot;state&quot;: &quot;Complete&quot;")  # JSON, not a Python dict
        self.assertNotContains(detail, "{&#x27;state&#x27;")
        self.assertContains(self.client.get("/kdp/transactions/"), "Knox transaction ID starts with")
