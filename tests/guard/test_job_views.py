"""The Knox Guard job page (progress, per-device results, report), retrying failed devices, and the polling that
stops when the job ends. Jobs are built from records directly: nothing here calls Knox."""

from __future__ import annotations

import io
from html import unescape

import python_calamine

from guard.client import ActionParams
from guard.models import GuardAction, GuardDevice, queue_action
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase
from tests.guard.helpers import guard_account, make_device


class GuardJobTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.devices = [make_device(self.account, "Enrolled", n) for n in range(1, 5)]

    def finished(
        self, action: str = "lock", *, ok: int = 2, bad: int = 2, reason: str = "", code: str = "4000310"
    ) -> Job:
        """A finished job: `ok` devices succeeded, `bad` failed with `code` (by default Knox's state error)."""
        params = ActionParams(message="Pay", tel="+44 20 7946 0000") if ACTION_PARAMS[action] else ActionParams()
        job = queue_action(self.account, action, params, user=self.admin, devices=[d.pk for d in self.devices])
        job.claim("test-worker")
        for i, d in enumerate(self.devices[: ok + bad]):
            failed = i >= ok
            GuardAction.objects.create(
                account=self.account, job=job, device=d, device_uid=d.device_uid, action=action, params={},
                outcome="failed" if failed else "succeeded", code=code if failed else "",
                message="STATE_INVALID" if failed else "", reason=reason if failed else "", state_before="Enrolled",
            )  # fmt: skip
        job.add_progress(succeeded=ok, failed=bad)
        job.finish()
        return job


ACTION_PARAMS = {"lock": True, "blink": True, "message": True, "unlock": False, "complete": False, "delete": False}


class JobPageTestCase(GuardJobTestCase):
    def test_it_shows_progress_parameters_and_per_device_results(self):
        job = self.finished()
        self.client.force_login(self.viewer)
        r = self.client.get(f"/guard/jobs/{job.pk}/")
        html = unescape(r.content.decode())
        assert f'id="job-{job.pk}-progress"' in html and "Partially failed" in html
        assert html.count("badge-succeeded") >= 2 and "4000310" in html and "state does not allow" in html
        assert 'hx-trigger="jobFinished from:body"' in html
        assert "every 2s" not in html  # finished: the progress fragment no longer polls
        assert f'href="/guard/jobs/{job.pk}/report.xlsx"' in html
        assert "Retry the failed devices" not in html  # a viewer may not
        assert "Pay" in html  # the message shown on the phones

    def test_it_polls_while_the_job_runs(self):
        job = queue_action(self.account, "unlock", ActionParams(), user=self.admin, devices=[self.devices[0].pk])
        self.client.force_login(self.operator)
        html = self.client.get(f"/guard/jobs/{job.pk}/").content.decode()
        assert f'hx-get="/jobs/{job.pk}/progress/?v=' in html and 'hx-trigger="every 2s"' in html
        assert f'action="/jobs/{job.pk}/cancel/"' in html  # still queued: it can be cancelled

    def test_the_progress_poll_stops_and_announces_the_end(self):
        job = queue_action(self.account, "unlock", ActionParams(), user=self.admin, devices=[self.devices[0].pk])
        self.client.force_login(self.viewer)
        running = self.client.get(f"/jobs/{job.pk}/progress/", headers={"HX-Request": "true"})
        assert b'hx-trigger="every 2s"' in running.content and "HX-Trigger" not in running
        job.claim("w")
        job.add_progress(succeeded=1)
        job.finish()
        done = self.client.get(f"/jobs/{job.pk}/progress/", headers={"HX-Request": "true"})
        assert b"hx-trigger" not in done.content and b"<html" not in done.content
        assert "jobFinished" in done["HX-Trigger"]

    def test_it_filters_results_by_outcome_in_a_fragment(self):
        job = self.finished()
        self.client.force_login(self.viewer)
        r = self.client.get(f"/guard/jobs/{job.pk}/", {"outcome": "failed"},
                            headers={"HX-Request": "true", "HX-Target": "job-results"})  # fmt: skip
        html = r.content.decode()
        assert "<html" not in html and 'id="job-results"' in html
        assert html.count('<span class="badge badge-failed">') == 2 and 'class="badge badge-succeeded"' not in html

    def test_it_pages_results_by_id(self):
        self.devices += [make_device(self.account, "Enrolled", n) for n in range(5, 60)]
        job = self.finished(ok=50, bad=9)
        self.client.force_login(self.viewer)
        first = self.client.get(f"/guard/jobs/{job.pk}/")
        assert len(first.context["results"]) == 50
        second = self.client.get(f"/guard/jobs/{job.pk}/", {"after": first.context["next_after"]})
        assert len(second.context["results"]) == 9 and second.context["next_after"] is None

    def test_it_sends_another_service_s_job_to_its_own_page(self):
        job = Job.objects.create(kind="portal.other", account=self.account)
        self.client.force_login(self.viewer)
        assert self.client.get(f"/guard/jobs/{job.pk}/")["Location"] == f"/jobs/{job.pk}/"

    def test_it_shows_a_sync_job_without_a_results_table(self):
        job = Job.objects.create(kind="guard.sync", account=self.account, title="Sync")
        self.client.force_login(self.viewer)
        r = self.client.get(f"/guard/jobs/{job.pk}/")
        assert r.status_code == 200 and b'id="job-results"' not in r.content

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        job = self.finished()
        assert self.client.get(f"/guard/jobs/{job.pk}/")["Location"].startswith("/login/")

    def test_it_answers_404_for_an_unknown_job(self):
        self.client.force_login(self.viewer)
        assert self.client.get("/guard/jobs/999999/").status_code == 404


