"""Email when a job ends (portal.notify): whoever queued a job gets its outcome and a link, unless they turned it
off on "My settings"; the every-minute sweep sends it, so nothing on the path that ends a job waits on mail."""

from __future__ import annotations

import pytest
from django.core import mail
from django.test import override_settings
from django_q.models import Schedule

from portal import notify
from portal.models import AuditEvent, Job, UserSettings
from portal.tasks import notify_ended_jobs
from tests.base import BaseTestCase


def ended(kind: str = "kdp.upload", *, by=None, title: str = "Register devices for Harbour", ok=3, bad=0) -> Job:
    job = Job.objects.create(kind=kind, title=title, created_by=by, total=ok + bad)
    job.claim("test-worker")
    job.add_progress(succeeded=ok, failed=bad)
    job.finish()
    return job


@override_settings(PORTAL_URL="https://portal.example.com")
class NotifyTestCase(BaseTestCase):
    def test_ending_a_job_sends_nothing_by_itself(self):
        ended(by=self.operator)
        assert mail.outbox == []  # the job's end path has no mail in it; the sweep sends

    def test_the_owner_gets_the_outcome_and_a_link_once(self):
        job = ended(by=self.operator, ok=3, bad=2)
        assert notify_ended_jobs() == "sent 1 emails"
        (email,) = mail.outbox
        assert email.to == ["olivia@example.org"]
        assert email.subject == f"Job #{job.pk} partially failed: Register devices for Harbour"
        assert "ended: Partially failed." in email.body
        assert "Devices: 5; succeeded 3, failed 2." in email.body
        assert f"Open the job: https://portal.example.com/kdp/jobs/{job.pk}/" in email.body
        assert "https://portal.example.com/settings/" in email.body
        job.refresh_from_db()
        assert job.end_notified
        assert notify.notify_ended_jobs() == 0 and len(mail.outbox) == 1

    def test_a_failed_job_says_what_went_wrong(self):
        job = Job.objects.create(kind="guard.lock", title="Lock 10 devices", created_by=self.operator)
        job.claim("test-worker")
        job.fail("Knox refused the credentials (401): upload keys.json again.")
        notify.notify_ended_jobs()
        (email,) = mail.outbox
        assert email.subject.startswith(f"Job #{job.pk} failed: Lock 10 devices")
        assert "What went wrong: Knox refused the credentials (401): upload keys.json again." in email.body

    def test_running_and_queued_jobs_wait_for_their_end(self):
        Job.objects.create(kind="kdp.upload", created_by=self.operator)
        running = Job.objects.create(kind="kdp.upload", created_by=self.operator)
        running.claim("test-worker")
        assert notify.notify_ended_jobs() == 0 and mail.outbox == []
        assert Job.objects.filter(end_notified=False).count() == 2

    def test_no_email_for_whoever_turned_it_off_has_no_address_or_queued_nothing(self):
        UserSettings.objects.create(user=self.viewer, email_on_job_end=False)
        self.admin.email = ""
        self.admin.save()
        jobs = [ended(by=self.viewer), ended(by=self.admin), ended(by=None)]
        assert notify.notify_ended_jobs() == 0 and mail.outbox == []
        assert all(Job.objects.get(pk=j.pk).end_notified for j in jobs)  # dealt with: never looked at again

    def test_no_email_for_reading_a_spreadsheet_or_a_lookup(self):
        from portal.lookups import CONNECTION_TEST

        ended("kdp.parse", by=self.operator, title="Read devices.xlsx")
        ended(CONNECTION_TEST, by=self.operator, title="Test connection")
        assert notify.notify_ended_jobs() == 0 and mail.outbox == []

    def test_several_ended_jobs_come_as_one_email(self):
        jobs = [ended(by=self.operator, title=f"Lock device {i}") for i in range(3)]
        ended(by=self.outsider, title="Someone else's")
        assert notify.notify_ended_jobs() == 2
        mine = next(m for m in mail.outbox if m.to == ["olivia@example.org"])
        assert mine.subject == "3 of your jobs ended"
        for job in jobs:
            assert f'Job #{job.pk}, "{job.title}": Succeeded.' in mine.body
            assert f"https://portal.example.com/kdp/jobs/{job.pk}/" in mine.body

    def test_a_long_digest_lists_the_first_jobs_and_counts_the_rest(self):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(notify, "DIGEST_LIMIT", 2)
            for i in range(5):
                ended(by=self.operator, title=f"Lock device {i}")
            notify.notify_ended_jobs()
        (email,) = mail.outbox
        assert "5 jobs you queued ended" in email.body and "And 3 more: https://portal.example.com/jobs/" in email.body

    def test_a_failed_send_gives_the_jobs_back_for_the_next_sweep(self):
        job = ended(by=self.operator)

        def refuse(*args, **kwargs):
            raise ConnectionRefusedError("SMTP server down")

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(notify, "send_mail", refuse)
            with pytest.raises(ConnectionRefusedError):
                notify.notify_ended_jobs()
        assert not Job.objects.get(pk=job.pk).end_notified
        assert notify.notify_ended_jobs() == 1 and len(mail.outbox) == 1

    def test_a_title_with_line_breaks_makes_a_one_line_subject(self):
        ended(by=self.operator, title="Read evil\r\nBcc: victim@example.org.csv")
        notify.notify_ended_jobs()
        assert "\n" not in mail.outbox[0].subject and mail.outbox[0].to == ["olivia@example.org"]

    def test_the_sweep_runs_every_minute(self):
        schedule = Schedule.objects.get(func="portal.tasks.notify_ended_jobs")
        assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == ("I", 1, -1)


class MySettingsTestCase(BaseTestCase):
    url = "/settings/"

    def test_it_is_linked_from_the_header_and_on_by_default(self):
        self.client.force_login(self.viewer)
        r = self.client.get("/")
        self.assertContains(r, 'href="/settings/">My settings</a>')
        r = self.client.get(self.url)
        self.assertContains(r, 'id="id_email_on_job_end" checked')
        self.assertContains(r, "Emails go to <strong>victor@example.org</strong>")

    def test_a_user_turns_the_emails_off_and_on(self):
        self.client.force_login(self.viewer)
        r = self.client.post(self.url, {})
        self.assertRedirects(r, self.url)
        assert not UserSettings.objects.get(user=self.viewer).email_on_job_end
        assert AuditEvent.objects.filter(action="user.settings", actor=self.viewer).count() == 1
        self.client.post(self.url, {"email_on_job_end": "on"})
        assert UserSettings.objects.get(user=self.viewer).email_on_job_end

    def test_it_says_when_no_email_can_reach_the_user(self):
        self.viewer.email = ""
        self.viewer.save()
        self.client.force_login(self.viewer)
        self.assertContains(self.client.get(self.url), "Your account has no email address")

    def test_it_needs_a_login_and_a_role_and_get_or_post(self):
        assert self.client.get(self.url).status_code == 302
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        self.client.force_login(self.viewer)
        assert self.client.put(self.url).status_code == 405
