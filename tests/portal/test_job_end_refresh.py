"""A live page shows what its job changed once the job ends, without a reload (issue 16, item 5).

The shared mechanism: the polled progress fragment (portal.views.job_progress) fires `jobFinished` on its last
poll; regions that fetch themselves listen to it (hx-trigger="jobFinished from:body"), and every other region the
job changes carries `data-refresh-on-job-end` and an id, which static/js/portal.js replaces from one fresh copy of
the page. These tests render a page while its job runs and again once it ended, and require every difference to
lie inside a region that refreshes: text outside them must not change, or the open page would keep the old one.
"""

from __future__ import annotations

import datetime as dt
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings

from efota.models import EfotaLicence, queue_licence_check
from kdp.models import Customer, Transaction, TransactionDevice
from portal.models import Job
from tests.base import BaseTestCase
from tests.efota.helpers import CUSTOMER, LICENCE
from tests.efota.helpers import ready_account as efota_account
from tests.kdp.helpers import ready_account as kdp_account

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
PROGRESS_ID = re.compile(r"^job-\d+-progress$")


def refreshes_on_job_end(attrs: dict[str, str | None]) -> bool:
    """A region the open page re-reads when its job ends: marked for portal.js, fetching itself on jobFinished,
    polling itself (E-FOTA's force update status), or the progress fragment (re-rendered by every poll). Flash messages ("Job #2 queued") are shown once, on the
    first rendering, and are no part of what the job changes."""
    if "messages" in (attrs.get("class") or "").split():
        return True
    trigger = attrs.get("hx-trigger") or ""
    return (
        "data-refresh-on-job-end" in attrs
        or "jobFinished from:body" in trigger
        or trigger.startswith("every ")  # polls itself until its last rendering, which has no trigger
        or bool(PROGRESS_ID.match(attrs.get("id") or ""))
    )


class StaticText(HTMLParser):
    """The page's text outside the regions that refresh when the job ends (found on the page itself, or given by
    id: the running page's regions, which the ended job's page renders without their triggers)."""

    def __init__(self, region_ids: set[str] | None = None) -> None:
        super().__init__()
        self.region_ids = region_ids
        self.depth = 0  # > 0 inside a refreshing region
        self.text: list[str] = []
        self.regions: set[str] = set()
        self.marked: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        if tag in VOID:
            return
        if "data-refresh-on-job-end" in a:
            assert a.get("id"), f"<{tag} data-refresh-on-job-end> needs an id: portal.js finds its new copy by id"
            self.marked.append(a["id"] or "")
        if self.region_ids is None:
            region = refreshes_on_job_end(a)
            if region and not self.depth and "messages" not in (a.get("class") or "").split():
                assert a.get("id"), f"<{tag}> refreshes on job end: it needs an id to be found again"
                self.regions.add(a["id"] or "")
        else:
            region = (a.get("id") or "") in self.region_ids or "messages" in (a.get("class") or "").split()
        if self.depth or region:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth and data.strip():
            self.text.append(" ".join(data.split()))


def static_text(html: str, region_ids: set[str] | None = None) -> StaticText:
    parser = StaticText(region_ids)
    parser.feed(html[html.index("<main") : html.index("</main>")])
    return parser