class JobReportTestCase(GuardJobTestCase):
    def test_it_downloads_the_results_with_formulas_neutralised(self):
        job = self.finished(reason="=cmd|' /C calc'!A0")
        self.client.force_login(self.viewer)
        r = self.client.get(f"/guard/jobs/{job.pk}/report.xlsx")
        rows = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(b"".join(r.streaming_content))).get_sheet_by_index(0).to_python()  # fmt: skip
        assert rows[0][0] == "Identifier as given" and len(rows) == 5
        assert rows[1][0] == self.devices[0].device_uid and rows[3][7] == "4000310"
        assert rows[3][9].startswith("'=")
        assert AuditEvent.objects.filter(action="guard.export", target_id=str(job.pk)).exists()

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        job = self.finished()
        assert self.client.get(f"/guard/jobs/{job.pk}/report.xlsx").status_code == 302


class JobRetryTestCase(GuardJobTestCase):
    def test_an_admin_retries_the_failed_devices_that_still_exist(self):
        job = self.finished(code="NOT_SENT")
        GuardDevice.objects.filter(pk=self.devices[3].pk).delete()
        self.client.force_login(self.admin)
        page = unescape(self.client.get(f"/guard/jobs/{job.pk}/").content.decode())
        # The button, the typed confirmation and the note count what the retry sends: the device left in the portal.
        assert "Retry the 1 failed device<" in page and "Type <code>LOCK 1</code> to confirm" in page
        assert "Left out: 1 not in the portal's records" in " ".join(page.split())
        r = self.client.post(f"/guard/jobs/{job.pk}/retry/", {"confirmation": "LOCK 1"})
        retry = Job.objects.exclude(pk=job.pk).get()
        self.assertRedirects(r, f"/guard/jobs/{retry.pk}/", fetch_redirect_response=False)
        assert retry.kind == "guard.lock" and retry.params["devices"] == [self.devices[2].pk]
        assert retry.params["action_params"] == job.params["action_params"]
        assert AuditEvent.objects.get(action="guard.retry").summary == {"retry_of": job.pk, "devices": 1}
        event = AuditEvent.objects.get(action="guard.lock", target_id=str(retry.pk))
        assert event.summary["typed_confirmation"] == "LOCK 1" and event.summary["retry_of"] == job.pk

    def test_retrying_a_lock_complete_or_delete_needs_the_typed_confirmation(self):
        for action in ("lock", "complete", "delete"):
            Job.objects.all().delete()
            job = self.finished(action, code="NOT_SENT")
            self.client.force_login(self.admin)
            expected = f"{action.upper()} 2"
            for typed, text in (("", f"Type {expected} to confirm"), ("LOCK 4", f"type exactly {expected}")):
                r = self.client.post(f"/guard/jobs/{job.pk}/retry/", {"confirmation": typed})
                assert r.status_code == 200 and text in unescape(r.content.decode()), (action, typed)
                assert r.context["retry_form"].errors["confirmation"]
            assert Job.objects.count() == 1, action
            r = self.client.post(f"/guard/jobs/{job.pk}/retry/", {"confirmation": expected})
            assert r.status_code == 302 and Job.objects.filter(retry_of=job, total=2).exists(), action

    def test_retrying_an_unlock_needs_no_typing(self):
        job = self.finished("unlock", code="NOT_SENT")
        self.client.force_login(self.admin)
        page = unescape(self.client.get(f"/guard/jobs/{job.pk}/").content.decode())
        assert "to confirm" not in page and 'data-confirm="Unlock again on the 2 failed devices' in page
        assert self.client.post(f"/guard/jobs/{job.pk}/retry/").status_code == 302
        assert Job.objects.filter(retry_of=job).exists()

    def test_no_retry_is_offered_when_knox_refused_every_device_for_its_state(self):
        job = self.finished()
        self.client.force_login(self.admin)
        page = self.client.get(f"/guard/jobs/{job.pk}/").content.decode()
        assert "/retry/" not in page and "nothing to retry" in page
        assert "2 in a state that does not allow the action." in page
        r = self.client.post(f"/guard/jobs/{job.pk}/retry/", follow=True)
        assert "a retry cannot fix failures Knox refused for good" in unescape(r.content.decode())
        assert Job.objects.count() == 1

    def test_a_second_retry_of_the_same_job_queues_nothing_and_says_so(self):
        job = self.finished(code="NOT_SENT")
        self.client.force_login(self.admin)
        first = self.client.post(f"/guard/jobs/{job.pk}/retry/", {"confirmation": "LOCK 2"})
        retry = Job.objects.get(retry_of=job)
        again = self.client.post(f"/guard/jobs/{job.pk}/retry/", follow=True)
        assert again.redirect_chain[0][0] == first["Location"] == f"/guard/jobs/{retry.pk}/"
        self.assertContains(again, f"Job #{job.pk} was already retried as job #{retry.pk}")
        assert Job.objects.count() == 2
        assert AuditEvent.objects.filter(action="guard.retry").count() == 1
        assert AuditEvent.objects.filter(action="guard.lock", target_id=str(retry.pk)).count() == 1

    def test_an_operator_gets_403_retrying_a_lock_but_may_retry_a_blink(self):
        lock = self.finished("lock")
        self.client.force_login(self.operator)
        assert self.client.post(f"/guard/jobs/{lock.pk}/retry/").status_code == 403
        assert "Retry the failed devices" not in self.client.get(f"/guard/jobs/{lock.pk}/").content.decode()
        blink_job = Job.objects.create(kind="guard.message", account=self.account, status="partial", failed=1,
                                       params={"action": "message", "devices": [self.devices[0].pk],
                                               "action_params": {"message": "Hi", "tel": "123456"}})  # fmt: skip
        GuardAction.objects.create(account=self.account, job=blink_job, device=self.devices[0], action="message",
                                   device_uid=self.devices[0].device_uid, outcome="failed", code="UNKNOWN")  # fmt: skip
        r = self.client.post(f"/guard/jobs/{blink_job.pk}/retry/")
        assert r.status_code == 302 and Job.objects.filter(kind="guard.message").count() == 2

    def test_a_viewer_gets_403_and_nothing_is_queued(self):
        job = self.finished()
        self.client.force_login(self.viewer)
        assert self.client.post(f"/guard/jobs/{job.pk}/retry/").status_code == 403
        assert Job.objects.count() == 1

    def test_it_rejects_get_with_405(self):
        job = self.finished()
        self.client.force_login(self.admin)
        assert self.client.get(f"/guard/jobs/{job.pk}/retry/").status_code == 405

    def test_it_explains_when_nothing_can_be_retried(self):
        job = self.finished(code="NOT_SENT")
        GuardDevice.objects.filter(pk__in=[d.pk for d in self.devices[2:]]).delete()
        self.client.force_login(self.admin)
        r = self.client.post(f"/guard/jobs/{job.pk}/retry/", follow=True)
        assert "the others are not in the portal's records" in unescape(r.content.decode())
        assert Job.objects.count() == 1

    def test_it_waits_for_the_job_to_finish(self):
        job = queue_action(self.account, "unlock", ActionParams(), user=self.admin, devices=[self.devices[0].pk])
        self.client.force_login(self.admin)
        r = self.client.post(f"/guard/jobs/{job.pk}/retry/", follow=True)
        assert "has not finished yet" in r.content.decode() and Job.objects.count() == 1

    def test_it_refuses_a_job_that_is_not_an_action(self):
        job = Job.objects.create(kind="guard.sync", account=self.account, status="failed")
        self.client.force_login(self.admin)
        assert self.client.post(f"/guard/jobs/{job.pk}/retry/").status_code == 400


