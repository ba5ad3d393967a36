"""Abnormal devices: which of the given devices E-FOTA cannot update, and why."""

from __future__ import annotations

from html import unescape

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from efota.models import EfotaCall
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, make_user
from tests.efota.test_index_views import CUSTOMER, LICENCE, efota_world, ready_account

URL = "/efota/abnormal/"


@pytest.fixture
def efota(sandbox_account, knox_sandbox, settings):
    return efota_world(knox_sandbox, settings)


class AbnormalTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()

    def test_it_shows_the_form(self):
        self.client.force_login(self.viewer)
        html = self.client.get(URL).content.decode()
        assert 'name="serials"' in html and 'enctype="multipart/form-data"' in html

    def test_bad_serial_numbers_are_named_and_nothing_is_sent(self):
        self.client.force_login(self.viewer)
        data = {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": LICENCE, "serials": "R5CMXWARTYK, 12345"}
        r = self.client.post(URL, data, headers={"HX-Request": "true"})
        assert r.status_code == 200 and "<html" not in r.content.decode()
        assert r.context["form"].errors["serials"] == ["Not 11-character serial numbers: 12345."]
        r = self.client.post(URL, {**data, "serials": ""})
        assert r.context["form"].errors["serials"] == ["Give at least one serial number."]
        assert not EfotaCall.objects.exists()

    def test_more_than_1000_devices_are_refused(self):
        self.client.force_login(self.viewer)
        serials = "\n".join(f"R5{n:09d}" for n in range(1001))
        r = self.client.post(
            URL, {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": LICENCE, "serials": serials}
        )
        assert "1001 devices: at most 1,000 at once" in r.context["form"].errors["serials"][0]

    def test_it_accepts_only_get_and_post(self):
        self.client.force_login(self.viewer)
        assert self.client.patch(URL).status_code == 405

    def test_it_needs_a_login_and_a_role(self):
        self.assertRedirects(self.client.get(URL), f"/login/?next={URL}", fetch_redirect_response=False)
        self.client.force_login(self.outsider)
        assert self.client.post(URL, {"account": self.acme.pk}).status_code == 403
        assert not Job.objects.exists()


def test_it_reports_abnormal_devices_by_category(client, efota, sandbox_account):
    client.force_login(make_user("victor", "viewer"))
    serials = efota["device_serials"]
    unknown = "R5ZZZZZZZZZ"
    # Pasted (comma separated) and from a spreadsheet with an IMEI column first: the serial column is the one read.
    csv = "IMEI,Serial Number\n" + "".join(f"35922114535033{n % 10},{s}\n" for n, s in enumerate(serials[5:]))
    data = {
        "account": sandbox_account.pk, "customer_id": efota["customer_id"], "licence": efota["license"],
        "serials": ", ".join([*serials[:5], unknown.lower()]), "file": SimpleUploadedFile("fleet.csv", csv.encode()),
    }  # fmt: skip
    r = client.post(URL, data, headers={"HX-Request": "true"})
    html = unescape(r.content.decode())
    assert r.status_code == 200 and "<html" not in html, html[:2000]
    assert "Report for 11 devices" in html
    assert f"<td>Not Enrolled</td><td>1</td><td><code>{unknown}</code></td>" in html
    assert "<td>Blocked, Insufficient License</td><td>2</td>" in html  # the sandbox's two blocked devices
    call = EfotaCall.objects.get()
    assert (call.operation, call.ok, call.summary) == ("abnormalDeviceList", True, "11 devices")
    event = AuditEvent.objects.get(action="efota.abnormal_devices")
    assert event.summary["devices"] == 11 and event.summary["abnormal"] == 3


def test_a_file_without_serial_numbers_is_refused(client, efota, sandbox_account):
    client.force_login(make_user("victor", "viewer"))
    data = {"account": sandbox_account.pk, "customer_id": efota["customer_id"], "licence": efota["license"],
            "file": SimpleUploadedFile("imeis.csv", b"IMEI\n359221145350335\n")}  # fmt: skip
    r = client.post(URL, data)
    assert "holds no valid serial number" in r.context["form"].errors["file"][0]
    assert not EfotaCall.objects.exists()
