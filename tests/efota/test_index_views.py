"""The E-FOTA overview: accounts ready for E-FOTA, groups, licences, recent jobs and the last E-FOTA calls."""

from __future__ import annotations

import datetime as dt
from html import unescape

from efota.models import EfotaCall, EfotaGroup, EfotaLicence
from portal.models import Job, KnoxAccount
from tests.base import BaseTestCase
from tests.efota.helpers import CUSTOMER, LICENCE, ready_account


class IndexTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()
        self.half = KnoxAccount.objects.create(name="Half set up", environment="sandbox")
        EfotaGroup.objects.create(
            account=self.acme, customer_id=CUSTOMER, group_id="FLEET-A", licence=LICENCE,
            status=EfotaGroup.Status.FAILED, last_code="FUD_3018",
            last_error="The licence is not active (expired or not yet activated); renew it or choose another licence.",
        )  # fmt: skip
        EfotaLicence.objects.create(
            account=self.acme, customer_id=CUSTOMER, key=LICENCE, max_devices=250, expiration_date=dt.date(2001, 1, 31)
        )
        EfotaLicence.objects.create(account=self.acme, customer_id=CUSTOMER, key="EFOTA1-current", max_devices=100,
                                    expiration_date=dt.date(2099, 12, 31))  # fmt: skip
        self.job = Job.objects.create(kind="efota.register", account=self.acme, title="Register E-FOTA group FLEET-A")
        Job.objects.create(kind="kdp.upload", account=self.acme, title="A KDP upload")
        EfotaCall.objects.create(account=self.acme, operation="licenseInfo", summary=LICENCE)
        EfotaCall.objects.create(account=self.acme, operation="groupRegister", ok=False, code="FUD_3019",
                                 message="This group is already registered to another licence.")  # fmt: skip
        self.url = "/efota/"

    def test_it_shows_accounts_groups_licences_jobs_and_calls(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url)
        html = unescape(r.content.decode())
        assert r.status_code == 200
        assert "ready for E-FOTA</span> mdmId <code>d1e2f3g4h5</code>" in html
        assert "Half set up</a>:" in html and "needs the E-FOTA client ID and secret, the E-FOTA mdmId" in html
        assert "<code>FLEET-A</code>" in html and "Not registered" in html and "The licence is not active" in html
        assert '<tr class="efota-expired"><td><code>EFOTA1-fff555-ggg666-hh77</code>' in html
        assert "2001-01-31 <span" in html and "<td>250</td>" in html
        assert "<tr><td><code>EFOTA1-current</code>" in html  # not expired, not highlighted
        assert f'href="/efota/jobs/{self.job.pk}/"' in html and "A KDP upload" not in html
        assert '<span class="badge badge-failed">FUD_3019</span> This group is already registered' in html
        assert '<span class="badge badge-succeeded">ok</span>' in html
        # The calls in words, not E-FOTA's operation names.
        assert "<td>Check a licence</td>" in html and "<td>Register a group</td>" in html
        assert "licenseInfo" not in html and "groupRegister" not in html

    def test_it_offers_actions_to_operators_only(self):
        self.client.force_login(self.viewer)
        assert "Register a group to a licence" not in self.client.get(self.url).content.decode()
        self.client.force_login(self.operator)
        assert "Register a group to a licence" in self.client.get(self.url).content.decode()

    def test_it_needs_a_login_and_a_role(self):
        self.assertRedirects(self.client.get(self.url), "/login/?next=/efota/", fetch_redirect_response=False)
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403

    def test_it_is_get_only(self):
        self.client.force_login(self.operator)
        assert self.client.post(self.url).status_code == 405