class JobEndRefreshTestCase(BaseTestCase):
    def assert_everything_changed_refreshes(self, running: str, finished: str) -> list[str]:
        """Every text that differs between the two renderings lies in a region that refreshes on job end."""
        before = static_text(running)
        after = static_text(finished, before.regions)
        assert before.text == after.text, (
            f"changed outside the regions that refresh: {set(after.text) ^ set(before.text)}"
        )
        assert before.regions <= after.ids, "a region that refreshes is missing from the ended job's page"
        return before.marked

    def test_a_kdp_job_page_refreshes_its_transactions_when_the_job_ends(self):
        account = kdp_account()
        customer = Customer.objects.create(account=account, customer_id="4600000001", name="Harbour Cafés")
        job = Job.objects.create(kind="kdp.upload", account=account, title="Register devices", total=2)
        job.claim("test-worker")
        self.client.force_login(self.viewer)
        running = self.client.get(f"/kdp/jobs/{job.pk}/").content.decode()
        assert "Knox transactions (0)" in running

        tx = Transaction.objects.create(
            account=account, job=job, sequence=1, operation="upload", generation="gen2", customer=customer,
            device_type="IMEI", device_count=2, state=Transaction.State.COMPLETE, succeeded=2,
        )  # fmt: skip
        TransactionDevice.objects.bulk_create(
            [TransactionDevice(transaction=tx, job=job, identifier=i, outcome="succeeded") for i in ("351", "352")]
        )
        job.add_progress(succeeded=2)
        job.finish()
        finished = self.client.get(f"/kdp/jobs/{job.pk}/").content.decode()
        assert "Knox transactions (1)" in finished

        marked = self.assert_everything_changed_refreshes(running, finished)
        assert "job-transactions" in marked

    def test_a_reconcile_page_refreshes_its_differences_when_the_job_ends(self):
        account = kdp_account()
        job = Job.objects.create(kind="kdp.reconcile", account=account, title="Compare with Knox")
        job.claim("test-worker")
        self.client.force_login(self.viewer)
        running = self.client.get(f"/kdp/jobs/{job.pk}/").content.decode()
        assert "The comparison is still running" in running
        job.finish()
        finished = self.client.get(f"/kdp/jobs/{job.pk}/").content.decode()
        assert "No difference" in finished
        assert "job-drift" in self.assert_everything_changed_refreshes(running, finished)

    def test_the_licences_page_lists_the_checked_licence_when_the_check_ends(self):
        account = efota_account()
        job = queue_licence_check(account, CUSTOMER, LICENCE, user=self.viewer)
        job.claim("test-worker")
        self.client.force_login(self.viewer)
        running = unescape(self.client.get(f"/efota/licences/?job={job.pk}").content.decode())
        assert LICENCE not in running.split("Licences checked")[1]

        EfotaLicence.objects.create(
            account=account, customer_id=CUSTOMER, key=LICENCE, max_devices=100, expiration_date=dt.date(2999, 1, 1)
        )
        job.set_result({"key": LICENCE, "max_devices": 100, "expiration_date": "2999-01-01", "expired": False})
        job.finish()
        finished = unescape(self.client.get(f"/efota/licences/?job={job.pk}").content.decode())
        assert LICENCE in finished.split("Licences checked")[1]
        assert "licences-checked" in self.assert_everything_changed_refreshes(running, finished)

    def test_the_portal_job_page_refreshes_its_facts_when_the_job_ends(self):
        job = Job.objects.create(kind="portal.other", title="Something", total=1)
        job.claim("test-worker")
        self.client.force_login(self.viewer)
        running = self.client.get(f"/jobs/{job.pk}/").content.decode()
        job.add_progress(succeeded=1)
        job.finish()
        finished = self.client.get(f"/jobs/{job.pk}/").content.decode()
        self.assert_everything_changed_refreshes(running, finished)

    def test_the_last_poll_fires_the_event_portal_js_listens_to(self):
        job = Job.objects.create(kind="kdp.upload", title="Register devices", total=1)
        job.claim("test-worker")
        job.add_progress(succeeded=1)
        job.finish()
        self.client.force_login(self.viewer)
        r = self.client.get(f"/jobs/{job.pk}/progress/", headers={"HX-Request": "true"})
        assert "jobFinished" in r["HX-Trigger"]
        script = (Path(settings.BASE_DIR) / "static/js/portal.js").read_text()
        assert 'document.addEventListener("jobFinished", refreshJobRegions)' in script
        assert 'querySelectorAll("[data-refresh-on-job-end][id]")' in script

    def test_service_job_pages_change_only_inside_refreshing_regions(self):
        account = kdp_account()
        self.client.force_login(self.viewer)
        kinds = (
            ("kdp.delete", {}),
            ("kdp.customers", {}),
            ("guard.lock", {"action": "lock"}),
            ("guard.upload", {}),
            ("guard.sync", {}),
            ("efota.register", {}),
            ("efota.license_change", {}),
            ("efota.force_update", {"customer_id": "C1", "licence": "L1", "model": "SM-A556B", "target": "X"}),
        )
        for kind, params in kinds:
            with self.subTest(kind=kind):
                job = Job.objects.create(kind=kind, account=account, title=kind, total=1, params=params)
                job.claim("test-worker")
                running = self.client.get(job.get_absolute_url())
                assert running.status_code == 200, kind
                job.add_progress(failed=1)
                job.finish()
                finished = self.client.get(job.get_absolute_url())
                self.assert_everything_changed_refreshes(running.content.decode(), finished.content.decode())


# --- end to end against the sandbox ---------------------------------------------------------------------------


@pytest.fixture
def sandbox_customer(sandbox_account, settings, quick_kdp, tmp_path) -> Customer:
    """A verified customer of the sandbox account, synced from Knox; KDP's pacing off and its first poll sooner."""
    from kdp.tasks import sync_customers

    settings.MEDIA_ROOT = tmp_path / "media"
    sync_customers(Job.objects.create(kind="kdp.customers", account=sandbox_account).pk)
    return Customer.objects.filter(account=sandbox_account, status="Verified").order_by("name").first()


def test_a_real_upload_s_page_and_its_owner_learn_the_outcome_when_it_ends(client, sandbox_customer, settings):
    """A KDP upload run against the sandbox: the page opened while the job was queued changes, once it ended,
    only inside the regions that refresh on jobFinished; the sweep then emails whoever queued it."""
    from django.core import mail

    from kdp.tasks import run_transfer
    from portal.notify import notify_ended_jobs
    from tests.base import fresh_imeis, make_user
    from tests.kdp.helpers import imei_csv, make_upload

    settings.PORTAL_URL = "https://portal.example.com"
    customer = sandbox_customer
    operator = make_user("olivia", "operator")
    staged = make_upload(customer.account, imei_csv(fresh_imeis(2, "35920000")), "two.csv", user=operator)
    client.force_login(operator)
    job_url = client.post(f"/kdp/uploads/{staged.pk}/confirm/", {"customer": customer.pk})["Location"]
    job = Job.objects.get(kind="kdp.upload")
    queued = client.get(job_url).content.decode()
    assert "Knox transactions (0)" in queued

    run_transfer(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    finished = client.get(job_url).content.decode()
    assert "Knox transactions (1)" in finished
    JobEndRefreshTestCase.assert_everything_changed_refreshes(None, queued, finished)  # type: ignore[arg-type]

    assert notify_ended_jobs() == 1
    (email,) = mail.outbox
    assert email.to == ["olivia@example.org"] and email.subject.startswith(f"Job #{job.pk} succeeded")
    assert f"Open the job: https://portal.example.com{job_url}" in email.body
