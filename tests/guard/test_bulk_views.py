"""Bulk Knox Guard actions from a spreadsheet: upload form → preview (parsed in a job, polled) → action, parameters
and typed confirmation → job. The end-to-end lock runs against the in-process sandbox."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import requests
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Count
from django.test import Client

from guard.models import GuardAction, GuardDevice
from guard.tasks import run_actions
from portal.models import AuditEvent, Job, KnoxAccount, Upload, UploadRow
from tests.base import BaseTestCase, fresh_imeis, make_user
from tests.guard.helpers import CONTACT, guard_account, imei_csv, stage
from tests.kdp.helpers import make_upload

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "guard-bulk-10.xlsx"
LOCK = {"action": "lock", "message": "Payment overdue: call us", **CONTACT}


def record_rows(upload: Upload, state: str = "Enrolled", rows: slice = slice(None)) -> list[GuardDevice]:
    """Record the devices of a staged file's valid rows in the portal, as a sync would, in `state`."""
    values = list(upload.rows.filter(status="valid").order_by("row_number").values_list("value", flat=True))[rows]
    return [GuardDevice.objects.create(account=upload.account, device_uid=v, state=state) for v in values]


class BulkNewTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.url = "/guard/bulk/"

    def post_file(self, user: User, name: str, content: bytes):
        self.client.force_login(user)
        with self.captureOnCommitCallbacks(execute=True):  # the parse job runs in-process (sync queue)
            return self.client.post(self.url, {"file": SimpleUploadedFile(name, content), "account": self.account.pk})

    def test_it_shows_the_form_with_guard_ready_accounts(self):
        self.client.force_login(self.operator)
        r = self.client.get(self.url)
        self.assertContains(r, 'enctype="multipart/form-data"')
        self.assertContains(r, f'<option value="{self.account.pk}">Guard Finance</option>')
        self.assertNotContains(r, "No Knox account is ready")

    def test_it_stages_the_sample_and_redirects_to_the_preview(self):
        r = self.post_file(self.operator, "guard-bulk-10.xlsx", SAMPLE.read_bytes())
        upload = Upload.objects.get()
        self.assertRedirects(r, f"/guard/bulk/{upload.pk}/", fetch_redirect_response=False)
        upload.refresh_from_db()
        assert (upload.service, upload.operation, upload.status, upload.valid) == ("guard", "guard", "ready", 10)
        assert upload.parse_job.kind == "guard.parse"
        assert set(upload.rows.values_list("approve_id", flat=True)) == {f"LOAN-20260{n:02d}" for n in range(10)}
        assert AuditEvent.objects.filter(action="guard.file_upload", actor=self.operator).exists()

    def test_it_refuses_another_extension(self):
        r = self.post_file(self.operator, "loans.pdf", b"%PDF-1.4")
        assert r.status_code == 200 and r.context["form"].errors["file"]
        assert not Upload.objects.exists()

    def test_it_refuses_an_account_not_ready_for_guard(self):
        self.account.set_secret("private_key", "")
        self.account.save()
        r = self.post_file(self.operator, "a.csv", imei_csv(["359221145350335"]))
        assert r.status_code == 200 and r.context["form"].errors["account"]
        assert not Upload.objects.exists()

    def test_it_forbids_a_viewer_and_stages_nothing(self):
        assert self.post_file(self.viewer, "a.csv", imei_csv(["359221145350335"])).status_code == 403
        assert self.client.get(self.url).status_code == 403
        assert not Upload.objects.exists() and not Job.objects.exists()

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        r = self.client.post(self.url, {"file": SimpleUploadedFile("a.csv", b"IMEI\n")})
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        assert not Upload.objects.exists()

    def test_it_answers_other_methods_with_405(self):
        self.client.force_login(self.operator)
        assert self.client.put(self.url).status_code == 405


class BulkPreviewTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.upload = stage(self.account, SAMPLE.read_bytes(), "guard-bulk-10.xlsx")
        record_rows(self.upload)
        self.url = f"/guard/bulk/{self.upload.pk}/"

    def test_it_shows_counts_rows_and_the_actions_an_admin_may_take(self):
        self.client.force_login(self.admin)
        html = unescape(self.client.get(self.url).content.decode())
        assert "<strong>10</strong> valid" in html and "LOAN-2026009" in html
        tabs = re.findall(r'<a href="\?action=([a-z-]+)"', html)
        assert tabs == ["approve", "reject", "lock", "unlock", "blink", "stop-blink", "message", "complete", "delete"]
        assert 'hx-trigger="every' not in html

    def test_it_offers_an_operator_no_control_action(self):
        self.client.force_login(self.operator)
        tabs = re.findall(r'<a href="\?action=([a-z-]+)"', self.client.get(self.url).content.decode())
        assert tabs == ["approve", "reject", "blink", "stop-blink", "message"]
        assert self.client.get(self.url, {"action": "lock"}).context["confirm"] is None

    def test_it_offers_a_viewer_no_action(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url, {"action": "blink"})
        assert r.status_code == 200 and r.context["offered"] == [] and r.context["confirm"] is None
        self.assertNotContains(r, f'action="/guard/bulk/{self.upload.pk}/confirm/"')

    def test_the_chosen_action_asks_for_the_typed_confirmation(self):
        self.client.force_login(self.admin)
        r = self.client.get(self.url, {"action": "lock"}, headers={"HX-Request": "true", "HX-Target": "bulk-action"})
        html = unescape(r.content.decode())
        assert "<html" not in html and 'id="bulk-action"' in html
        assert "Type <code>LOCK 10</code> to confirm" in html
        blink = unescape(self.client.get(self.url, {"action": "blink"}).content.decode())
        assert "to confirm" not in blink and "Quiet period" in blink
        GuardDevice.objects.filter(account=self.account).update(state="Pending")
        approve = self.client.get(self.url, {"action": "approve"}).content.decode()
        assert 'name="approve_comment"' in approve and 'name="approve_id"' not in approve  # unique per device

    def test_it_polls_while_the_file_is_read_and_refreshes_when_done(self):
        Upload.objects.filter(pk=self.upload.pk).update(status="parsing")
        self.client.force_login(self.viewer)
        html = self.client.get(self.url).content.decode()
        assert f'hx-get="/guard/bulk/{self.upload.pk}/" hx-trigger="every 1s"' in html
        fragment = self.client.get(self.url, headers={"HX-Request": "true", "HX-Target": "upload-status"})
        assert b"<html" not in fragment.content and b"Reading the file" in fragment.content
        Upload.objects.filter(pk=self.upload.pk).update(status="ready")
        done = self.client.get(self.url, headers={"HX-Request": "true", "HX-Target": "upload-status"})
        assert done["HX-Refresh"] == "true"

    def test_it_returns_the_rows_fragment_filtered(self):
        bad = stage(self.account, imei_csv(["359221145350335", "12345"]), "mixed.csv")
        self.client.force_login(self.viewer)
        r = self.client.get(f"/guard/bulk/{bad.pk}/", {"status": "problems"},
                            headers={"HX-Request": "true", "HX-Target": "preview-rows"})  # fmt: skip
        html = r.content.decode()
        assert "<html" not in html and 'id="preview-rows"' in html
        assert "<code>12345</code>" in html and "359221145350335" not in html

    def test_it_refuses_a_meid_for_knox_guard(self):
        meid = stage(self.account, imei_csv(["A0000012345678"]), "meid.csv")
        row = meid.rows.get()
        assert row.status == UploadRow.Status.INVALID and "MEID" in row.reason

    def test_it_answers_404_for_another_service_s_spreadsheet(self):
        kdp = make_upload(self.account, imei_csv(["359221145350335"]), "kdp.csv")
        self.client.force_login(self.viewer)
        assert self.client.get(f"/guard/bulk/{kdp.pk}/").status_code == 404

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        assert self.client.get(self.url)["Location"].startswith("/login/")

    def test_it_downloads_the_problem_rows(self):
        bad = stage(self.account, imei_csv(["359221145350335", "=1+2"]), "mixed.csv")
        self.client.force_login(self.viewer)
        r = self.client.get(f"/guard/bulk/{bad.pk}/problems.xlsx")
        assert r.status_code == 200 and b"".join(r.streaming_content).startswith(b"PK")


class BulkConfirmTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.upload = stage(self.account, SAMPLE.read_bytes(), "guard-bulk-10.xlsx")
        self.devices = record_rows(self.upload)
        self.url = f"/guard/bulk/{self.upload.pk}/confirm/"

    def confirm(self, user: User, **data: object):
        self.client.force_login(user)
        return self.client.post(self.url, data)

    def test_the_right_typed_confirmation_queues_the_lock_and_audits_it(self):
        r = self.confirm(self.admin, **LOCK, confirmation="LOCK 10")
        job = Job.objects.get(kind="guard.lock")
        self.assertRedirects(r, f"/guard/jobs/{job.pk}/", fetch_redirect_response=False)
        assert job.params["upload"] == self.upload.pk and job.total == 10 and job.created_by == self.admin
        self.upload.refresh_from_db()
        assert self.upload.status == Upload.Status.SUBMITTED and self.upload.job == job
        event = AuditEvent.objects.get(action="guard.lock")
        assert event.summary["typed_confirmation"] == "LOCK 10" and event.summary["devices"] == 10
        assert event.actor == self.admin and event.summary["params"]["message"] == "Payment overdue: call us"

    def test_a_wrong_or_missing_confirmation_is_refused_with_a_reason(self):
        for typed, text in (
            ("", "Type LOCK 10 to confirm"),
            ("LOCK 9", "You typed “LOCK 9”; type exactly LOCK 10"),
            ("lock 10", "You typed “lock 10”"),
            ("LOCK", "type exactly LOCK 10"),
            ("COMPLETE 10", "type exactly LOCK 10"),
        ):
            r = self.confirm(self.admin, **LOCK, confirmation=typed)
            assert r.status_code == 200 and b"<html" in r.content, typed
            assert text in unescape(r.content.decode()), typed
        assert not Job.objects.filter(kind="guard.lock").exists()
        self.upload.refresh_from_db()
        assert self.upload.status == Upload.Status.READY

    def test_complete_and_delete_need_their_own_typed_confirmation(self):
        r = self.confirm(self.admin, action="complete", confirmation="LOCK 10")
        assert r.status_code == 200 and "COMPLETE 10" in unescape(r.content.decode())
        GuardDevice.objects.filter(pk__in=[d.pk for d in self.devices]).update(state="Completed")
        r = self.confirm(self.admin, action="delete", confirmation="COMPLETE 10")
        assert r.status_code == 200 and "type exactly DELETE 10" in unescape(r.content.decode())
        r = self.confirm(self.admin, action="delete", confirmation="DELETE 10")
        assert r.status_code == 302 and Job.objects.get(kind="guard.delete").total == 10

    def test_an_account_not_set_up_for_knox_guard_is_refused_in_words_for_an_action_and_an_upload(self):
        half = KnoxAccount.objects.create(name="Half", environment="sandbox")
        action = stage(half, imei_csv(["359221145350335"]), "half.csv")
        upload = stage(half, imei_csv(["359221145350335"]), "half-upload.csv", operation="guard-upload")
        self.client.force_login(self.admin)
        for staged, data in ((action, {**LOCK, "confirmation": "LOCK 1"}), (upload, {"autoAccept": "on"})):
            r = self.client.post(f"/guard/bulk/{staged.pk}/confirm/", data, follow=True)
            assert "Half cannot call Knox Guard yet: it needs keys.json" in unescape(r.content.decode()), staged
            assert r.redirect_chain[-1][0] == f"/guard/bulk/{staged.pk}/"
        assert not Job.objects.filter(kind__in=("guard.lock", "guard.upload")).exists()

    def test_an_operator_may_blink_in_bulk_without_typing(self):
        r = self.confirm(self.operator, action="blink", message="Due", interval=3600, **CONTACT)
        assert r.status_code == 302 and Job.objects.get(kind="guard.blink").created_by == self.operator

    def test_an_operator_gets_403_on_bulk_lock_unlock_complete_and_delete(self):
        for action in ("lock", "unlock", "complete", "delete"):
            r = self.confirm(self.operator, **{**LOCK, "action": action}, confirmation=f"{action.upper()} 10")
            assert r.status_code == 403, action
        assert not Job.objects.filter(kind__startswith="guard.").exclude(kind="guard.parse").exists()

    def test_a_viewer_gets_403_and_nothing_is_queued(self):
        assert self.confirm(self.viewer, action="message", message="Hi", **CONTACT).status_code == 403
        assert Client().post(self.url, {"action": "message"}).status_code == 302
        assert not Job.objects.filter(kind="guard.message").exists()

    def test_it_rejects_get_with_405(self):
        self.client.force_login(self.admin)
        assert self.client.get(self.url).status_code == 405

    def test_invalid_parameters_rerender_the_preview_with_the_error(self):
        for data, field, text in (
            ({"action": "blink", "message": "Due", "interval": 2, **CONTACT}, "interval", "between 3 seconds"),
            ({"action": "blink", "message": "Due", "interval": 60, "days_limit_from": 1, "days_limit_to": 2, **CONTACT},
             "time_limit_from", "Quiet days also need the quiet hours"),
            ({**LOCK, "message": "m" * 201, "confirmation": "LOCK 10"}, "message", "201 characters"),
        ):  # fmt: skip
            r = self.confirm(self.admin, **data)
            assert r.status_code == 200 and text in " ".join(r.context["confirm"].errors[field]), data
        GuardDevice.objects.filter(account=self.account).update(state="Pending")
        r = self.confirm(self.admin, action="approve", approve_comment="c" * 1001)
        assert r.status_code == 200 and "1001 characters" in " ".join(r.context["confirm"].errors["approve_comment"])
        assert not Job.objects.exclude(kind="guard.parse").exists()

    def test_it_submits_a_spreadsheet_only_once(self):
        assert self.confirm(self.operator, action="message", message="Hi", **CONTACT).status_code == 302
        again = self.confirm(self.operator, action="message", message="Hi", **CONTACT)
        assert again.status_code == 302 and again["Location"] == f"/guard/bulk/{self.upload.pk}/"
        assert Job.objects.filter(kind="guard.message").count() == 1

    def test_it_answers_400_for_an_unknown_action(self):
        assert self.confirm(self.admin, action="wipe").status_code == 400


