"""KDP pages show KDP's own operations and spreadsheets only (issue 16, item 8): Knox Guard stages its
spreadsheets in the same Upload table (Upload.service = "guard"), and Upload.Operation also lists Guard's
operations, which belong on the Guard pages."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile

from portal.models import Upload
from tests.base import BaseTestCase, fresh_imeis
from tests.kdp.helpers import imei_csv, make_upload, ready_account


class ServiceSeparationTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = ready_account()
        self.kdp_file = make_upload(self.account, imei_csv(fresh_imeis(2, "35877795")), "kdp-order.csv")
        self.guard_file = make_upload(
            self.account, imei_csv(fresh_imeis(2, "35877796")), "guard-bulk.csv", service="guard",
            operation=Upload.Operation.GUARD_ACTION,
        )  # fmt: skip
        self.client.force_login(self.operator)

    def test_the_upload_page_offers_only_register_and_delete(self):
        r = self.client.get("/kdp/uploads/")
        self.assertContains(r, 'value="upload"')
        self.assertContains(r, 'value="delete"')
        self.assertNotContains(r, 'value="guard"')
        self.assertNotContains(r, 'value="guard-upload"')
        self.assertNotContains(r, "Knox Guard action")

    def test_a_posted_guard_operation_is_refused_and_nothing_is_staged(self):
        before = Upload.objects.count()
        r = self.client.post(
            "/kdp/uploads/",
            {
                "file": SimpleUploadedFile("x.csv", imei_csv(fresh_imeis(1, "35877797"))),
                "account": self.account.pk,
                "operation": "guard",
            },
        )
        assert r.status_code == 200
        self.assertContains(r, "Select a valid choice")
        assert Upload.objects.count() == before

    def test_recent_spreadsheets_list_only_kdp_files(self):
        r = self.client.get("/kdp/")
        self.assertContains(r, "kdp-order.csv")
        self.assertNotContains(r, "guard-bulk.csv")

    def test_a_guard_spreadsheet_is_not_a_kdp_page(self):
        assert self.client.get(f"/kdp/uploads/{self.guard_file.pk}/").status_code == 404
        assert self.client.get(f"/kdp/uploads/{self.guard_file.pk}/problems.xlsx").status_code == 404
        assert self.client.post(f"/kdp/uploads/{self.guard_file.pk}/confirm/", {}).status_code == 404
        assert self.client.get(f"/kdp/uploads/{self.kdp_file.pk}/").status_code == 200
