from __future__ import annotations

import re
import time
from unittest import mock

import pytest
from django.conf import settings
from django.test import SimpleTestCase, TransactionTestCase
from django.utils import timezone

from portal.models import AuditEvent, Job
from tests.base import BaseTestCase


class JobModelTestCase(BaseTestCase):
    def test_lifecycle_and_final_status_from_counters(self):
        job = Job.objects.create(kind="kdp.upload", created_by=self.operator)
        assert job.claim("w1") and job.status == Job.Status.RUNNING and job.started_at
        job.set_total(10)
        job.add_progress(succeeded=7)
        job.add_progress(failed=3)
        job.finish()
        assert job.status == Job.Status.PARTIAL and job.processed == 10 and job.percent == 100
        assert not job.claim("w1")  # a finished job is not claimed again

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
        running.claim("w1")
        assert not running.cancel()

    def test_every_change_bumps_the_version(self):
        job = Job.objects.create(kind="k")
        v = [job.version]
        job.claim("w1")
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
        assert Job.objects.get(pk=job.pk).func == "portal.tasks.noop"
        job.refresh_from_db()
        assert job.task_id == "task-1"


class JobPagesTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.job = Job.objects.create(kind="test.upload", title="Upload 10 devices", total=10, created_by=self.operator)
        self.job.claim("w1")
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
        queued = Job.objects.create(kind="test.upload")
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


class JobLeaseTestCase(BaseTestCase):
    def test_one_worker_at_a_time_and_takeover_after_expiry(self):
        from datetime import timedelta

        import pytest
        from django.utils import timezone

        from portal.models import LeaseLost

        job = Job.objects.create(kind="k")
        assert job.claim("a")
        assert not Job.objects.get(pk=job.pk).claim("b")
        Job.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
        assert list(Job.objects.stale()) == [job]
        assert Job.objects.get(pk=job.pk).claim("b")
        with pytest.raises(LeaseLost):
            job.heartbeat("a")
        job.heartbeat("b")

    def test_run_job_records_knox_failures_and_reraises_bugs(self):
        import pytest

        from portal.knox.errors import KnoxUnavailable
        from portal.tasks import run_job

        def dead_knox(job, owner):
            raise KnoxUnavailable("The connection to Knox failed (refused or reset)")

        job = Job.objects.create(kind="k")
        run_job(job.pk, dead_knox)
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED and "connection to Knox failed" in job.error_summary

        def bug(job, owner):
            raise ZeroDivisionError

        job2 = Job.objects.create(kind="k")
        with pytest.raises(ZeroDivisionError):
            run_job(job2.pk, bug)
        job2.refresh_from_db()
        assert job2.status == Job.Status.FAILED and "Internal error (ZeroDivisionError)" in job2.error_summary

    def test_run_job_leaves_finished_jobs_alone(self):
        from portal.tasks import run_job

        job = Job.objects.create(kind="k")
        job.cancel()
        calls = []
        run_job(job.pk, lambda j, o: calls.append(j))
        assert calls == []

    def test_stale_jobs_are_queued_again(self):
        from datetime import timedelta

        from django.utils import timezone

        from portal.tasks import resume_stale_jobs

        job = Job.objects.create(kind="kdp.upload", func="kdp.tasks.run_upload")
        job.claim("dead-worker")
        assert resume_stale_jobs() == 0
        Job.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=5))
        with mock.patch("django_q.tasks.async_task", return_value="t2") as send:
            assert resume_stale_jobs() == 1
        assert send.call_args.args == ("kdp.tasks.run_upload", job.pk)

    def test_the_resume_schedule_exists(self):
        from django_q.models import Schedule

        s = Schedule.objects.get(func="portal.tasks.resume_stale_jobs")
        assert s.schedule_type == Schedule.MINUTES and s.minutes == 1 and s.repeats == -1


@pytest.mark.django_db
def test_a_title_quoting_a_long_file_name_is_cut_not_refused():
    job = Job.objects.create(kind="kdp.parse", title="Read " + "x" * 255)
    job.refresh_from_db()
    assert len(job.title) == Job._meta.get_field("title").max_length


