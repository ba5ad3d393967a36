"""Lookups (portal/lookups.py): a read from Knox a page asks for runs as a job; the page follows its progress and
fetches the answer from `/jobs/<pk>/result/` when the job ends. Also holds `ask`, the helper the lookup pages'
tests share."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.test.client import RequestFactory

from portal.knox.errors import KnoxUnavailable
from portal.lookups import LOOKUPS, Lookup, queue_lookup, register_lookup, run_lookup
from portal.models import AuditEvent, Job, KnoxAccount
from tests.base import BaseTestCase
from tests.portal.helpers import HTMX

# A lookup registered by these tests only: it answers what its params say, or raises what they say.
TEST_KIND = "test.lookup"


def echo(job: Job, owner: str) -> None:
    if job.params.get("raise") == "knox":
        raise KnoxUnavailable("Knox did not answer", detail="read timed out")
    if job.params.get("raise") == "bug":
        raise RuntimeError("a bug")
    job.set_result({"echo": job.params["say"]})
    job.add_progress(succeeded=1)


@pytest.fixture(autouse=True)
def _test_lookup():
    register_lookup(
        Lookup(
            kind=TEST_KIND,
            run="tests.portal.test_lookups.echo",
            perm="portal.queue_jobs",
            template="portal/_job_progress.html",  # any template: it renders `job`
            page=lambda job: f"/jobs/{job.pk}/?page",
        )
    )
    yield
    LOOKUPS.pop(TEST_KIND, None)


class LookupJobTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = KnoxAccount.objects.create(name="Acme", environment="sandbox")

    def queue(self, **params: Any) -> Job:
        with self.captureOnCommitCallbacks(execute=True):
            job = queue_lookup(TEST_KIND, account=self.account, user=self.operator, params=params, title="Echo")
        job.refresh_from_db()
        return job

    def test_a_lookup_runs_as_a_job_and_keeps_its_answer(self):
        job = self.queue(say="hello")
        assert (job.status, job.result, job.func, job.created_by) == (
            Job.Status.SUCCEEDED,
            {"echo": "hello"},
            "portal.lookups.run_lookup",
            self.operator,
        )
        assert job.get_absolute_url() == f"/jobs/{job.pk}/?page"

    def test_a_knox_failure_that_escapes_ends_the_job_failed_with_knox_s_sentence(self):
        job = self.queue(say="x", **{"raise": "knox"})
        assert job.status == Job.Status.FAILED and job.result is None
        assert "Knox did not answer" in job.error_summary and "read timed out" in job.error_summary
        self.client.force_login(self.operator)
        html = self.client.get(f"/jobs/{job.pk}/result/", headers=HTMX).content.decode()
        assert "No answer from Knox: the reason is above." in html and "hx-trigger" not in html

    def test_a_bug_ends_the_job_failed_and_is_raised_for_the_worker_log(self):
        with pytest.raises(RuntimeError), self.captureOnCommitCallbacks(execute=True):
            job = queue_lookup(TEST_KIND, account=self.account, user=None, params={"raise": "bug"}, title="Echo")
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED and job.error_summary.startswith("Internal error (RuntimeError)")

    def test_only_registered_kinds_are_queued_or_run(self):
        with pytest.raises(ValueError, match="not a registered lookup"):
            queue_lookup("kdp.upload", account=self.account, user=None, params={}, title="x")
        job = Job.objects.create(kind="kdp.upload", account=self.account)
        with pytest.raises(KeyError):
            run_lookup(job.pk)
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED

    def test_a_running_lookup_shows_a_region_that_waits_for_the_answer(self):
        job = Job.objects.create(kind=TEST_KIND, account=self.account, params={"say": "hi"}, total=1)
        job.claim("w1")
        self.client.force_login(self.operator)
        r = self.client.get(f"/jobs/{job.pk}/result/", headers=HTMX)
        html = r.content.decode()
        assert r.status_code == 200 and "<html" not in html
        assert f'hx-get="/jobs/{job.pk}/result/" hx-trigger="jobFinished from:body" hx-target="this"' in html
        assert f'<a href="/jobs/{job.pk}/?page">Reload</a>' in html
        # The progress poll fires jobFinished once the job ends: the region above then fetches the answer.
        progress = self.client.get(f"/jobs/{job.pk}/progress/", headers=HTMX)
        assert "HX-Trigger" not in progress
        job.set_result({"echo": "hi"})
        job.add_progress(succeeded=1)
        job.finish()
        progress = self.client.get(f"/jobs/{job.pk}/progress/", headers=HTMX)
        assert "jobFinished" in progress["HX-Trigger"] and b"hx-trigger" not in progress.content
        html = self.client.get(f"/jobs/{job.pk}/result/", headers=HTMX).content.decode()
        assert "hx-get" not in html and "hx-trigger" not in html  # the answer: nothing more to fetch
        assert 'class="badge badge-succeeded">Succeeded<' in html

    def test_a_cancelled_lookup_says_so(self):
        job = Job.objects.create(kind=TEST_KIND, account=self.account)
        job.cancel()
        self.client.force_login(self.operator)
        assert (
            "Cancelled before Knox was asked."
            in self.client.get(f"/jobs/{job.pk}/result/", headers=HTMX).content.decode()
        )


class LookupResultAccessTestCase(BaseTestCase):
    """Who may read an answer: whoever holds the permission that lets them ask for that kind of lookup."""

    def setUp(self) -> None:
        super().setUp()
        self.account = KnoxAccount.objects.create(name="Acme", environment="sandbox")
        self.job = Job.objects.create(
            kind=TEST_KIND, account=self.account, status=Job.Status.SUCCEEDED, result={"echo": "secret plans"}
        )
        self.test = Job.objects.create(
            kind="portal.connection_test",
            account=self.account,
            status=Job.Status.SUCCEEDED,
            result={
                "ok": True,
                "results": [
                    {"service": "kdp", "label": "KDP Gen2", "ok": True, "message": "5 customer(s) visible", "code": ""}
                ],
            },
        )
        self.url = f"/jobs/{self.job.pk}/result/"

    def test_it_needs_the_lookup_s_permission(self):
        assert self.client.get(self.url, headers=HTMX)["Location"].startswith("/login/")
        self.client.force_login(self.outsider)
        assert self.client.get(self.url, headers=HTMX).status_code == 403
        self.client.force_login(self.viewer)  # may read pages, may not ask for this lookup
        assert self.client.get(self.url, headers=HTMX).status_code == 403
        assert self.client.get(f"/jobs/{self.test.pk}/result/", headers=HTMX).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.get(self.url, headers=HTMX).status_code == 200
        assert self.client.get(f"/jobs/{self.test.pk}/result/", headers=HTMX).status_code == 403
        self.client.force_login(self.admin)
        html = self.client.get(f"/jobs/{self.test.pk}/result/", headers=HTMX).content.decode()
        assert "5 customer(s) visible" in html

    def test_only_lookups_have_an_answer_here(self):
        other = Job.objects.create(kind="kdp.upload", account=self.account, result={"echo": "not a lookup"})
        self.client.force_login(self.admin)
        assert self.client.get(f"/jobs/{other.pk}/result/", headers=HTMX).status_code == 404
        assert self.client.get("/jobs/999999/result/", headers=HTMX).status_code == 404

    def test_it_is_get_only_and_sends_a_browser_to_the_page_that_asked(self):
        self.client.force_login(self.operator)
        assert self.client.post(self.url).status_code == 405
        r = self.client.get(self.url)
        assert r.status_code == 302 and r["Location"] == f"/jobs/{self.job.pk}/?page"

    def test_a_page_opened_on_a_lookup_checks_its_kind_and_permission(self):
        from portal.lookups import lookup_context

        request = RequestFactory().get("/", {"job": self.test.pk})
        request.user = self.viewer
        with pytest.raises(PermissionDenied):
            lookup_context(request, "portal.connection_test")
        request.user = self.admin
        assert lookup_context(request, "portal.connection_test")["lookup_job"] == self.test
        with pytest.raises(Http404):
            lookup_context(request, "efota.firmware")
        for bad in ("x", "0", str(2**63), "²"):
            request = RequestFactory().get("/", {"job": bad})
            request.user = self.admin
            assert lookup_context(request, "portal.connection_test") == {}

    def test_reading_an_answer_changes_nothing(self):
        self.client.force_login(self.admin)
        events, version = AuditEvent.objects.count(), self.test.version
        assert self.client.get(f"/jobs/{self.test.pk}/result/", headers=HTMX).status_code == 200
        self.test.refresh_from_db()
        assert (AuditEvent.objects.count(), self.test.version, Job.objects.count()) == (events, version, 2)
