"""The Knox Guard licence list (kept by staff in the admin: Knox Guard gives no licence information)."""

from __future__ import annotations

import datetime as dt

from guard.models import GuardLicence
from tests.base import BaseTestCase
from tests.guard.helpers import guard_account, make_device


class LicencesTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        account = guard_account()
        GuardLicence.objects.create(account=account, key="KG-ACTIVE", max_devices=1000,
                                    expires_on=dt.date.today() + dt.timedelta(days=30))  # fmt: skip
        GuardLicence.objects.create(account=account, key="KG-LAPSED", expires_on=dt.date(2020, 1, 1))
        self.url = "/guard/licences/"

    def test_it_lists_licences_with_the_expired_ones_marked(self):
        self.client.force_login(self.viewer)
        html = self.client.get(self.url).content.decode()
        assert "KG-ACTIVE" in html and "1000" in html
        lapsed = html[html.index("KG-LAPSED") - 200 : html.index("KG-LAPSED") + 200]
        assert "licence-expired" in lapsed and "badge-failed" in lapsed
        assert "Knox Guard does not tell the portal about licences" in html and "nothing here comes from Knox" in html

    def test_it_cites_no_document_and_counts_the_devices_recorded_with_each_key(self):
        """Issue 16 item 7: the page cited a document staff do not have (knox-api.md §6 q22)."""
        account = GuardLicence.objects.get(key="KG-ACTIVE").account
        for n in (1, 2):
            make_device(account, "Enrolled", n, licence="KG-ACTIVE")
        self.client.force_login(self.viewer)
        html = self.client.get(self.url).content.decode()
        assert "q22" not in html and "knox-api" not in html and "§" not in html
        assert f'?account={account.pk}&licence=KG-ACTIVE">2</a>' in html
        lapsed = html[html.index("KG-LAPSED") : html.index("KG-LAPSED") + 600]
        assert '<span class="muted">none</span>' in lapsed

    def test_the_device_list_shows_no_licence_column_knox_never_fills(self):
        make_device(GuardLicence.objects.get(key="KG-ACTIVE").account, "Enrolled", 1)
        self.client.force_login(self.viewer)
        html = self.client.get("/guard/devices/").content.decode()
        assert "<th>Licence</th>" not in html and "350000000000001" in html

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        assert self.client.get(self.url)["Location"].startswith("/login/")

    def test_it_forbids_an_outsider_and_answers_post_with_405(self):
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        self.client.force_login(self.viewer)
        assert self.client.post(self.url).status_code == 405