class RetryOnlyWhatARetryCanFixTestCase(GuardJobTestCase):
    """Issue 16 item 4: “Retry” is offered only for what a retry can fix, and the page says why when not."""

    def test_no_retry_button_when_every_failure_is_permanent_and_the_page_says_why(self):
        job = self.finished(ok=0, bad=4, code="4040300")
        GuardAction.objects.filter(job=job, device=self.devices[3]).update(code="4001806")
        self.client.force_login(self.admin)
        page = " ".join(unescape(self.client.get(f"/guard/jobs/{job.pk}/").content.decode()).split())
        assert "/retry/" not in page and "Retry the" not in page
        assert "No failure of this job can be fixed by sending it again, so there is nothing to retry." in page
        assert "3 unknown to Knox; 1 already registered in Knox." in page

    def test_failed_rows_without_a_device_in_the_portal_offer_no_retry(self):
        job = self.finished(ok=2, bad=2, code="NOT_FOUND")
        GuardAction.objects.filter(job=job, outcome="failed").update(device=None)
        self.client.force_login(self.admin)
        page = " ".join(unescape(self.client.get(f"/guard/jobs/{job.pk}/").content.decode()).split())
        assert "Retry the" not in page and "nothing to retry" in page
        assert "2 not in the portal's records (sync devices from Knox, then act on them)" in page

    def test_the_retry_is_the_main_button_only_for_the_fixable_part(self):
        job = self.finished(action="message", ok=0, bad=4, code="4040300")
        GuardAction.objects.filter(job=job, device=self.devices[0]).update(code="NOT_SENT")
        self.client.force_login(self.admin)
        page = " ".join(unescape(self.client.get(f"/guard/jobs/{job.pk}/").content.decode()).split())
        assert 'class="primary">Retry the 1 failed device</button>' in page
        assert "A retry sends the 1 device whose failure a retry can fix. Left out: 3 unknown to Knox." in page


