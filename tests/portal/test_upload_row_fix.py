"""A preview row's one-click fix: "Use 3512..." puts the suggested value in the row, checks it again and moves
the counts (portal.views.upload_row_fix, portal.uploads.apply_suggestion); silent clean-ups are noted on the row.

Runs against a KDP-ready account that is never called, and one Guard upload (the shared row partial).
"""

from __future__ import annotations

import shutil
import tempfile

from django.test import override_settings

from portal.models import AuditEvent, Upload, UploadRow
from tests.base import BaseTestCase
from tests.kdp.helpers import SAMPLES, make_upload, ready_account

APOSTROPHES = SAMPLES / "kdp-upload-apostrophes.csv"


class UploadRowFixTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        media = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, media, ignore_errors=True)
        self.enterContext(override_settings(MEDIA_ROOT=media))
        self.account = ready_account()
        self.upload = make_upload(self.account, APOSTROPHES.read_bytes(), "kdp-upload-apostrophes.csv")
        self.row = UploadRow.objects.get(upload=self.upload, row_number=4)
        self.url = f"/uploads/{self.upload.pk}/rows/{self.row.pk}/use-suggestion/"
        self.page = f"/kdp/uploads/{self.upload.pk}/"

    def post(self, value: str = "351778952866768", **headers: str):
        return self.client.post(self.url, {"value": value}, headers=headers)

    def test_the_sample_file_is_read_with_its_apostrophes_and_notes(self) -> None:
        rows = {r.row_number: r for r in UploadRow.objects.filter(upload=self.upload)}
        self.assertEqual((self.upload.valid, self.upload.invalid), (3, 2))
        self.assertEqual(rows[2].value, "359221145350335")
        self.assertEqual(rows[2].reason, "read without the leading apostrophe (the spreadsheet's mark for a text cell)")
        self.assertTrue(rows[3].reason.startswith("dashes removed; read without the leading apostrophe"))
        self.assertEqual((rows[4].status, rows[4].suggestion), (UploadRow.Status.INVALID, "351778952866768"))
        self.assertEqual(rows[5].suggestion, "358152892266344")

    def test_the_preview_offers_the_suggestion_and_notes_the_clean_up(self) -> None:
        self.client.force_login(self.operator)
        r = self.client.get(self.page)
        self.assertContains(r, "Use 351778952866768</button>")
        self.assertContains(r, f'hx-post="{self.url}"')
        self.assertContains(r, 'id="upload-confirm-button"')
        self.assertContains(r, 'hx-trigger="uploadRowsChanged from:body" hx-select="#upload-confirm-button"')
        self.assertContains(r, "dashes removed")

    def test_a_viewer_sees_the_suggestion_without_the_button(self) -> None:
        self.client.force_login(self.viewer)
        r = self.client.get(self.page)
        self.assertContains(r, "Suggested: <code>351778952866768</code>")
        self.assertNotContains(r, "Use 351778952866768")

    def test_it_uses_the_suggestion_and_re_renders_the_row_and_the_counts(self) -> None:
        self.client.force_login(self.operator)
        r = self.post(HX_Request="true")
        self.assertEqual(r.status_code, 200)
        html = r.content.decode()
        self.assertNotIn("<html", html)
        self.assertTrue(html.lstrip().startswith('<tr class="row-valid">'), html[:200])
        self.assertIn("the suggested 351778952866768 is used instead of the file&#x27;s value", html)
        self.assertIn('id="upload-status" class="card" hx-swap-oob="true"', html)
        # The confirm step's figures re-read themselves on this event.
        self.assertIn("uploadRowsChanged", r.headers["HX-Trigger"])
        self.assertIn("<strong>4</strong> valid", html)
        self.row.refresh_from_db()
        self.assertEqual(
            (self.row.status, self.row.value, self.row.kind, self.row.suggestion, self.row.raw),
            (UploadRow.Status.VALID, "351778952866768", "imei", "", "'35177895286676"),
        )
        self.upload.refresh_from_db()
        self.assertEqual((self.upload.valid, self.upload.invalid), (4, 1))
        event = AuditEvent.objects.get(action="kdp.row_fixed")
        self.assertEqual(event.summary["to"], "351778952866768")
        # Done once: the button is gone and a second click is refused on the row.
        self.assertNotIn("Use 351778952866768", html)
        r = self.post(HX_Request="true")
        self.assertContains(r, "suggestion changed since the page was shown")
        self.upload.refresh_from_db()
        self.assertEqual((self.upload.valid, self.upload.invalid), (4, 1))

    def test_without_javascript_it_returns_to_the_preview(self) -> None:
        self.client.force_login(self.operator)
        r = self.post()
        self.assertRedirects(r, self.page, fetch_redirect_response=False)
        self.row.refresh_from_db()
        self.assertEqual(self.row.status, UploadRow.Status.VALID)

    def test_a_suggestion_that_repeats_another_row_is_a_duplicate(self) -> None:
        imeisv = UploadRow.objects.get(upload=self.upload, row_number=5)
        UploadRow.objects.filter(pk=imeisv.pk).update(suggestion="359221145350335")  # row 2's IMEI
        self.client.force_login(self.operator)
        url = f"/uploads/{self.upload.pk}/rows/{imeisv.pk}/use-suggestion/"
        r = self.client.post(url, {"value": "359221145350335"}, headers={"HX-Request": "true"})
        self.assertContains(r, "this is the same device as row 2")
        imeisv.refresh_from_db()
        self.assertEqual((imeisv.status, imeisv.value), (UploadRow.Status.DUPLICATE, ""))
        self.upload.refresh_from_db()
        self.assertEqual((self.upload.valid, self.upload.invalid, self.upload.duplicate), (3, 1, 1))

    def test_it_refuses_once_the_upload_was_submitted(self) -> None:
        Upload.objects.filter(pk=self.upload.pk).update(status=Upload.Status.SUBMITTED)
        self.client.force_login(self.operator)
        r = self.post(HX_Request="true")
        self.assertContains(r, "already submitted, so its rows can no longer change")
        self.row.refresh_from_db()
        self.assertEqual(self.row.status, UploadRow.Status.INVALID)

    def test_a_value_that_is_not_the_suggestion_is_refused(self) -> None:
        self.client.force_login(self.operator)
        r = self.post("359221145350335", HX_Request="true")
        self.assertContains(r, "suggestion changed since the page was shown")
        self.row.refresh_from_db()
        self.assertEqual(self.row.status, UploadRow.Status.INVALID)

    def test_the_first_valid_row_makes_a_refused_upload_ready_and_reloads(self) -> None:
        upload = make_upload(self.account, b"IMEI\n35177895286676\n", "one.csv")
        self.assertEqual(upload.status, Upload.Status.REFUSED)
        row = UploadRow.objects.get(upload=upload)
        self.client.force_login(self.operator)
        url = f"/uploads/{upload.pk}/rows/{row.pk}/use-suggestion/"
        r = self.client.post(url, {"value": "351778952866768"}, headers={"HX-Request": "true"})
        self.assertEqual(r.headers.get("HX-Refresh"), "true")
        upload.refresh_from_db()
        self.assertEqual((upload.status, upload.valid, upload.error), (Upload.Status.READY, 1, ""))

    def test_it_works_on_a_knox_guard_preview(self) -> None:
        upload = make_upload(
            self.account, APOSTROPHES.read_bytes(), "g.csv", operation=Upload.Operation.GUARD_ACTION, service="guard"
        )
        row = UploadRow.objects.get(upload=upload, row_number=4)
        self.client.force_login(self.operator)
        page = self.client.get(f"/guard/bulk/{upload.pk}/")
        self.assertContains(page, "Use 351778952866768</button>")
        url = f"/uploads/{upload.pk}/rows/{row.pk}/use-suggestion/"
        r = self.client.post(url, {"value": "351778952866768"}, headers={"HX-Request": "true"})
        self.assertContains(r, '<tr class="row-valid">')
        self.assertContains(r, "<strong>4</strong> valid")

    def test_it_requires_the_queue_permission(self) -> None:
        for user in (self.viewer, self.outsider):
            with self.subTest(user=user.username):
                self.client.force_login(user)
                self.assertEqual(self.post().status_code, 403)
        self.row.refresh_from_db()
        self.assertEqual(self.row.status, UploadRow.Status.INVALID)

    def test_anonymous_users_are_sent_to_log_in(self) -> None:
        r = self.post()
        self.assertEqual(r.status_code, 302)
        self.assertIn("/login/", r.headers["Location"])

    def test_it_rejects_get(self) -> None:
        self.client.force_login(self.operator)
        self.assertEqual(self.client.get(self.url).status_code, 405)

    def test_it_rejects_a_missing_value(self) -> None:
        self.client.force_login(self.operator)
        self.assertEqual(self.client.post(self.url, {}).status_code, 400)

    def test_a_fixed_row_of_a_multi_customer_file_goes_to_the_customer_it_names(self) -> None:
        from kdp.models import Customer, file_customers

        Customer.objects.create(account=self.account, customer_id="C-CONTOSO", name="Contoso Logistics")
        content = b"IMEI,Customer\n359221145350335,Contoso Logistics\n35177895286676,Contoso Logistics\n"
        upload = make_upload(self.account, content, "two.csv")
        self.assertEqual([(g.label, g.rows) for g in file_customers(upload)], [("Contoso Logistics (C-CONTOSO)", 1)])
        row = UploadRow.objects.get(upload=upload, row_number=3)
        self.client.force_login(self.operator)
        url = f"/uploads/{upload.pk}/rows/{row.pk}/use-suggestion/"
        self.client.post(url, {"value": "351778952866768"}, headers={"HX-Request": "true"})
        upload.refresh_from_db()
        groups = file_customers(upload)
        self.assertEqual([(g.label, g.rows, g.problem) for g in groups], [("Contoso Logistics (C-CONTOSO)", 2, "")])