class LeaseRenewerTestCase(TransactionTestCase):
    """The lease renewed from a thread while the job's work runs (issue 13 §4). A TransactionTestCase: the renewer's
    own database connection must see the committed job row, as it does in a real worker."""

    def test_it_renews_the_lease_while_the_work_blocks(self):
        from datetime import timedelta

        from django.test import override_settings
        from django.utils import timezone

        from portal.tasks import run_job

        seen = {}

        def slow_knox_call(job, owner):
            # The work never calls heartbeat itself: it waits on "Knox" for 3 lease renewal intervals.
            time.sleep(1.6)
            seen["lease_until"] = Job.objects.get(pk=job.pk).lease_until
            seen["stale"] = list(Job.objects.stale())

        job = Job.objects.create(kind="k")
        with override_settings(JOB_LEASE_SECONDS=1):
            claimed_at = timezone.now()
            run_job(job.pk, slow_knox_call)
        assert seen["stale"] == []
        assert seen["lease_until"] > claimed_at + timedelta(seconds=1.5)
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED

    def test_one_renewal_thread_serves_every_job_of_the_process(self):
        import threading

        from portal.tasks import run_job

        renewers = set()

        def work(job, owner):
            renewers.update(t.ident for t in threading.enumerate() if t.name == "lease-renewer")

        for _ in range(5):
            run_job(Job.objects.create(kind="k").pk, work)
        assert len(renewers) == 1  # not one thread per job (issue 14: that cost 14 % of a busy worker's time)
        assert Job.objects.filter(status=Job.Status.SUCCEEDED).count() == 5

    def test_a_worker_whose_lease_was_taken_sends_nothing_more(self):
        import responses

        from portal.knox.http import KnoxSession
        from portal.models import KnoxAccount, LeaseLost
        from portal.tasks import run_job

        account = KnoxAccount.objects.create(
            name="gen1", kdp_generation="gen1", auth_mode="gen1_key", reseller_id="R1", environment="sandbox"
        )
        account.set_secret("gen1_api_key", "k")
        account.save()
        outcome = {}

        def taken_over_mid_job(job, owner):
            # Another worker takes the job (its lease looked expired to it), then this one tries to call Knox.
            Job.objects.filter(pk=job.pk).update(lease_owner="someone-else")
            time.sleep(0.6)  # the next renewal finds out
            with responses.RequestsMock(assert_all_requests_are_fired=False) as knox:
                knox.add(responses.POST, re.compile(".*"), json={})
                try:
                    KnoxSession(account).request(
                        "kdp_gen1", "POST", "/bulkenroll/v1/reseller/customers", idempotent=True
                    )
                except LeaseLost:
                    outcome["raised"] = True
                outcome["sent"] = len(knox.calls)

        job = Job.objects.create(kind="k")
        from django.test import override_settings

        with override_settings(JOB_LEASE_SECONDS=1):
            run_job(job.pk, taken_over_mid_job)
        assert outcome == {"raised": True, "sent": 0}
        job.refresh_from_db()
        assert job.status == Job.Status.RUNNING and job.lease_owner == "someone-else"  # left to its new holder


class FailedDeliveryTestCase(BaseTestCase):
    def test_a_queued_job_whose_delivery_failed_is_delivered_again_then_given_up(self):
        from django_q.models import Task

        from portal.tasks import MAX_FAILED_DELIVERIES, resume_stale_jobs

        job = Job.objects.create(kind="kdp.upload", func="kdp.tasks.run_transfer", task_id="t1")
        waiting = Job.objects.create(kind="kdp.upload", func="kdp.tasks.run_transfer", task_id="t-pending")
        now = timezone.now()
        Task.objects.create(id="t1", name="job-1", func=job.func, started=now, stopped=now, success=False)
        for attempt in range(1, MAX_FAILED_DELIVERIES + 1):
            with mock.patch("django_q.tasks.async_task", return_value=f"t{attempt + 1}") as send:
                assert resume_stale_jobs() == 1
            assert send.call_args.args == ("kdp.tasks.run_transfer", job.pk)
            Task.objects.create(id=f"t{attempt + 1}", name="x", func=job.func, started=now, stopped=now, success=False)
        assert resume_stale_jobs() == 0
        job.refresh_from_db()
        waiting.refresh_from_db()
        assert job.status == Job.Status.FAILED and "No worker could start this job" in job.error_summary
        assert waiting.status == Job.Status.QUEUED  # its task is still in the queue: left alone

    def test_a_claim_is_tried_again_while_the_database_is_locked(self):
        from django.db import OperationalError

        from portal import tasks

        job = Job.objects.create(kind="k")
        real_claim = Job.claim
        calls = []

        def locked_twice(self, owner):
            calls.append(owner)
            if len(calls) < 3:
                raise OperationalError("database is locked")
            return real_claim(self, owner)

        with mock.patch.object(Job, "claim", locked_twice), mock.patch.object(tasks.time, "sleep") as slept:
            tasks.run_job(job.pk, lambda j, o: None)
        assert len(calls) == 3 and slept.call_count == 2
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED


class LeaseConfigurationTestCase(SimpleTestCase):
    def test_a_configuration_that_breaks_the_lease_rule_refuses_to_start(self):
        from django.test import override_settings

        from portal.checks import job_lease

        assert job_lease(None) == []
        with override_settings(JOB_LEASE_SECONDS=2):
            assert [e.id for e in job_lease(None)] == ["portal.E002"]
        with override_settings(JOB_LEASE_SECONDS=4000):
            assert [e.id for e in job_lease(None)] == ["portal.E003"]
        cluster = {**settings.Q_CLUSTER, "retry": settings.Q_CLUSTER["timeout"]}
        with override_settings(Q_CLUSTER=cluster):
            assert [e.id for e in job_lease(None)] == ["portal.E004"]
