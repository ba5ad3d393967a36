"""Uploads to Knox Guard: the list, the form with the four policy flags → preview → confirm → job, and Knox's own
list of uploads read on request by a worker (a lookup job the page follows). The end-to-end upload runs against
the in-process sandbox."""

from __future__ import annotations

from html import unescape

from django.core.files.uploadedfile import SimpleUploadedFile

from guard.models import GuardDevice, GuardUpload
from guard.tasks import UPLOAD_FIELDS, run_upload
from portal.models import AuditEvent, Job, KnoxAccount, Upload
from tests.base import BaseTestCase, fresh_imeis, make_user
from tests.guard.helpers import guard_account, imei_csv, stage
from tests.portal.helpers import HTMX, ask, assert_following


class UploadListTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        job = Job.objects.create(kind="guard.upload", account=self.account)
        GuardUpload.objects.create(account=self.account, job=job, upload_id="abc-123", knox_status="Progress", device_count=3,
                                   valid=2, invalid=1, flags={"autoAccept": True, "autoLock": False})  # fmt: skip

    def test_it_lists_the_portal_s_uploads_without_calling_knox(self):
        self.client.force_login(self.viewer)
        r = self.client.get("/guard/uploads/")
        html = r.content.decode()
        assert "abc-123" in html and "Accept automatically" in html and "autoAccept" not in html
        assert "Lock automatically" not in html.split("abc-123")[1][:300]
        assert 'action="/guard/uploads/knox/"' not in html  # a viewer cannot ask Knox

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        assert self.client.get("/guard/uploads/")["Location"].startswith("/login/")

    def test_reading_knox_s_list_is_post_only_and_needs_queue_permission(self):
        self.client.force_login(self.viewer)
        assert self.client.post("/guard/uploads/knox/", {"account": self.account.pk}).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.get("/guard/uploads/knox/").status_code == 405
        assert self.client.post("/guard/uploads/knox/", {"account": 999}).status_code == 400
        assert not Job.objects.filter(kind="guard.knox_uploads").exists()

    def test_reading_knox_s_list_is_queued_and_followed(self):
        self.client.force_login(self.operator)
        r = self.client.post("/guard/uploads/knox/", {"account": self.account.pk}, headers=HTMX)
        job = Job.objects.get(kind="guard.knox_uploads")
        html = r.content.decode()
        assert html.lstrip().startswith('<div id="knox-uploads">')
        assert_following(html, job)
        assert (job.account, job.created_by, job.title) == (
            self.account,
            self.operator,
            "Knox Guard uploads of Guard Finance",
        )
        r = self.client.post("/guard/uploads/knox/", {"account": self.account.pk})  # without JavaScript
        second = Job.objects.filter(kind="guard.knox_uploads").latest("id")
        assert r["Location"] == f"/guard/uploads/?job={second.pk}"
        page = self.client.get(r["Location"]).content.decode()
        assert "abc-123" in page and 'class="badge badge-queued">Queued<' in page  # the whole page, and the job
        self.client.force_login(self.viewer)  # may read the page, not Knox's list
        assert self.client.get(r["Location"]).status_code == 403
        assert self.client.get(f"/jobs/{second.pk}/result/", headers=HTMX).status_code == 403

    def test_an_account_not_set_up_for_knox_guard_is_refused_in_words(self):
        half = KnoxAccount.objects.create(name="Half", environment="sandbox")
        self.client.force_login(self.operator)
        r = self.client.post("/guard/uploads/knox/", {"account": half.pk}, follow=True)
        assert "Half cannot call Knox Guard yet: it needs keys.json" in unescape(r.content.decode())
        assert not Job.objects.filter(kind="guard.knox_uploads").exists()


class UploadNewTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.url = "/guard/uploads/new/"

    def test_it_explains_the_four_flags(self):
        self.client.force_login(self.operator)
        html = unescape(self.client.get(self.url).content.decode())
        for name in ("autoAccept", "autoLock", "applySimControl", "enableBlockFactoryReset"):
            assert f'name="{name}"' in html
        assert "skip the Pending step" in html and "cannot factory-reset" in html

    def test_it_stages_the_file_and_carries_the_flags_to_the_preview(self):
        self.client.force_login(self.operator)
        data = {"file": SimpleUploadedFile("new.csv", imei_csv(["359221145350335"])), "account": self.account.pk,
                "autoAccept": "on", "enableBlockFactoryReset": "on"}  # fmt: skip
        with self.captureOnCommitCallbacks(execute=True):
            r = self.client.post(self.url, data)
        upload = Upload.objects.get()
        assert (upload.service, upload.operation, upload.status) == ("guard", "guard-upload", "ready")
        assert r["Location"] == f"/guard/bulk/{upload.pk}/?autoAccept=on&enableBlockFactoryReset=on"
        confirm = self.client.get(r["Location"]).context["confirm"]
        assert confirm.initial == {"autoAccept": True, "autoLock": False, "applySimControl": False,
                                   "enableBlockFactoryReset": True}  # fmt: skip

    def test_a_viewer_gets_403(self):
        self.client.force_login(self.viewer)
        assert self.client.get(self.url).status_code == 403
        assert self.client.post(self.url, {"account": self.account.pk}).status_code == 403

    def test_it_answers_other_methods_with_405(self):
        self.client.force_login(self.operator)
        assert self.client.delete(self.url).status_code == 405


class UploadConfirmTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.upload = stage(self.account, imei_csv(["359221145350335"]), operation="guard-upload")
        self.url = f"/guard/bulk/{self.upload.pk}/confirm/"

    def test_an_operator_queues_the_upload_with_the_flags(self):
        self.client.force_login(self.operator)
        r = self.client.post(self.url, {"autoAccept": "on"})
        job = Job.objects.get(kind="guard.upload")
        assert r["Location"] == f"/guard/jobs/{job.pk}/"
        assert job.params["flags"] == {"autoAccept": True, "autoLock": False, "applySimControl": False,
                                       "enableBlockFactoryReset": False}  # fmt: skip
        assert AuditEvent.objects.get(action="guard.upload").summary["flags"]["autoAccept"] is True

    def test_the_preview_shows_the_flags_not_the_actions(self):
        self.client.force_login(self.operator)
        html = self.client.get(f"/guard/bulk/{self.upload.pk}/").content.decode()
        assert 'name="autoLock"' in html and "?action=" not in html

    def test_a_viewer_gets_403_and_get_is_405(self):
        self.client.force_login(self.viewer)
        assert self.client.post(self.url, {}).status_code == 403
        assert not Job.objects.filter(kind="guard.upload").exists()
        self.client.force_login(self.operator)
        assert self.client.get(self.url).status_code == 405


# --- against the sandbox ------------------------------------------------------------------------------------


def test_an_upload_reaches_knox_and_knox_s_list_is_read_on_request(
    client, guard_synced, knox_sandbox, django_capture_on_commit_callbacks
):
    operator = make_user("olivia", "operator")
    client.force_login(operator)
    imeis = fresh_imeis(2, "35411100")
    upload = stage(guard_synced, imei_csv(imeis), "new-loans.csv", operation="guard-upload", user=operator)
    r = client.post(f"/guard/bulk/{upload.pk}/confirm/", {"autoAccept": "on"})
    job = Job.objects.get(kind="guard.upload")
    assert r["Location"] == f"/guard/jobs/{job.pk}/"
    run_upload(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error_summary
    record = GuardUpload.objects.get(job=job)
    assert record.upload_id and record.valid == 2
    assert set(GuardDevice.objects.filter(device_uid__in=imeis).values_list("state", flat=True)) == {"Accepted"}
    page = client.get(f"/guard/jobs/{job.pk}/").content.decode()
    assert record.upload_id in page
    knox, lookup, html = ask(
        client, "/guard/uploads/knox/", {"account": guard_synced.pk}, django_capture_on_commit_callbacks
    )
    assert knox.status_code == 200 and record.upload_id in html and "KDP" in html
    lookup.refresh_from_db()
    assert lookup.status == Job.Status.SUCCEEDED and lookup.created_by == operator
    assert {u["uploadId"] for u in lookup.result["uploads"]} >= {record.upload_id}
    assert all(set(u) == {*UPLOAD_FIELDS, "created"} for u in lookup.result["uploads"])  # only what is shown


def test_a_refused_list_is_explained(client, sandbox_account, django_capture_on_commit_callbacks):
    sandbox_account.set_secret("client_identifier", "not-the-one-knox-registered")  # Knox refuses the token
    sandbox_account.save()
    client.force_login(make_user("olivia", "operator"))
    _, job, html = ask(
        client, "/guard/uploads/knox/", {"account": sandbox_account.pk}, django_capture_on_commit_callbacks
    )
    sentence = (
        "Knox did not list the uploads of Sandbox: Knox rejected the access token: check the account's keys.json "
        "and Client Identifier (they must belong together and to this region)."
    )
    assert f"{sentence} <code>4012250</code>" in html
    job.refresh_from_db()
    assert (job.status, job.error_summary, job.result["failure"]["code"]) == (Job.Status.FAILED, sentence, "4012250")
