"""E-FOTA in the admin: plain headings ("E-FOTA calls", not "Efota calls") and operations in words."""

from __future__ import annotations

from html import unescape

from efota.models import EfotaCall, ForceUpdate, ForceUpdateDevice
from portal.models import Job
from tests.base import BaseTestCase, make_user
from tests.efota.helpers import ready_account


class EfotaAdminTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()
        EfotaCall.objects.create(account=self.acme, operation="licenseInfo", summary="EFOTA1-x")
        EfotaCall.objects.create(account=self.acme, operation="someNewCall", summary="y")
        self.client.force_login(make_user("root", is_staff=True, is_superuser=True))

    def test_the_admin_index_names_every_e_fota_model_plainly(self):
        html = unescape(self.client.get("/admin/").content.decode())
        for heading in ("E-FOTA calls", "E-FOTA groups", "E-FOTA licences", "E-FOTA force updates"):
            assert heading in html, heading
        assert "Efota" not in html

    def test_the_call_list_shows_operations_in_words(self):
        html = unescape(self.client.get("/admin/efota/efotacall/").content.decode())
        assert "Select E-FOTA call to view" in html
        rows = html.split("<tbody>")[1].split("</tbody>")[0]
        assert "Check a licence" in rows and "licenseInfo" not in rows
        assert "someNewCall" in html  # an operation the table doesn't know is shown as E-FOTA names it
        assert "Force update status" in html  # offered by the filter

    def test_a_force_update_shows_its_devices_status_in_words(self):
        job = Job.objects.create(kind="efota.force_update", account=self.acme)
        fu = ForceUpdate.objects.create(account=self.acme, job=job, customer_id="C", licence="L", model="M",
                                        sales_code="S", serials=["R58N123ABCD"], force_update_id="FU-1")  # fmt: skip
        ForceUpdateDevice.objects.create(force_update=fu, serial="R58N123ABCD", status="FAILED")
        html = unescape(self.client.get(f"/admin/efota/forceupdate/{fu.pk}/change/").content.decode())
        assert "Download failed" in html