# --- against the sandbox ------------------------------------------------------------------------------------


def test_a_typed_confirmation_bulk_lock_locks_the_sandbox_s_enrolled_devices(client, guard_synced, knox_sandbox):
    admin = make_user("alice", "admin", is_staff=True)
    enrolled = list(GuardDevice.objects.filter(account=guard_synced, state="Enrolled").order_by("id"))
    assert len(enrolled) >= 2
    client.force_login(admin)
    upload = stage(guard_synced, imei_csv(d.device_uid for d in enrolled), "overdue.csv", user=admin)
    assert upload.valid == len(enrolled)
    expected = f"LOCK {len(enrolled)}"
    page = unescape(client.get(f"/guard/bulk/{upload.pk}/", {"action": "lock"}).content.decode())
    assert f"Type <code>{expected}</code> to confirm" in page
    refused = client.post(f"/guard/bulk/{upload.pk}/confirm/", {**LOCK, "confirmation": f"LOCK {len(enrolled) + 1}"})
    assert refused.status_code == 200 and not Job.objects.filter(kind="guard.lock").exists()
    r = client.post(f"/guard/bulk/{upload.pk}/confirm/", {**LOCK, "confirmation": expected})
    job = Job.objects.get(kind="guard.lock")
    assert r["Location"] == f"/guard/jobs/{job.pk}/"
    run_actions(job.pk)
    job.refresh_from_db()
    assert (job.status, job.succeeded, job.failed) == (Job.Status.SUCCEEDED, len(enrolled), 0), job.error_summary
    state = requests.get(f"{knox_sandbox.url}/_sandbox/state", timeout=10).json()
    assert all(state["guard"]["devices"][d.device_uid]["state"] in ("Locking", "Locked") for d in enrolled)
    assert state["counters"]["rate_limited"] == 0
    assert set(GuardDevice.objects.filter(pk__in=[d.pk for d in enrolled]).values_list("state", flat=True)) == {
        "Locking"
    }
    assert GuardAction.objects.filter(job=job, outcome="succeeded", chunk__isnull=False).count() == len(enrolled)
    event = AuditEvent.objects.get(action="guard.lock")
    assert event.actor == admin and event.summary["typed_confirmation"] == expected
    results = client.get(f"/guard/jobs/{job.pk}/", headers={"HX-Request": "true", "HX-Target": "job-results"})
    assert b"<html" not in results.content and results.content.count(b"badge-succeeded") == len(enrolled)