class JobPagePlainWordsTestCase(GuardJobTestCase):
    """Issue 16 item 10: the job page named parameters and flags by their API fields ("tel", "interval",
    "autoAccept: off") and showed "? → …" for states it did not know."""

    def test_parameters_flags_and_states_are_in_plain_words(self):
        params = ActionParams(
            message="Pay", tel="+44 20 7946 0000", interval=3600, time_limit=(23, 7), days_limit=(0, 1)
        )
        job = queue_action(self.account, "blink", params, user=self.admin, devices=[self.devices[0].pk])
        GuardAction.objects.create(account=self.account, job=job, device=None, device_uid="359", action="blink",
                                   outcome="failed", code="NOT_FOUND")  # fmt: skip
        upload = Job.objects.create(
            kind="guard.upload", account=self.account, params={"flags": {"autoAccept": False, "autoLock": True}}
        )
        self.client.force_login(self.viewer)
        page = " ".join(unescape(self.client.get(f"/guard/jobs/{job.pk}/").content.decode()).split())
        for plain in ("<dt>Contact phone</dt><dd>+44 20 7946 0000</dd>", "<dt>Repeat every</dt><dd>1 hour</dd>",
                      "<dt>Quiet hours</dt><dd>23:00 to 07:00</dd>", "<dt>Quiet days</dt><dd>Sunday to Monday</dd>",
                      "the device becomes Starting Reminder", "not in the portal's records"):  # fmt: skip
            assert plain in page, plain
        assert "<dt>tel</dt>" not in page and "<dt>interval</dt>" not in page and "? →" not in page
        page = " ".join(unescape(self.client.get(f"/guard/jobs/{upload.pk}/").content.decode()).split())
        assert "Accept automatically: no · Lock automatically: yes" in page and "autoAccept" not in page
