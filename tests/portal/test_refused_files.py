"""A job that read a spreadsheet the portal refused is "File refused", not a failed Knox job (issue 16, item 6):
its page says so with the reason, and the dashboard counts failed Knox jobs only, refused files on their own."""

from __future__ import annotations

from html import unescape

import pytest

from portal.models import Job, Upload
from portal.tasks import parse_upload
from tests.base import BaseTestCase
from tests.kdp.helpers import ready_account
from tests.portal.helpers import devices_csv, parsing_upload


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


class RefusedFileTestCase(BaseTestCase):
    def test_a_file_with_rows_but_no_valid_device_is_refused_not_failed(self):
        upload = parsing_upload(b"IMEI\n" + b"not-a-device\n" * 50)
        parse_upload(upload.parse_job_id)
        upload.refresh_from_db()
        job = Job.objects.get(pk=upload.parse_job_id)
        assert upload.status == Upload.Status.REFUSED and upload.rows_total == 50
        assert job.status == Job.Status.REFUSED and job.is_finished
        assert job.error_summary == upload.error and job.failed == 0
        assert job.get_status_display() == "File refused"

        self.client.force_login(self.viewer)
        html = unescape(self.client.get(f"/jobs/{job.pk}/progress/").content.decode())
        assert "File refused" in html and "Failed" not in html
        assert "<dt>Rows</dt><dd>50</dd>" in html and "<dt>Read</dt><dd>50</dd>" in html
        assert f"The file was refused: {upload.error}" in html

    def test_a_refused_job_is_finished_and_cannot_be_ended_again(self):
        job = Job.objects.create(kind="kdp.parse", title="Read x.csv")
        job.claim("test-worker")
        job.refuse("No column holds IMEIs or serial numbers.")
        assert not Job.objects.get(pk=job.pk).end_with(Job.Status.SUCCEEDED)
        assert Job.objects.get(pk=job.pk).status == Job.Status.REFUSED

    def test_a_readable_file_still_ends_succeeded(self):
        upload = parsing_upload(devices_csv(3))
        parse_upload(upload.parse_job_id)
        assert Job.objects.get(pk=upload.parse_job_id).status == Job.Status.SUCCEEDED

    def test_the_dashboard_counts_failed_knox_jobs_and_refused_files_apart(self):
        account = ready_account()
        Job.objects.create(kind="kdp.parse", account=account, status=Job.Status.REFUSED)
        Job.objects.create(kind="guard.parse", account=account, status=Job.Status.REFUSED)
        Job.objects.create(kind="kdp.parse", account=account, status=Job.Status.SUCCEEDED)
        Job.objects.create(kind="kdp.upload", account=account, status=Job.Status.FAILED)
        Job.objects.create(kind="kdp.upload", account=account, status=Job.Status.SUCCEEDED)
        self.client.force_login(self.viewer)
        r = self.client.get("/")
        assert r.context["job_counts"] == {"failed": 1, "succeeded": 1}
        assert r.context["files_refused"] == 2
        html = unescape(r.content.decode())
        assert "<span>Failed</span><strong>1</strong>" in html
        assert 'href="/jobs/?status=refused">Spreadsheets refused</a>: 2' in html

    def test_the_jobs_list_filters_refused_files(self):
        Job.objects.create(kind="kdp.parse", title="Read bad.csv", status=Job.Status.REFUSED)
        Job.objects.create(kind="kdp.upload", title="Register devices", status=Job.Status.FAILED)
        self.client.force_login(self.viewer)
        html = unescape(self.client.get("/jobs/?status=refused").content.decode())
        assert "Read bad.csv" in html and "Register devices" not in html
