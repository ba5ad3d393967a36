"""Licences: the list of licences checked and the "check licence" form, which asks E-FOTA while the page waits."""

from __future__ import annotations

import datetime as dt
from html import unescape

import pytest

from efota.models import EfotaCall, EfotaLicence
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, make_user
from tests.efota.test_index_views import CUSTOMER, LICENCE, efota_world, ready_account

URL = "/efota/licences/"


@pytest.fixture
def efota(sandbox_account, knox_sandbox, settings):
    return efota_world(knox_sandbox, settings)


class LicencesTestCase(BaseTestCase):
    """Everything that never reaches E-FOTA."""

    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()
        EfotaLicence.objects.create(account=self.acme, customer_id=CUSTOMER, key=LICENCE, max_devices=100,
                                    expiration_date=dt.date(2000, 1, 1))  # fmt: skip

    def test_it_lists_licences_with_the_expired_ones_highlighted(self):
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(URL).content.decode())
        assert f'<tr class="efota-expired"><td><code>{LICENCE}</code>' in html
        assert 'hx-post="/efota/licences/"' in html and 'action="/efota/licences/"' in html

    def test_invalid_input_is_refused_with_field_errors_and_nothing_is_sent(self):
        self.client.force_login(self.viewer)
        r = self.client.post(URL, {"account": self.acme.pk, "customer_id": "é" * 26, "licence": ""})
        assert r.status_code == 200
        errors = r.context["form"].errors
        assert errors["licence"] == ["This field is required."]
        assert errors["customer_id"][0].startswith("The customer ID is 52 bytes in UTF-8; E-FOTA allows 50 bytes")
        r = self.client.post(URL, {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": "é" * 50 + "x"})
        assert "The licence is 101 bytes in UTF-8" in r.content.decode()
        assert not EfotaCall.objects.exists() and EfotaLicence.objects.count() == 1

    def test_invalid_input_over_htmx_returns_the_form_fragment(self):
        self.client.force_login(self.viewer)
        r = self.client.post(URL, {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": ""},
                             headers={"HX-Request": "true"})  # fmt: skip
        html = r.content.decode()
        assert r.status_code == 200 and "<html" not in html
        assert html.lstrip().startswith('<div id="licence-check">') and "This field is required." in html

    def test_it_accepts_only_get_and_post(self):
        self.client.force_login(self.viewer)
        assert self.client.put(URL).status_code == 405
        assert self.client.delete(URL).status_code == 405

    def test_it_needs_a_login_and_a_role(self):
        self.assertRedirects(self.client.get(URL), f"/login/?next={URL}", fetch_redirect_response=False)
        r = self.client.post(URL, {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": LICENCE})
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        self.client.force_login(self.outsider)
        assert self.client.post(URL, {"account": self.acme.pk}).status_code == 403
        assert not EfotaCall.objects.exists() and not Job.objects.exists()


def test_a_viewer_checks_a_licence_and_the_answer_is_stored(client, efota, sandbox_account):
    client.force_login(make_user("victor", "viewer"))
    data = {"account": sandbox_account.pk, "customer_id": efota["customer_id"], "licence": efota["license"]}
    r = client.post(URL, data, headers={"HX-Request": "true"})
    html = unescape(r.content.decode())
    assert r.status_code == 200 and "<html" not in html
    record = EfotaLicence.objects.get(key=efota["license"])
    assert record.max_devices == 100 and record.expiration_date and not record.is_expired
    assert f"<dt>Max devices</dt><dd>{record.max_devices}</dd>" in html
    assert f"<dt>Expires</dt><dd>{record.expiration_date:%Y-%m-%d}</dd>" in html
    assert EfotaCall.objects.get().operation == "licenseInfo"
    assert AuditEvent.objects.get(action="efota.license_info").summary == {"ok": True}
    assert not Job.objects.exists()  # a read, not a job
    assert efota["license"] in client.get(URL).content.decode()  # and listed


def test_an_expired_licence_is_explained_with_its_fud_code(client, efota, sandbox_account):
    client.force_login(make_user("victor", "viewer"))
    data = {"account": sandbox_account.pk, "customer_id": efota["customer_id"], "licence": efota["expired_license"]}
    html = unescape(client.post(URL, data).content.decode())
    assert "The licence is not active (expired or not yet activated)" in html
    assert "<code>FUD_3018</code>" in html and "(processing error)" in html
    call = EfotaCall.objects.get()
    assert (call.ok, call.code) == (False, "FUD_3018")
    assert "not active" in EfotaLicence.objects.get(key=efota["expired_license"]).last_error
