"""Knox accounts: creation with keys.json, write-only encrypted secrets, keys upload errors, test connection."""

from __future__ import annotations

import json

import responses
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from portal.models import AuditEvent, Job, KnoxAccount
from tests.base import BaseTestCase
from tests.keys import keys_dict, keys_json
from tests.portal.helpers import HTMX, ask, assert_following

CLIENT_ID = "cid-PLAINTEXT-4c1d"
OAUTH_SECRET = "oauth-PLAINTEXT-9f2e"
GEN1_KEY = "gen1-PLAINTEXT-77aa"
EFOTA_SECRET = "efota-PLAINTEXT-31bb"


def upload(content: bytes = b"", name: str = "keys.json") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content or keys_json(), content_type="application/json")


class AccountsTestCase(BaseTestCase):
    def form_data(self, **extra):
        data = {
            "name": "Acme EU",
            "environment": "sandbox",
            "region": "eu",
            "kdp_generation": "gen2",
            "auth_mode": "knox_token",
            "reseller_id": "4600000925",
            "oauth_scopes": "kdp.devices",
            "oauth_client_id": "client-1",
            "efota_client_id": "efota-1",
            "efota_mdm_id": "d1e2f3g4h5",
            "is_active": "on",
            "client_identifier": CLIENT_ID,
            "oauth_client_secret": OAUTH_SECRET,
            "efota_client_secret": EFOTA_SECRET,
        }
        data.update(extra)
        return data

    def create(self) -> KnoxAccount:
        self.client.force_login(self.admin)
        r = self.client.post("/accounts/new/", {**self.form_data(), "keys_file": upload()})
        account = KnoxAccount.objects.get(name="Acme EU")
        self.assertRedirects(r, f"/accounts/{account.pk}/")
        return account

    def raw_row(self, pk: int) -> str:
        with connection.cursor() as c:
            c.execute("SELECT * FROM portal_knoxaccount WHERE id = %s", [pk])
            return repr(c.fetchone())

    def test_it_creates_an_account_with_encrypted_secrets(self):
        account = self.create()
        assert account.secret("client_identifier") == CLIENT_ID
        assert account.secret("oauth_client_secret") == OAUTH_SECRET
        assert account.secret("private_key") == keys_dict()["Private"]
        assert account.public_key == keys_dict()["Public"]
        assert account.key_identifier == "test-key-2048-0"
        row = self.raw_row(account.pk)
        for plaintext in (
            CLIENT_ID,
            OAUTH_SECRET,
            EFOTA_SECRET,
            keys_dict()["Private"][:60],
            keys_dict()["Private"][-60:],
        ):
            assert plaintext not in row

    def test_secrets_are_never_rendered_back(self):
        account = self.create()
        pages = [
            f"/accounts/{account.pk}/",
            f"/accounts/{account.pk}/edit/",
            "/accounts/",
            f"/admin/portal/knoxaccount/{account.pk}/change/",
            "/admin/portal/knoxaccount/",
            "/audit/",
            "/admin/portal/auditevent/",
        ]
        for url in pages:
            html = self.client.get(url).content.decode()
            for plaintext in (CLIENT_ID, OAUTH_SECRET, EFOTA_SECRET, keys_dict()["Private"][:40]):
                assert plaintext not in html, url
        assert "set" in self.client.get(f"/accounts/{account.pk}/").content.decode()

    def test_blank_secret_fields_keep_the_stored_value_and_clear_removes_it(self):
        account = self.create()
        data = self.form_data(
            client_identifier="", oauth_client_secret="", efota_client_secret="", clear_secrets=["efota_client_secret"]
        )
        self.client.post(f"/accounts/{account.pk}/edit/", data)
        account.refresh_from_db()
        assert account.secret("client_identifier") == CLIENT_ID
        assert account.secret("oauth_client_secret") == OAUTH_SECRET
        assert not account.has_secret("efota_client_secret")

    def test_audit_summaries_name_secrets_but_never_hold_them(self):
        self.create()
        event = AuditEvent.objects.get(action="account.create")
        text = json.dumps(event.summary)
        assert "client_identifier" in text and "keys.json" in text
        for plaintext in (CLIENT_ID, OAUTH_SECRET, EFOTA_SECRET):
            assert plaintext not in text

    def test_a_bad_keys_file_is_refused_with_the_reason(self):
        account = self.create()
        r = self.client.post(f"/accounts/{account.pk}/keys/", {"keys_file": upload(b'{"Public": "x"}')}, follow=True)
        self.assertContains(r, "keys.json lacks Private")
        account.refresh_from_db()
        assert account.secret("private_key") == keys_dict()["Private"]
        r = self.client.post("/accounts/new/", {**self.form_data(name="Other"), "keys_file": upload(b"{oops")})
        self.assertContains(r, "not valid JSON")
        assert not KnoxAccount.objects.filter(name="Other").exists()

    def test_uploading_new_keys_replaces_them(self):
        account = self.create()
        version = account.credentials_version
        self.client.post(f"/accounts/{account.pk}/keys/", {"keys_file": upload(keys_json(n=1))})
        account.refresh_from_db()
        assert account.public_key == keys_dict(n=1)["Public"]
        assert account.credentials_version > version
        assert AuditEvent.objects.filter(action="account.keys_upload").count() == 1

    def test_gen1_and_gen2_cannot_be_mixed(self):
        self.client.force_login(self.admin)
        r = self.client.post("/accounts/new/", self.form_data(kdp_generation="gen1", auth_mode="knox_token"))
        self.assertContains(r, "authenticates with its static Gen1 key")
        r = self.client.post("/accounts/new/", self.form_data(kdp_generation="gen2", auth_mode="gen1_key"))
        self.assertContains(r, "only works with KDP Gen1")

    def test_base_urls_follow_presets_and_overrides(self):
        account = KnoxAccount(name="x", environment="production", region="us")
        assert account.base_url("kdp") == "https://us-kcs-api.samsungknox.com/kcs/v1/rp"
        assert account.base_url("guard") == "https://us-kcs-api.samsungknox.com/kcs/v1.1/kg"
        assert account.base_url("kdp_gen1") == "https://us-be-reseller.samsungknox.com"
        assert account.base_url("auth") == "https://us-kcs-api.samsungknox.com"
        account.environment = "integration"
        assert account.base_url("guard") == "https://us-kcs-api.samsungknox.com/integration"
        account.auth_mode = "oauth"
        assert account.base_url("auth") == "https://api.samsungknox.com"
        assert account.base_url("kdp") == "https://api.samsungknox.com/kcs/v1/rp"
        account.guard_url = "https://proxy.example.org/kg/"
        assert account.base_url("guard") == "https://proxy.example.org/kg"

    def mock_knox(self) -> None:
        """KDP answers, Knox Guard refuses the credentials, E-FOTA issues a token (the network edge, mocked)."""
        responses.post("http://knox.test/ams/v1/users/accesstoken", json={"accessToken": "a"})
        responses.get("http://knox.test/kcs/v1/rp/customers", json={"totalCount": 5, "customers": []})
        responses.get(
            "http://knox.test/kcs/v1.1/kg/authorization",
            status=401,
            json={
                "result": "FAIL",
                "error": {"code": 4010000, "message": "AUTHORIZATION_FAIL", "reason": "Invalid Api Key"},
            },
        )
        responses.post("http://knox.test/iam/auth/oauth/v2/token", json={"access_token": "e", "expires_in": 3600})

    @responses.activate
    def test_test_connection_reports_each_service(self):
        with self.settings(
            KNOX_SANDBOX_URL="http://knox.test", KNOX_KDP_RATE_LIMIT=0, KNOX_GUARD_RATE_LIMIT=0, KNOX_MAX_RETRIES=0
        ):
            account = self.create()
            self.mock_knox()
            r, job, html = ask(self.client, f"/accounts/{account.pk}/test/", {}, self.captureOnCommitCallbacks)
        posted = r.content.decode()
        assert posted.lstrip().startswith('<div id="test-results">')
        assert_following(posted, job)
        assert "<dt>Services</dt><dd>3</dd>" in posted  # KDP, Knox Guard and E-FOTA are set up: 3 to test
        assert "<html" not in html
        assert "5 customer(s) visible" in html
        assert "Knox Guard rejected the credentials" in html and "4010000" in html
        assert "token issued" in html
        account.refresh_from_db()
        assert account.last_test_ok is False and account.last_test_at is not None
        assert "Knox Guard: Knox Guard rejected the credentials" in account.last_test_message
        job.refresh_from_db()
        assert (job.kind, job.status, job.succeeded, job.failed) == ("portal.connection_test", "partial", 2, 1)
        assert job.error_summary.startswith("Knox Guard: Knox Guard rejected the credentials")
        event = AuditEvent.objects.get(action="account.test_connection")
        assert event.actor == self.admin and event.summary["ok"] is False and event.summary["job"] == job.pk
        assert [r["ok"] for r in event.summary["results"]] == [True, False, True]

    @responses.activate
    def test_without_javascript_the_account_page_shows_the_test(self):
        with self.settings(
            KNOX_SANDBOX_URL="http://knox.test", KNOX_KDP_RATE_LIMIT=0, KNOX_GUARD_RATE_LIMIT=0, KNOX_MAX_RETRIES=0
        ):
            account = self.create()
            r = self.client.post(f"/accounts/{account.pk}/test/")
            job = Job.objects.get(kind="portal.connection_test")
            self.assertRedirects(r, f"/accounts/{account.pk}/?job={job.pk}", fetch_redirect_response=False)
            queued = self.client.get(r["Location"]).content.decode()
            assert 'class="badge badge-queued">Queued<' in queued and "Reload</a>" in queued
            assert not responses.calls  # the request did not reach Knox
            self.mock_knox()
            with self.captureOnCommitCallbacks(execute=True):
                r = self.client.post(f"/accounts/{account.pk}/test/")
        page = self.client.get(r["Location"]).content.decode()
        assert "5 customer(s) visible" in page and "Knox Guard rejected the credentials" in page
        assert 'class="badge badge-partial">Partially failed<' in page and 'hx-trigger="every 2s"' not in page

    def test_the_test_is_for_account_managers_only(self):
        account = self.create()
        job = Job.objects.create(
            kind="portal.connection_test", account=account, status="succeeded", result={"ok": True, "results": []}
        )
        other = KnoxAccount.objects.create(name="Other", environment="sandbox")
        for user in (self.viewer, self.operator):
            self.client.force_login(user)
            assert self.client.post(f"/accounts/{account.pk}/test/").status_code == 403
            assert self.client.get(f"/accounts/{account.pk}/", {"job": job.pk}).status_code == 403
            assert self.client.get(f"/jobs/{job.pk}/result/", headers=HTMX).status_code == 403
        self.client.force_login(self.admin)
        assert self.client.get(f"/accounts/{account.pk}/", {"job": job.pk}).status_code == 200
        assert self.client.get(f"/accounts/{other.pk}/", {"job": job.pk}).status_code == 404  # not its test
        assert self.client.get(f"/accounts/{account.pk}/test/").status_code == 405
        assert Job.objects.count() == 1

    def test_an_account_with_nothing_set_up_has_nothing_to_test(self):
        account = KnoxAccount.objects.create(name="Empty", environment="sandbox")
        self.client.force_login(self.admin)
        _, job, html = ask(self.client, f"/accounts/{account.pk}/test/", {}, self.captureOnCommitCallbacks)
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED and job.total == 0
        assert job.error_summary == "No Knox service is set up on this account: nothing was tested."
        assert html.count("skipped") == 3 and "not set up: needs" in html
        account.refresh_from_db()
        assert account.last_test_ok is False


def test_the_account_form_shows_every_field_once():
    from portal.forms import KnoxAccountForm

    form = KnoxAccountForm()
    shown = [bound.name for _, fields in form.sections() for bound in fields]
    assert sorted(shown) == sorted(form.fields)
