"""The upload pages: spreadsheet form → preview (parsed in a job) → restage → profile aliases → confirm.

Page and permission tests run against a KDP-ready OAuth account that is never called (nothing here talks to Knox
before "confirm"); the confirm tests run against the in-process sandbox.
"""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from kdp.models import Customer, ProfileAlias
from portal.models import AuditEvent, Job, KnoxAccount, Upload, UploadRow
from portal.tasks import parse_upload
from tests.base import BaseTestCase, body, fresh_imeis, make_user
from tests.kdp.helpers import SAMPLES, imei_csv, make_upload, ready_account, xlsx_rows

MIXED = SAMPLES / "kdp-upload-mixed.csv"
SCIENTIFIC = SAMPLES / "kdp-upload-scientific.csv"
XLSX_MAGIC = b"PK\x03\x04"


def row_numbers(html: str) -> list[int]:
    """Row numbers of the preview table, in page order."""
    return [int(n) for n in re.findall(r'<tr class="row-\w+">\s*<td>(\d+)</td>', html)]


class UploadFormTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = ready_account()
        self.url = "/kdp/uploads/"

    def post_file(self, name: str, content: bytes, **extra: object):
        """POST the form as the operator; the parse job runs in-process when the request commits (sync queue)."""
        self.client.force_login(self.operator)
        data = {"file": SimpleUploadedFile(name, content), "account": self.account.pk, "operation": "upload", **extra}
        with self.captureOnCommitCallbacks(execute=True):
            return self.client.post(self.url, data)

    def test_it_shows_the_form_to_an_operator(self):
        self.client.force_login(self.operator)
        r = self.client.get(self.url)
        self.assertContains(r, 'enctype="multipart/form-data"')
        self.assertContains(r, f'<option value="{self.account.pk}">Acme Mobile</option>')
        self.assertContains(r, 'href="/kdp/uploads/template.xlsx"')
        self.assertNotContains(r, "No Knox account is ready for KDP")

    def test_it_says_so_when_no_account_is_ready(self):
        self.account.set_secret("oauth_client_secret", "")
        self.account.save()
        self.client.force_login(self.operator)
        self.assertContains(self.client.get(self.url), "No Knox account is ready for KDP")

    def test_it_stages_a_csv_and_redirects_to_its_preview(self):
        r = self.post_file("kdp-upload-mixed.csv", MIXED.read_bytes())
        upload = Upload.objects.get()
        self.assertRedirects(r, f"/kdp/uploads/{upload.pk}/", fetch_redirect_response=False)
        upload.refresh_from_db()
        assert (upload.account, upload.created_by, upload.filename) == (
            self.account,
            self.operator,
            "kdp-upload-mixed.csv",
        )
        assert upload.status == Upload.Status.READY
        assert (upload.valid, upload.invalid, upload.duplicate, upload.skipped) == (4, 4, 1, 1)
        assert upload.parse_job.kind == "kdp.parse" and upload.parse_job.status == Job.Status.SUCCEEDED
        assert AuditEvent.objects.filter(
            action="kdp.file_upload", actor=self.operator, target_id=str(upload.pk)
        ).exists()

    def test_it_keeps_the_operation_and_the_check_digit_choice(self):
        self.post_file("d.csv", imei_csv(fresh_imeis(2)), operation="delete", allow_bad_check_digit="on")
        upload = Upload.objects.get()
        assert upload.operation == Upload.Operation.DELETE and upload.allow_bad_check_digit

    def test_it_refuses_another_extension_without_staging_anything(self):
        r = self.post_file("order.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        self.assertContains(r, "is not a spreadsheet this portal reads")
        assert not Upload.objects.exists() and not Job.objects.exists()

    def test_it_refuses_an_empty_file_in_the_form(self):
        r = self.post_file("empty.csv", b"")
        assert r.status_code == 200
        self.assertContains(r, "empty")
        assert r.context["form"].errors["file"]
        assert not Upload.objects.exists()

    def test_it_refuses_a_pdf_renamed_xlsx_with_a_reason(self):
        self.post_file("order.xlsx", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" * 20)
        upload = Upload.objects.get()
        assert upload.status == Upload.Status.REFUSED and upload.error
        assert not upload.rows.exists()
        assert Job.objects.get(pk=upload.parse_job_id).status == Job.Status.REFUSED  # not a failed Knox job
        self.client.force_login(self.viewer)
        r = self.client.get(f"/kdp/uploads/{upload.pk}/")
        self.assertContains(r, "This file cannot be used")
        assert "This file is a PDF document" in upload.error and upload.error in unescape(r.content.decode())
        self.assertNotContains(r, f'action="/kdp/uploads/{upload.pk}/confirm/"')

    def test_it_refuses_a_file_whose_every_row_is_in_scientific_notation(self):
        self.post_file("kdp-upload-scientific.csv", SCIENTIFIC.read_bytes())
        upload = Upload.objects.get()
        assert upload.status == Upload.Status.REFUSED and upload.valid == 0 and upload.invalid == 4
        assert "No row holds a device" in upload.error
        assert all("scientific notation" in r.reason for r in upload.rows.all())
        self.client.force_login(self.operator)
        r = self.client.get(f"/kdp/uploads/{upload.pk}/")
        self.assertContains(r, "This file cannot be used")
        self.assertContains(r, "No row holds a device")

    def test_it_shows_why_every_row_was_refused(self):
        self.post_file("kdp-upload-scientific.csv", SCIENTIFIC.read_bytes())
        upload = Upload.objects.get()
        self.client.force_login(self.operator)
        r = self.client.get(f"/kdp/uploads/{upload.pk}/")
        self.assertContains(r, "format the column as Text")

    def test_it_forbids_a_viewer_and_stages_nothing(self):
        self.client.force_login(self.viewer)
        r = self.client.post(
            self.url, {"file": SimpleUploadedFile("a.csv", MIXED.read_bytes()), "account": self.account.pk}
        )
        assert r.status_code == 403
        assert self.client.get(self.url).status_code == 403
        assert not Upload.objects.exists()

    def test_it_forbids_an_outsider(self):
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        self.assertRedirects(self.client.get(self.url), "/login/?next=/kdp/uploads/", fetch_redirect_response=False)
        r = self.client.post(self.url, {"file": SimpleUploadedFile("a.csv", MIXED.read_bytes())})
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        assert not Upload.objects.exists()

    def test_it_answers_other_methods_with_405(self):
        self.client.force_login(self.operator)
        assert self.client.put(self.url).status_code == 405
        assert self.client.delete(self.url).status_code == 405

    def test_it_rejects_an_account_that_is_not_ready(self):
        other = KnoxAccount.objects.create(name="Half set up", environment="sandbox", auth_mode="oauth")
        self.client.force_login(self.operator)
        r = self.client.post(self.url, {"file": SimpleUploadedFile("a.csv", MIXED.read_bytes()), "account": other.pk})
        assert r.status_code == 200 and r.context["form"].errors["account"]
        assert not Upload.objects.exists()


class TemplateDownloadTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.xlsx_url = "/kdp/uploads/template.xlsx"
        self.csv_url = "/kdp/uploads/template.csv"

    def test_it_serves_the_excel_template(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.xlsx_url)
        assert r.status_code == 200 and r["Content-Type"].startswith("application/vnd.openxmlformats")
        assert 'filename="knox-devices-template.xlsx"' in r["Content-Disposition"]
        content = body(r)
        assert content.startswith(XLSX_MAGIC)
        assert any("IMEI" in str(cell) for cell in xlsx_rows(content)[0])

    def test_it_serves_the_csv_template(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.csv_url)
        assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
        assert 'filename="knox-devices-template.csv"' in r["Content-Disposition"]
        assert "IMEI" in body(r).decode("utf-8-sig").splitlines()[0]

    def test_it_needs_a_login_and_the_portal_role(self):
        assert self.client.get(self.csv_url).status_code == 302
        self.client.force_login(self.outsider)
        assert self.client.get(self.xlsx_url).status_code == 403

    def test_it_is_get_only(self):
        self.client.force_login(self.operator)
        assert self.client.post(self.xlsx_url).status_code == 405
        assert self.client.post(self.csv_url).status_code == 405


class PreviewTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = ready_account()
        self.client.force_login(self.operator)
        # Staged through the page, but the parse job is left queued: on_commit callbacks do not run here.
        r = self.client.post(
            "/kdp/uploads/",
            {
                "file": SimpleUploadedFile("kdp-upload-mixed.csv", MIXED.read_bytes()),
                "account": self.account.pk,
                "operation": "upload",
            },
        )
        self.upload = Upload.objects.get()
        self.url = f"/kdp/uploads/{self.upload.pk}/"
        self.problems_url = f"/kdp/uploads/{self.upload.pk}/problems.xlsx"
        assert r["Location"] == self.url

    def parse(self) -> None:
        parse_upload(self.upload.parse_job_id)
        self.upload.refresh_from_db()

    def test_it_polls_while_the_file_is_read(self):
        assert self.upload.status == Upload.Status.PARSING
        r = self.client.get(self.url)
        self.assertContains(r, 'id="upload-status"')
        self.assertContains(r, "Reading the file")
        self.assertContains(r, 'hx-trigger="every 1s"')
        self.assertNotContains(r, 'id="preview-rows"')

    def test_it_returns_the_status_fragment_while_parsing_and_a_refresh_after(self):
        hx = {"HX-Request": "true", "HX-Target": "upload-status"}
        r = self.client.get(self.url, headers=hx)
        assert r.status_code == 200 and b"<html" not in r.content
        assert r.content.lstrip().startswith(b'<section id="upload-status"')
        assert b'hx-trigger="every 1s"' in r.content
        assert "HX-Refresh" not in r
        self.parse()
        r = self.client.get(self.url, headers=hx)
        assert r.status_code == 200 and r["HX-Refresh"] == "true"
        assert "HX-Request" in r["Vary"]

    def test_it_shows_counts_and_every_row_with_its_reason(self):
        self.parse()
        r = self.client.get(self.url)
        html = r.content.decode()
        for label, n in (("valid", 4), ("invalid", 4), ("duplicate in the file", 1), ("empty, skipped", 1)):
            assert re.search(rf"<strong>{n}</strong> {label}", html), label
        assert row_numbers(html) == list(range(2, 12))
        assert re.search(r"<td>9</td>.*?duplicate of row 3", html, re.S)
        assert re.search(r"<td>11</td>.*?IMEISV", html, re.S)
        verdicts = [status for status, _ in re.findall(r'<tr class="row-(\w+)">\s*<td>(\d+)</td>', html)]
        assert verdicts == [
            *["valid"] * 4,  # rows 4 and 5 once dashes and spaces are removed
            *["invalid"] * 3,
            "duplicate",
            "skipped",
            "invalid",
        ]
        self.assertContains(r, f'href="{self.problems_url}"')
        self.assertContains(r, f'action="/kdp/uploads/{self.upload.pk}/confirm/"')
        self.assertContains(r, "Register 4 devices")

    def test_it_filters_the_rows(self):
        self.parse()
        problems = self.client.get(self.url, {"status": "problems"}).content.decode()
        assert row_numbers(problems) == [6, 7, 8, 9, 11]
        duplicates = self.client.get(self.url, {"status": "duplicate"}).content.decode()
        assert row_numbers(duplicates) == [9]
        later = self.client.get(self.url, {"after": "8"}).content.decode()
        assert row_numbers(later) == [9, 10, 11]

    def test_it_shows_every_row_for_an_invalid_filter(self):
        self.parse()
        r = self.client.get(self.url, {"status": "bogus", "after": "-3"})
        assert r.status_code == 200
        assert row_numbers(r.content.decode()) == list(range(2, 12))

    def test_it_returns_only_the_rows_fragment_to_htmx(self):
        self.parse()
        r = self.client.get(
            self.url, {"status": "problems"}, headers={"HX-Request": "true", "HX-Target": "preview-rows"}
        )
        assert r.status_code == 200 and b"<html" not in r.content
        assert r.content.lstrip().startswith(b'<section id="preview-rows"')
        assert row_numbers(r.content.decode()) == [6, 7, 8, 9, 11]
        assert b'id="upload-status"' not in r.content

    def test_it_lets_a_viewer_look_but_not_confirm(self):
        self.parse()
        self.client.force_login(self.viewer)
        r = self.client.get(self.url)
        assert r.status_code == 200 and row_numbers(r.content.decode())
        self.assertNotContains(r, "/confirm/")

    def test_it_hides_the_preview_from_outsiders_and_anonymous_users(self):
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        self.client.logout()
        self.assertRedirects(self.client.get(self.url), f"/login/?next={self.url}", fetch_redirect_response=False)

    def test_it_is_get_only_and_404s_for_an_unknown_upload(self):
        assert self.client.post(self.url).status_code == 405
        assert self.client.get(f"/kdp/uploads/{self.upload.pk + 100}/").status_code == 404

    def test_it_exports_the_problem_rows_with_formulas_neutralised(self):
        content = b'IMEI\n359221145350335\n"=HYPERLINK(""http://evil.example"",""click"")"\n@SUM(A1)\n351121670763365\n'
        self.client.post(
            "/kdp/uploads/",
            {"file": SimpleUploadedFile("evil.csv", content), "account": self.account.pk, "operation": "upload"},
        )
        evil = Upload.objects.get(filename="evil.csv")
        parse_upload(evil.parse_job_id)
        self.client.force_login(self.viewer)
        r = self.client.get(f"/kdp/uploads/{evil.pk}/problems.xlsx")
        assert r.status_code == 200 and "evil.csv-problems.xlsx" in r["Content-Disposition"]
        rows = xlsx_rows(body(r))
        assert rows[0][:4] == ["Row", "Value in the file", "Problem", "Reason"]
        assert [int(row[0]) for row in rows[1:]] == [3, 4]
        for row in rows[1:]:
            for cell in row:
                assert not (isinstance(cell, str) and cell and cell[0] in "=+-@"), row
        assert rows[1][1] == '\'=HYPERLINK("http://evil.example","click")'
        assert rows[2][1] == "'@SUM(A1)"
        assert AuditEvent.objects.filter(action="kdp.export", target_id=str(evil.pk)).exists()

    def test_the_problem_rows_download_is_get_only_and_needs_the_role(self):
        self.parse()
        assert self.client.post(self.problems_url).status_code == 405
        self.client.force_login(self.outsider)
        assert self.client.get(self.problems_url).status_code == 403
        self.client.force_login(self.viewer)
        rows = xlsx_rows(body(self.client.get(self.problems_url)))
        assert [int(row[0]) for row in rows[1:]] == [6, 7, 8, 9, 11]


class RestageTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = ready_account()
        imei = fresh_imeis(1)[0]
        content = f"IMEI,Serial Number\n{imei},R58N12ABCDE\n".encode()
        self.client.force_login(self.operator)
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(
                "/kdp/uploads/",
                {"file": SimpleUploadedFile("both.csv", content), "account": self.account.pk, "operation": "upload"},
            )
        self.upload = Upload.objects.get()
        self.url = f"/kdp/uploads/{self.upload.pk}/restage/"

    def test_it_offers_the_other_device_column(self):
        assert self.upload.status == Upload.Status.READY
        assert self.upload.columns == ["IMEI", "Serial Number"] and self.upload.device_column == "IMEI"
        r = self.client.get(f"/kdp/uploads/{self.upload.pk}/")
        self.assertContains(r, f'action="{self.url}"')
        self.assertContains(r, '<option value="Serial Number">Serial Number</option>', html=True)

    def test_it_reads_the_file_again_with_the_chosen_column(self):
        with self.captureOnCommitCallbacks(execute=True):
            r = self.client.post(self.url, {"device_column": "Serial Number"})
        self.assertRedirects(r, f"/kdp/uploads/{self.upload.pk}/", fetch_redirect_response=False)
        self.upload.refresh_from_db()
        assert self.upload.device_column == "Serial Number" and self.upload.status == Upload.Status.READY
        row = UploadRow.objects.get(upload=self.upload, status=UploadRow.Status.VALID)
        assert (row.value, row.kind) == ("R58N12ABCDE", "serial")
        assert Job.objects.filter(kind="kdp.parse").count() == 2

    def test_it_refuses_to_restage_a_submitted_upload(self):
        Upload.objects.filter(pk=self.upload.pk).update(status=Upload.Status.SUBMITTED)
        r = self.client.post(self.url, {"device_column": "Serial Number"}, follow=True)
        self.assertContains(r, "already submitted")
        self.upload.refresh_from_db()
        assert self.upload.device_column == "IMEI" and Job.objects.filter(kind="kdp.parse").count() == 1

    def test_it_refuses_invalid_input_without_reparsing(self):
        r = self.client.post(self.url, {"device_column": "x" * 201}, follow=True)
        assert r.status_code == 200
        self.upload.refresh_from_db()
        assert self.upload.device_column == "IMEI" and Job.objects.filter(kind="kdp.parse").count() == 1

    def test_it_is_post_only(self):
        assert self.client.get(self.url).status_code == 405

    def test_it_forbids_a_viewer(self):
        self.client.force_login(self.viewer)
        assert self.client.post(self.url, {"device_column": "Serial Number"}).status_code == 403
        self.upload.refresh_from_db()
        assert self.upload.device_column == "IMEI"

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        self.client.logout()
        r = self.client.post(self.url, {"device_column": "Serial Number"})
        assert r.status_code == 302 and r["Location"].startswith("/login/")


class AliasesTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        account = ready_account()
        self.customer = Customer.objects.create(account=account, customer_id="4600000001", name="Harbour Cafés")
        for name in ("Default", "Kiosk", "Warehouse"):
            ProfileAlias.objects.create(customer=self.customer, name=name)
        other = Customer.objects.create(account=account, customer_id="4600000002", name="Other")
        ProfileAlias.objects.create(customer=other, name="Not yours")
        self.url = "/kdp/aliases/"

    def test_it_returns_the_customers_aliases_as_a_select(self):
        self.client.force_login(self.operator)
        r = self.client.get(
            self.url, {"customer": self.customer.pk, "profile_alias": "Kiosk"}, headers={"HX-Request": "true"}
        )
        assert r.status_code == 200 and b"<html" not in r.content
        html = r.content.decode()
        assert html.lstrip().startswith('<select name="profile_alias"')
        assert re.findall(r'<option value="([^"]+)"', html) == ["Default", "Kiosk", "Warehouse"]
        assert '<option value="Kiosk" selected>' in html
        assert "Not yours" not in html

    def test_it_explains_a_customer_without_aliases(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url, {"customer": ""})
        self.assertContains(r, '<select name="profile_alias"')
        self.assertContains(r, "has no KME profile alias")

    def test_it_rejects_a_customer_that_is_not_a_number(self):
        self.client.force_login(self.operator)
        assert self.client.get(self.url, {"customer": "abc"}).status_code == 400

    def test_it_needs_a_login_and_the_role(self):
        assert self.client.get(self.url, {"customer": self.customer.pk}).status_code == 302
        self.client.force_login(self.outsider)
        assert self.client.get(self.url, {"customer": self.customer.pk}).status_code == 403

    def test_it_is_get_only(self):
        self.client.force_login(self.operator)
        assert self.client.post(self.url, {"customer": self.customer.pk}).status_code == 405


class KdpIndexTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = ready_account()
        self.url = "/kdp/"

    def test_it_lists_accounts_and_recent_spreadsheets(self):
        make_upload(self.account, imei_csv(fresh_imeis(2)), "recent.csv")
        self.client.force_login(self.operator)
        r = self.client.get(self.url)
        self.assertContains(r, "Acme Mobile")
        self.assertContains(r, "recent.csv")
        self.assertContains(r, 'href="/kdp/uploads/?operation=delete"')

    def test_it_hides_the_upload_buttons_from_a_viewer(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url)
        assert r.status_code == 200
        self.assertNotContains(r, 'href="/kdp/uploads/?operation=delete"')

    def test_it_needs_a_login_the_role_and_get(self):
        assert self.client.get(self.url).status_code == 302
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.post(self.url).status_code == 405


# --- confirm, against the sandbox -----------------------------------------------------------------------------


@pytest.fixture
def staged(customer, operator):
    """Three fresh IMEIs staged for the sandbox account, ready to confirm."""
    return make_upload(customer.account, imei_csv(fresh_imeis(3, "35900000")), "order.csv", user=operator)


def confirm_url(upload: Upload) -> str:
    return f"/kdp/uploads/{upload.pk}/confirm/"


def test_it_queues_the_upload_job_with_customer_alias_and_order(client, customer, staged, operator):
    alias = customer.aliases.order_by("name").first().name
    client.force_login(operator)
    r = client.post(
        confirm_url(staged),
        {"customer": customer.pk, "profile_alias": alias, "order_no": "PO-42", "order_date": "2025-03-01"},
    )
    job = Job.objects.get(kind="kdp.upload")
    assert r.status_code == 302 and r["Location"] == f"/kdp/jobs/{job.pk}/"
    assert job.params == {
        "upload": staged.pk,
        "customer": customer.pk,
        "profile_alias": alias,
        "order_no": "PO-42",
        "order_time": 1740787200,  # 2025-03-01T00:00:00Z
    }
    assert (job.total, job.account, job.created_by, job.func) == (
        3,
        customer.account,
        operator,
        "kdp.tasks.run_transfer",
    )
    staged.refresh_from_db()
    assert staged.status == Upload.Status.SUBMITTED and staged.job == job
    page = client.get(r["Location"])
    assert f"Job #{job.pk} queued" in page.content.decode()


def test_it_lists_the_customers_and_loads_aliases_on_change(client, customer, staged, operator):
    client.force_login(operator)
    r = client.get(f"/kdp/uploads/{staged.pk}/")
    html = r.content.decode()
    assert f'<option value="{customer.pk}"' in html
    assert "— pending verification" in html  # the sandbox's fifth customer
    assert 'hx-get="/kdp/aliases/"' in html
    aliases = client.get("/kdp/aliases/", {"customer": customer.pk}, headers={"HX-Request": "true"}).content.decode()
    assert set(re.findall(r'<option value="([^"]+)"', aliases)) == set(customer.aliases.values_list("name", flat=True))


def test_it_submits_a_spreadsheet_only_once(client, customer, staged, operator):
    client.force_login(operator)
    first = client.post(confirm_url(staged), {"customer": customer.pk})
    assert first.status_code == 302
    second = client.post(confirm_url(staged), {"customer": customer.pk}, follow=True)
    assert "not ready to submit" in unescape(second.content.decode())
    assert second.redirect_chain[-1][0] == f"/kdp/uploads/{staged.pk}/"
    assert Job.objects.filter(kind="kdp.upload").count() == 1


def test_it_explains_why_a_pending_customer_is_refused(client, synced, staged, operator):
    pending = Customer.objects.get(account=synced, status="Pending")
    client.force_login(operator)
    r = client.post(confirm_url(staged), {"customer": pending.pk})
    assert r.status_code == 200
    assert f"{pending.name} is still pending verification in Knox" in unescape(r.content.decode())
    assert not Job.objects.filter(kind="kdp.upload").exists()
    staged.refresh_from_db()
    assert staged.status == Upload.Status.READY


def test_it_refuses_an_alias_the_customer_does_not_have(client, customer, staged, operator):
    client.force_login(operator)
    r = client.post(confirm_url(staged), {"customer": customer.pk, "profile_alias": "Lobby screens"})
    assert r.status_code == 200
    assert f"{customer.name} has no KME profile alias “Lobby screens”" in unescape(r.content.decode())
    assert not Job.objects.filter(kind="kdp.upload").exists()


def test_it_refuses_a_missing_or_foreign_customer(client, customer, staged, operator):
    foreign = Customer.objects.create(account=ready_account(), customer_id="4699999999", name="Elsewhere")
    client.force_login(operator)
    for data in ({}, {"customer": foreign.pk}, {"customer": "abc"}, {"customer": customer.pk, "order_date": "soon"}):
        r = client.post(confirm_url(staged), data)
        assert r.status_code == 200 and b"<html" in r.content, data
        assert r.context["confirm"].errors, data
    assert not Job.objects.filter(kind="kdp.upload").exists()


def test_it_tells_the_operator_when_the_account_cannot_call_kdp(client, customer, staged, operator):
    account = customer.account
    account.set_secret("client_identifier", "")
    account.save()
    client.force_login(operator)
    r = client.post(confirm_url(staged), {"customer": customer.pk}, follow=True)
    assert "cannot call KDP yet: it needs the Client Identifier" in unescape(r.content.decode())
    assert not Job.objects.filter(kind="kdp.upload").exists()


def test_a_viewer_cannot_confirm(client, customer, staged):
    client.force_login(make_user("victor", "viewer"))
    assert client.post(confirm_url(staged), {"customer": customer.pk}).status_code == 403
    assert not Job.objects.filter(kind="kdp.upload").exists()
    anonymous = Client()
    assert anonymous.post(confirm_url(staged), {"customer": customer.pk}).status_code == 302
    assert not Job.objects.filter(kind="kdp.upload").exists()


def test_confirm_is_post_only(client, customer, staged, operator):
    client.force_login(operator)
    assert client.get(confirm_url(staged)).status_code == 405


def test_the_template_example_row_is_never_submitted(db, settings, tmp_path):
    """Someone uploads the downloaded template without replacing its example row."""
    from portal.exports import TEMPLATE_EXAMPLE, device_template_csv
    from portal.models import KnoxAccount
    from tests.kdp.helpers import make_upload

    account = KnoxAccount.objects.create(name="T", environment="sandbox", reseller_id="1")
    upload = make_upload(account, device_template_csv(), "template.csv")
    row = upload.rows.get(raw=TEMPLATE_EXAMPLE["imei"])
    assert row.status == "invalid" and "template's example row" in row.reason
    assert upload.valid == 0


class ProblemRowsWordingTestCase(BaseTestCase):
    """Item 10: "Download the 1 problem rows" is "Download the 1 problem row"."""

    def test_one_problem_row_is_singular(self):
        account = ready_account()
        good = fresh_imeis(1, "35877780")[0]
        upload = make_upload(account, f"IMEI\n{good}\n123\n".encode(), "one-bad.csv")
        assert (upload.valid, upload.problems) == (1, 1)
        self.client.force_login(self.operator)
        r = self.client.get(f"/kdp/uploads/{upload.pk}/")
        self.assertContains(r, "Download the 1 problem row as Excel</a>")
        self.assertContains(r, "The 1 problem row will not be sent.")
        self.assertNotContains(r, "1 problem rows")