# --- checked against the portal's records before submitting (issue 16 item 2) --------------------------------


class BulkRecordsCheckTestCase(BaseTestCase):
    """5 rows of Enrolled devices, 10 of devices the portal records as Accepted (lock is not allowed: Knox answers
    STATE) and 10 the portal has never seen (Knox answers 4040300)."""

    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        imeis = fresh_imeis(25, "35660012")
        self.upload = stage(self.account, imei_csv(imeis), "overdue.csv")
        assert self.upload.valid == 25
        self.enrolled = record_rows(self.upload, "Enrolled", slice(0, 5))
        self.accepted = record_rows(self.upload, "Accepted", slice(5, 15))
        self.unknown = imeis[15:]
        self.url = f"/guard/bulk/{self.upload.pk}/"

    def test_the_preview_counts_and_names_the_rows_knox_would_refuse(self):
        self.client.force_login(self.admin)
        html = unescape(self.client.get(self.url, {"action": "lock"}).content.decode())
        assert "<strong>20</strong> valid but refused for “Lock” by the portal's records" in html
        assert "<strong>20</strong> of the 25 valid rows cannot succeed for “Lock”" in html
        assert "10 recorded as Activating, and “Lock” is possible only from Active" in html
        assert "10 not in the portal's records: sync devices or check the IMEI" in html
        assert "Type <code>LOCK 5</code> to confirm" in html and "Lock: 5 devices" in html
        assert html.count("Will not be sent") == 20
        # The action tabs swap the whole review (counts, rows, action) in place, with the action in the URL.
        assert 'hx-target="#bulk-review" hx-select="#bulk-review" hx-swap="outerHTML" hx-push-url="true"' in html
        assert '<input type="hidden" name="action" value="lock">' in html  # the rows' filter keeps the action
        row = re.search(r"<tr[^>]*>\s*<td>17</td>.*?</tr>", html, re.S).group(0)  # row 17: the 16th IMEI, unknown
        assert self.unknown[0] in row and "Not in the portal's records: sync devices or check the IMEI" in row

    def test_show_only_the_rows_that_will_not_be_sent(self):
        self.client.force_login(self.admin)
        html = unescape(self.client.get(self.url, {"action": "lock"}).content.decode())
        assert f'hx-get="/guard/bulk/{self.upload.pk}/?action=lock&show=refused"' in html
        r = self.client.get(self.url, {"action": "lock", "show": "refused"},
                            headers={"HX-Request": "true", "HX-Target": "preview-rows"})  # fmt: skip
        numbers = re.findall(r'<tr class="row-valid row-refused">\s*<td>(\d+)</td>', r.content.decode())
        assert numbers == [str(n) for n in range(7, 27)]  # the 10 Accepted, then the 10 unknown, only those
        assert b"<html" not in r.content and r.content.decode().count("<tr class=") == 20
        assert "Showing only the rows that will not be sent" in r.content.decode()

    def test_without_an_action_the_preview_still_counts_devices_the_portal_does_not_have(self):
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(self.url).content.decode())
        assert "<strong>10</strong> valid but not in the portal's records" in html
        assert "Will not be sent" not in html

    def test_the_confirm_sends_only_the_rows_that_can_succeed_and_records_the_others_as_not_sent(self):
        self.client.force_login(self.admin)
        refused = self.client.post(f"{self.url}confirm/", {**LOCK, "confirmation": "LOCK 25"})
        assert refused.status_code == 200 and "type exactly LOCK 5" in unescape(refused.content.decode())
        with self.captureOnCommitCallbacks(execute=False):
            r = self.client.post(f"{self.url}confirm/", {**LOCK, "confirmation": "LOCK 5"})
        job = Job.objects.get(kind="guard.lock")
        assert r["Location"] == f"/guard/jobs/{job.pk}/"
        assert job.title == "Lock: 5 devices (20 more rows of the file not sent)"
        event = AuditEvent.objects.get(action="guard.lock")
        assert event.summary["typed_confirmation"] == "LOCK 5" and event.summary["not_sent"] == 20
        from guard.tasks import plan

        plan(job)
        by_code = dict(GuardAction.objects.filter(job=job).values_list("code").annotate(n=Count("id")).order_by())
        assert by_code == {"": 5, "STATE": 10, "NOT_FOUND": 10}
        assert not GuardAction.objects.filter(job=job, code="NOT_FOUND", sent_at__isnull=False).exists()
        assert GuardAction.objects.filter(job=job, outcome="pending").count() == 5

    def test_the_command_line_which_shows_no_review_still_lets_knox_judge_unknown_devices(self):
        from guard.client import ActionParams
        from guard.models import queue_action
        from guard.tasks import plan

        job = queue_action(self.account, "lock", ActionParams(message="Pay", **CONTACT), user=self.admin,
                           upload=self.upload)  # fmt: skip
        assert "only_known" not in job.params and job.title == "Lock: 25 devices"
        plan(job)
        assert not GuardAction.objects.filter(job=job, code="NOT_FOUND").exists()
        assert GuardAction.objects.filter(job=job, outcome="pending").count() == 15  # 5 Enrolled, 10 unknown

    def test_nothing_is_submitted_when_no_row_can_succeed(self):
        self.client.force_login(self.admin)
        r = self.client.post(f"{self.url}confirm/", {"action": "approve"}, follow=True)
        assert "None of the 25 valid rows can succeed for “Approve”" in unescape(r.content.decode())
        assert not Job.objects.filter(kind="guard.approve").exists()
        self.upload.refresh_from_db()
        assert self.upload.status == Upload.Status.READY

    def test_a_row_naming_a_device_by_its_approve_id_is_checked_like_the_job_finds_it(self):
        from guard.models import check_staged

        device = GuardDevice.objects.create(account=self.account, device_uid="R58N000001", approve_id="LOAN77A",
                                            state="Locked")  # fmt: skip
        UploadRow.objects.create(upload=self.upload, row_number=99, raw="LOAN77A", value="LOAN77A", status="valid")
        check = check_staged(self.upload, "unlock")
        assert (check.total, check.unknown, check.wrong_state) == (26, 10, {"Accepted": 10})
        assert check.sendable == 6 and device.allows("unlock")  # the 5 Enrolled and the Locked one
