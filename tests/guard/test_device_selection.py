"""Acting on the Knox Guard device list's selection (issue 16): ticked rows or every device matching the filter →
a review page (GET, the selection in the URL) that checks each device's state for the action → the parameters and
the typed confirmation → one job. “All matching” queues the filter, and the job plans it in batches."""

from __future__ import annotations

import re
from html import unescape

import requests

from guard import tasks
from guard.models import GuardAction, GuardChunk, GuardDevice
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, make_user
from tests.guard.helpers import CONTACT, guard_account, make_device

LOCK = {"message": "Payment overdue: call us", **CONTACT}


class DeviceSelectionTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.enrolled = [make_device(self.account, "Enrolled", n) for n in range(1, 4)]
        self.accepted = [make_device(self.account, "Accepted", n) for n in range(4, 6)]
        self.url = "/guard/devices/act/"

    def ticked(self, devices, action: str = "lock", **extra):
        return {"scope": "selected", "ids": [str(d.pk) for d in devices], "action": action, **extra}

    def text(self, r) -> str:
        return " ".join(unescape(r.content.decode()).split())

    def words(self, r) -> str:
        """The page's text without its tags."""
        return " ".join(unescape(re.sub(r"<[^>]+>", "", r.content.decode())).split())

    def test_the_list_offers_ticking_and_the_actions_the_role_allows(self):
        self.client.force_login(self.admin)
        html = self.client.get("/guard/devices/", {"state": "Enrolled"}).content.decode()
        assert 'action="/guard/devices/act/"' in html and 'name="ids"' in html and 'data-check-all="ids"' in html
        assert '<option value="lock">Lock</option>' in html and 'value="matching"' in html
        assert "Review for all devices matching this filter (3 devices)" in html
        assert '<input type="hidden" name="state" value="Enrolled">' in html  # the filter travels with the selection
        self.client.force_login(self.operator)
        html = self.client.get("/guard/devices/").content.decode()
        assert '<option value="message">' in html and '<option value="lock">' not in html
        self.client.force_login(self.viewer)
        assert 'name="ids"' not in self.client.get("/guard/devices/").content.decode()

    def test_the_review_counts_what_can_be_sent_and_why_the_others_cannot(self):
        self.client.force_login(self.admin)
        r = self.client.get(self.url, self.ticked(self.enrolled + self.accepted))
        page = self.words(r)
        assert "5 devices ticked" in page and "3 can take “Lock”" in page and "2 cannot, and will not be sent" in page
        assert "2 recorded as Activating, and “Lock” is possible only from Active" in page
        assert "Type <code>LOCK 3</code> to confirm" in self.text(r) and "Lock: 3 devices" in page
        assert not Job.objects.exists()

    def test_a_lock_of_the_ticked_devices_needs_the_typed_confirmation_and_sends_only_those_that_can_take_it(self):
        self.client.force_login(self.admin)
        data = self.ticked(self.enrolled + self.accepted, **LOCK)
        for typed, text in (("", "Type LOCK 3 to confirm"), ("LOCK 5", "type exactly LOCK 3")):
            r = self.client.post(self.url, {**data, "confirmation": typed})
            assert r.status_code == 200 and text in self.text(r), typed
        assert not Job.objects.exists()
        r = self.client.post(self.url, {**data, "confirmation": "LOCK 3"})
        job = Job.objects.get()
        self.assertRedirects(r, f"/guard/jobs/{job.pk}/", fetch_redirect_response=False)
        assert job.kind == "guard.lock" and job.params["devices"] == [d.pk for d in self.enrolled]
        event = AuditEvent.objects.get(action="guard.lock")
        assert event.summary["typed_confirmation"] == "LOCK 3" and event.actor == self.admin

    def test_all_matching_needs_one_account_and_queues_the_filter(self):
        self.client.force_login(self.admin)
        r = self.client.get(self.url, {"scope": "matching", "action": "lock", "state": "Enrolled"}, follow=True)
        assert "Choose one Knox account in the filter" in self.text(r)
        assert r.redirect_chain[0][0] == "/guard/devices/?state=Enrolled"
        query = {"scope": "matching", "action": "lock", "account": self.account.pk, "q": "3500"}
        page = self.words(self.client.get(self.url, query))
        assert "5 devices match the filter" in page and "Type LOCK 3 to confirm" in page
        r = self.client.post(self.url, {**query, **LOCK, "confirmation": "LOCK 3"})
        job = Job.objects.get()
        assert job.params["filter"] == {"q": "3500"} and "devices" not in job.params and job.total == 3
        assert AuditEvent.objects.get(action="guard.lock").summary["filter"] == {"q": "3500"}
        page = self.client.get(r["Location"]).content.decode()
        assert f'href="/guard/devices/?q=3500&amp;account={self.account.pk}">the device list' in page

    def test_a_job_on_a_filter_is_planned_in_batches_and_resumes_where_it_stopped(self):
        more = [make_device(self.account, "Enrolled", n) for n in range(6, 10)]
        busy = Job.objects.create(kind="guard.blink", account=self.account, status=Job.Status.RUNNING)
        GuardDevice.objects.filter(pk=more[-1].pk).update(pending_job=busy)
        done = Job.objects.create(kind="guard.blink", account=self.account, status=Job.Status.SUCCEEDED)
        GuardDevice.objects.filter(pk=more[0].pk).update(pending_job=done)  # a finished job holds nothing
        self.client.force_login(self.admin)
        query = {"scope": "matching", "action": "lock", "account": self.account.pk, "state": "Enrolled"}
        page = self.words(self.client.get(self.url, query))
        assert "6 can take “Lock”" in page and "1 busy: another job is acting on them" in page
        self.client.post(self.url, {**query, **LOCK, "confirmation": "LOCK 6"})
        job = Job.objects.get(kind="guard.lock")
        old = tasks.PLAN_BATCH
        tasks.PLAN_BATCH = 2
        try:
            tasks.plan_matching(job)
            first = GuardAction.objects.filter(job=job).count()
            tasks.plan_matching(job)  # a resumed job plans nothing twice
        finally:
            tasks.PLAN_BATCH = old
        assert first == GuardAction.objects.filter(job=job).count() == 6
        assert GuardChunk.objects.filter(job=job).count() == 3  # one request per batch of 2
        assert set(GuardDevice.objects.filter(pending_job=job).values_list("pk", flat=True)) == {
            d.pk for d in self.enrolled + more[:-1]
        }
        job.refresh_from_db()
        assert job.total == 6 and job.failed == 0

    def test_ticked_devices_of_two_accounts_are_refused(self):
        other = make_device(guard_account("Other Finance"), "Enrolled", 20)
        self.client.force_login(self.admin)
        r = self.client.get(self.url, self.ticked([self.enrolled[0], other]), follow=True)
        assert "belong to more than one Knox account" in self.text(r) and not Job.objects.exists()

    def test_nothing_ticked_is_explained(self):
        self.client.force_login(self.admin)
        r = self.client.get(self.url, {"scope": "selected", "action": "lock"}, follow=True)
        assert "Tick at least one device" in self.text(r)

    def test_an_operator_gets_403_for_a_lock_and_may_send_a_message(self):
        self.client.force_login(self.operator)
        assert self.client.get(self.url, self.ticked(self.enrolled)).status_code == 403
        r = self.client.post(self.url, self.ticked(self.enrolled, "message", message="Hi", **CONTACT))
        assert r.status_code == 302 and Job.objects.get().kind == "guard.message"

    def test_a_viewer_gets_403_and_an_unknown_action_400(self):
        self.client.force_login(self.viewer)
        assert self.client.get(self.url, self.ticked(self.enrolled, "message")).status_code == 403
        self.client.force_login(self.admin)
        assert self.client.get(self.url, self.ticked(self.enrolled, "wipe")).status_code == 400


# --- against the sandbox ------------------------------------------------------------------------------------


def test_locking_all_matching_devices_locks_them_in_the_sandbox(client, guard_synced, knox_sandbox):
    admin = make_user("alice", "admin", is_staff=True)
    enrolled = list(GuardDevice.objects.filter(account=guard_synced, state="Enrolled").order_by("id"))
    assert len(enrolled) >= 2
    client.force_login(admin)
    query = {"scope": "matching", "action": "lock", "account": guard_synced.pk, "state": "Enrolled"}
    r = client.post("/guard/devices/act/", {**query, **LOCK, "confirmation": f"LOCK {len(enrolled)}"})
    job = Job.objects.get(kind="guard.lock")
    assert r["Location"] == f"/guard/jobs/{job.pk}/"
    tasks.run_actions(job.pk)
    job.refresh_from_db()
    assert (job.status, job.succeeded, job.failed) == (Job.Status.SUCCEEDED, len(enrolled), 0), job.error_summary
    state = requests.get(f"{knox_sandbox.url}/_sandbox/state", timeout=10).json()
    assert all(state["guard"]["devices"][d.device_uid]["state"] in ("Locking", "Locked") for d in enrolled)
