"""Firmware lookup: the versions E-FOTA offers for a model and sales code, asked while the page waits."""

from __future__ import annotations

from html import unescape

import pytest

from efota.models import EfotaCall
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, make_user
from tests.efota.test_index_views import CUSTOMER, LICENCE, efota_world, ready_account

URL = "/efota/firmware/"


@pytest.fixture
def efota(sandbox_account, knox_sandbox, settings):
    return efota_world(knox_sandbox, settings)


class FirmwareTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()

    def test_it_shows_the_form(self):
        self.client.force_login(self.viewer)
        html = self.client.get(URL).content.decode()
        assert 'hx-post="/efota/firmware/"' in html and 'name="sales_code"' in html

    def test_missing_and_oversized_values_are_refused_without_a_call(self):
        self.client.force_login(self.viewer)
        data = {
            "account": self.acme.pk,
            "customer_id": CUSTOMER,
            "licence": "",
            "model": "",
            "sales_code": "BTUBTUBTUBTU",
        }
        r = self.client.post(URL, data, headers={"HX-Request": "true"})
        assert r.status_code == 200 and "<html" not in r.content.decode()
        errors = r.context["form"].errors
        assert set(errors) == {"licence", "model", "sales_code"}
        assert not EfotaCall.objects.exists() and not AuditEvent.objects.filter(action__startswith="efota.").exists()

    def test_it_accepts_only_get_and_post(self):
        self.client.force_login(self.viewer)
        assert self.client.put(URL).status_code == 405

    def test_it_needs_a_login_and_a_role(self):
        self.assertRedirects(self.client.get(URL), f"/login/?next={URL}", fetch_redirect_response=False)
        self.client.force_login(self.outsider)
        assert self.client.post(URL, {"account": self.acme.pk}).status_code == 403
        assert not EfotaCall.objects.exists() and not Job.objects.exists()


def test_it_lists_the_firmware_e_fota_offers(client, efota, sandbox_account):
    client.force_login(make_user("victor", "viewer"))
    data = {"account": sandbox_account.pk, "customer_id": efota["customer_id"], "licence": efota["license"],
            "model": "sm-g991b", "sales_code": "btu", "current": ""}  # fmt: skip
    r = client.post(URL, data, headers={"HX-Request": "true"})
    html = r.content.decode()
    assert r.status_code == 200 and "<html" not in html
    for version in efota["firmware"]["SM-G991B/BTU"]:
        assert f"<li><code>{version}</code></li>" in html
    call = EfotaCall.objects.get()
    assert (call.operation, call.ok, call.summary) == ("firmwareList", True, "SM-G991B/BTU")
    event = AuditEvent.objects.get(action="efota.firmware_list")
    assert event.summary["ok"] is True and event.summary["versions"] == len(efota["firmware"]["SM-G991B/BTU"])


def test_an_empty_list_and_a_refusal_are_explained(client, efota, sandbox_account):
    client.force_login(make_user("victor", "viewer"))
    data = {"account": sandbox_account.pk, "customer_id": efota["customer_id"], "licence": efota["second_license"],
            "model": "SM-G991B", "sales_code": "BTU"}  # fmt: skip
    html = unescape(client.post(URL, data).content.decode())
    assert "E-FOTA offers no firmware for this model and sales code on this licence." in html
    html = unescape(client.post(URL, {**data, "licence": "EFOTA1-unknown"}).content.decode())
    assert "E-FOTA does not know this licence" in html and "<code>FUD_3017</code>" in html
    assert list(EfotaCall.objects.values_list("ok", "code")) == [(False, "FUD_3017"), (True, "")]
    assert AuditEvent.objects.filter(action="efota.firmware_list").count() == 2


# A licence and customer ID the page never saw still reach E-FOTA only through the form's checks.
def test_byte_limits_apply_to_the_lookup(client, efota, sandbox_account):
    client.force_login(make_user("victor", "viewer"))
    data = {"account": sandbox_account.pk, "customer_id": "é" * 26, "licence": LICENCE, "model": "X", "sales_code": "Y"}
    r = client.post(URL, data)
    assert "The customer ID is 52 bytes in UTF-8" in r.content.decode()
    assert not EfotaCall.objects.exists()
