"""The Knox Guard overview: accounts, counts by state, recent jobs; device sync now and as a daily schedule."""

from __future__ import annotations

from html import unescape

from django.test import Client
from django_q.models import Schedule

from guard.tasks import scheduled_sync
from portal.models import AuditEvent, Job, KnoxAccount
from tests.base import BaseTestCase
from tests.guard.helpers import guard_account, make_device

SYNC = "guard.tasks.scheduled_sync"


class IndexTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.unready = KnoxAccount.objects.create(name="Half set up", environment="sandbox")
        for n, state in enumerate(["Enrolled", "Enrolled", "Locked", "Blinked"], start=1):
            make_device(self.account, state, n)
        self.job = Job.objects.create(kind="guard.lock", account=self.account, title="Lock: 2 devices")
        self.url = "/guard/"

    def test_it_shows_accounts_counts_by_state_and_recent_jobs(self):
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(self.url).content.decode())
        assert "Guard Finance" in html and "needs keys.json" in html
        assert 'href="/guard/devices/?state=Enrolled">Active</a> <strong>2</strong>' in html
        assert "Reminder On" in html and "Lock: 2 devices" in html and f'href="/guard/jobs/{self.job.pk}/"' in html
        assert "Sync devices from Knox" not in html and "Sync daily" not in html  # a viewer may not queue

    def test_it_offers_an_operator_a_sync_per_ready_account(self):
        self.client.force_login(self.operator)
        html = self.client.get(self.url).content.decode()
        assert f'action="/guard/sync/{self.account.pk}/"' in html
        assert f'action="/guard/sync/{self.unready.pk}/"' not in html
        assert 'action="/guard/sync/schedule/"' in html

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        assert self.client.get(self.url)["Location"] == "/login/?next=/guard/"

    def test_it_forbids_an_outsider_and_answers_post_with_405(self):
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        self.client.force_login(self.viewer)
        assert self.client.post(self.url).status_code == 405


class SyncTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.url = f"/guard/sync/{self.account.pk}/"

    def test_an_operator_queues_a_sync(self):
        self.client.force_login(self.operator)
        r = self.client.post(self.url)
        job = Job.objects.get(kind="guard.sync")
        self.assertRedirects(r, f"/guard/jobs/{job.pk}/", fetch_redirect_response=False)
        assert job.func == "guard.tasks.sync_devices" and job.created_by == self.operator
        assert AuditEvent.objects.filter(action="guard.sync", actor=self.operator).exists()

    def test_it_refuses_an_account_that_cannot_call_knox_guard(self):
        unready = KnoxAccount.objects.create(name="Half", environment="sandbox")
        self.client.force_login(self.operator)
        r = self.client.post(f"/guard/sync/{unready.pk}/", follow=True)
        assert "cannot call Knox Guard yet" in unescape(r.content.decode()) and not Job.objects.exists()

    def test_a_viewer_gets_403_and_an_anonymous_user_the_login_page(self):
        self.client.force_login(self.viewer)
        assert self.client.post(self.url).status_code == 403
        assert Client().post(self.url)["Location"].startswith("/login/")
        assert not Job.objects.exists()

    def test_it_rejects_get_with_405(self):
        self.client.force_login(self.operator)
        assert self.client.get(self.url).status_code == 405


class ScheduleTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.url = "/guard/sync/schedule/"

    def test_an_operator_schedules_and_removes_a_daily_sync(self):
        self.client.force_login(self.operator)
        r = self.client.post(self.url, {"account": self.account.pk, "hour": 4})
        assert r.status_code == 302
        s = Schedule.objects.get(func=SYNC)
        assert (s.func, s.args, s.cron, s.schedule_type) == (
            "guard.tasks.scheduled_sync", repr((self.account.pk,)), "0 4 * * *", Schedule.CRON,
        )  # fmt: skip
        self.client.post(self.url, {"account": self.account.pk, "hour": 5})
        assert Schedule.objects.get(func=SYNC).cron == "0 5 * * *"  # one schedule per account
        assert "0 5 * * *" in self.client.get("/guard/").content.decode()
        assert self.client.post(f"/guard/sync/schedule/{s.pk}/delete/").status_code == 302
        assert not Schedule.objects.filter(func=SYNC).exists()
        assert AuditEvent.objects.filter(action="guard.sync_unschedule").exists()

    def test_the_scheduled_function_queues_a_sync(self):
        job = Job.objects.get(pk=scheduled_sync(self.account.pk))
        assert job.kind == "guard.sync" and job.account == self.account and job.created_by is None

    def test_it_refuses_an_hour_outside_0_to_23_and_an_unknown_account(self):
        self.client.force_login(self.operator)
        r = self.client.post(self.url, {"account": self.account.pk, "hour": 24}, follow=True)
        assert "Choose an hour between 0 and 23" in r.content.decode()
        assert self.client.post(self.url, {"account": 9999, "hour": 3}).status_code == 400
        assert not Schedule.objects.filter(func=SYNC).exists()

    def test_a_viewer_gets_403(self):
        s = Schedule.objects.create(func="guard.tasks.scheduled_sync", name="Knox Guard sync: account 1")
        self.client.force_login(self.viewer)
        assert self.client.post(self.url, {"account": self.account.pk, "hour": 4}).status_code == 403
        assert self.client.post(f"/guard/sync/schedule/{s.pk}/delete/").status_code == 403
        assert Schedule.objects.filter(func=SYNC).count() == 1

    def test_it_rejects_get_with_405(self):
        self.client.force_login(self.operator)
        assert self.client.get(self.url).status_code == 405

    def test_it_removes_only_guard_sync_schedules(self):
        other = Schedule.objects.create(func="kdp.tasks.scheduled_reconcile", name="KDP reconcile: account 1")
        self.client.force_login(self.operator)
        assert self.client.post(f"/guard/sync/schedule/{other.pk}/delete/").status_code == 404
