from __future__ import annotations

from unittest import mock

from portal.models import AuditEvent, Job
from tests.base import BaseTestCase


class JobModelTestCase(BaseTestCase):
    def test_lifecycle_and_final_status_from_counters(self):
        job = Job.objects.create(kind="kdp.upload", created_by=self.operator)
        assert job.mark_running() and job.status == Job.Status.RUNNING and job.started_at
        job.set_total(10)
        job.add_progress(succeeded=7)
        job.add_progress(failed=3)
        job.finish()
        assert job.status == Job.Status.PARTIAL and job.processed == 10 and job.percent == 100
        assert not job.mark_running()  # a finished job is not claimed again

    def test_final_status_variants(self):
        ok = Job.objects.create(kind="k")
        ok.add_progress(succeeded=2)
        ok.finish()
        assert ok.status == Job.Status.SUCCEEDED
        bad = Job.objects.create(kind="k")
        bad.add_progress(failed=2)
        bad.finish()
        assert bad.status == Job.Status.FAILED
        dead = Job.objects.create(kind="k")
        dead.fail("Knox is unreachable")
        assert dead.status == Job.Status.FAILED and dead.error_summary == "Knox is unreachable"

    def test_only_queued_jobs_can_be_cancelled(self):
        job = Job.objects.create(kind="k")
        assert job.cancel() and job.status == Job.Status.CANCELLED
        running = Job.objects.create(kind="k")
        running.mark_running()
        assert not running.cancel()

    def test_every_change_bumps_the_version(self):
        job = Job.objects.create(kind="k")
        v = [job.version]
        job.mark_running()
        v.append(job.version)
        job.add_progress(succeeded=1)
        job.refresh_from_db()
        v.append(job.version)
        assert v == sorted(set(v))

    def test_enqueue_waits_for_commit_and_records_the_task_id(self):
        with (
            mock.patch("django_q.tasks.async_task", return_value="task-1") as send,
            self.captureOnCommitCallbacks(execute=True),
        ):
            job = Job.objects.create(kind="k")
            job.enqueue("portal.tasks.noop")
            send.assert_not_called()
        send.assert_called_once()
        assert send.call_args.args == ("portal.tasks.noop", job.pk)
        job.refresh_from_db()
        assert job.task_id == "task-1"


class JobPagesTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.job = Job.objects.create(kind="kdp.upload", title="Upload 10 devices", total=10, created_by=self.operator)
        self.job.mark_running()
        self.url = f"/jobs/{self.job.pk}/"
        self.progress_url = f"/jobs/{self.job.pk}/progress/"

    def test_it_shows_the_job(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url)
        self.assertContains(r, "Upload 10 devices")
        self.assertContains(r, f'hx-get="{self.progress_url}?v={self.job.version}"')
        self.assertContains(r, 'hx-trigger="every 2s"')

    def test_progress_fragment_is_a_fragment(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.progress_url, headers={"HX-Request": "true"})
        assert r.status_code == 200 and b"<html" not in r.content
        self.assertContains(r, f'id="job-{self.job.pk}-progress"')

    def test_an_unchanged_job_answers_204_in_one_query(self):
        self.client.force_login(self.viewer)
        self.client.get("/")  # warm the session and permission caches
        with self.assertNumQueries(3):  # session, user, the job (permissions come from the session)
            r = self.client.get(self.progress_url, {"v": self.job.version})
        assert r.status_code == 204
        self.job.add_progress(succeeded=3)
        r = self.client.get(self.progress_url, {"v": self.job.version})
        assert r.status_code == 200
        self.assertContains(r, "30%")

    def test_polling_stops_when_the_job_ends(self):
        self.client.force_login(self.viewer)
        self.job.add_progress(succeeded=10)
        self.job.finish()
        r = self.client.get(self.progress_url, {"v": 0})
        self.assertNotContains(r, "hx-trigger")
        self.assertContains(r, "Succeeded")

    def test_cancel_is_post_only_and_needs_the_operator_role(self):
        queued = Job.objects.create(kind="kdp.upload")
        url = f"/jobs/{queued.pk}/cancel/"
        self.client.force_login(self.viewer)
        assert self.client.post(url).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.get(url).status_code == 405
        self.assertRedirects(self.client.post(url), f"/jobs/{queued.pk}/")
        queued.refresh_from_db()
        assert queued.status == Job.Status.CANCELLED
        assert AuditEvent.objects.filter(action="job.cancel", actor=self.operator).exists()

    def test_a_running_job_cannot_be_cancelled(self):
        self.client.force_login(self.operator)
        r = self.client.post(f"/jobs/{self.job.pk}/cancel/", follow=True)
        self.assertContains(r, "only queued jobs can be cancelled")
        self.job.refresh_from_db()
        assert self.job.status == Job.Status.RUNNING

    def test_jobs_list_filters(self):
        Job.objects.create(kind="guard.lock", title="Lock 3")
        self.client.force_login(self.viewer)
        r = self.client.get("/jobs/", {"kind": "guard."})
        self.assertContains(r, "Lock 3")
        self.assertNotContains(r, "Upload 10 devices")
        assert self.client.get("/jobs/", {"status": "bogus", "page": "-4"}).status_code == 200

    def test_dashboard_polls_while_jobs_run_and_returns_the_fragment(self):
        self.client.force_login(self.viewer)
        r = self.client.get("/")
        self.assertContains(r, 'id="recent-jobs"')
        self.assertContains(r, 'hx-trigger="every 3s"')
        r = self.client.get("/", headers={"HX-Request": "true"})
        assert b"<html" not in r.content and b'id="recent-jobs"' in r.content
