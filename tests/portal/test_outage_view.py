"""The polled progress fragment says when a job is waiting out a Knox outage (portal.engine.Outage), so staff
watching a job page see it is waiting for Knox, not stuck, and when the next try is due."""

from __future__ import annotations

from datetime import UTC, datetime

from django.test import override_settings

from portal.models import Job
from tests.base import BaseTestCase

SINCE = datetime(2024, 3, 1, 10, 5, tzinfo=UTC)
NEXT_TRY = datetime(2024, 3, 1, 10, 7, tzinfo=UTC)
REASON = "Knox could not be reached (connection refused)"


# A zone 5 h 30 min from UTC: a time shown in UTC (or the server's zone) would not match.
@override_settings(TIME_ZONE="Asia/Kolkata")
class OutageFragmentTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.job = Job.objects.create(kind="kdp.upload", title="Upload 10 devices", total=10, created_by=self.operator)
        self.job.claim("w1")
        self.url = f"/jobs/{self.job.pk}/progress/"
        self.client.force_login(self.viewer)

    def poll(self, seen: int):
        """What the job page's 2-second poll gets, given the version the browser last saw."""
        return self.client.get(self.url, {"v": seen}, headers={"HX-Request": "true"})

    def test_the_polled_fragment_says_knox_is_unreachable_while_the_job_waits_and_not_once_knox_is_back(self):
        seen = self.job.version
        assert self.poll(seen).status_code == 204  # nothing new yet
        self.job.wait_for_knox(REASON, since=SINCE, next_try_at=NEXT_TRY)

        r = self.poll(seen)
        assert r.status_code == 200, "recording the wait must bump the job's version, or the page never sees it"
        self.assertContains(r, "Knox unreachable since 15:35, next try 15:37")  # local time, not 10:05 UTC
        self.assertContains(r, f"<small>{REASON}</small>", html=True)
        self.assertContains(r, 'hx-trigger="every 2s"')  # still running: the page keeps polling
        seen = Job.objects.get(pk=self.job.pk).version

        self.job.knox_back()
        r = self.poll(seen)
        assert r.status_code == 200
        self.assertNotContains(r, "Knox unreachable")
        self.assertNotContains(r, REASON)

    def test_a_job_that_never_waited_says_nothing_about_knox(self):
        self.job.add_progress(succeeded=3)
        r = self.poll(0)
        self.assertContains(r, "30%")
        self.assertNotContains(r, "Knox unreachable")

    def test_the_job_page_shows_the_wait_too(self):
        """The first render (the job's own page) includes the fragment, before any poll."""
        self.job.wait_for_knox(REASON, since=SINCE, next_try_at=NEXT_TRY)
        r = self.client.get(f"/jobs/{self.job.pk}/", follow=True)
        self.assertContains(r, "Knox unreachable since 15:35, next try 15:37")

    def test_rendering_the_wait_costs_no_extra_query(self):
        """The fragment is polled every 2 s by every open job page: the wait fields come with the one job query."""
        self.job.wait_for_knox(REASON, since=SINCE, next_try_at=NEXT_TRY)
        self.client.get("/")  # warm the session and permission caches
        with self.assertNumQueries(3):  # session, user, the job
            r = self.poll(0)
        self.assertContains(r, "Knox unreachable since 15:35")
