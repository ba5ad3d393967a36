"""The Knox Guard licence list (kept in the admin: Knox documents no licence API)."""

from __future__ import annotations

import datetime as dt

from guard.models import GuardLicence
from tests.base import BaseTestCase
from tests.guard.test_device_views import guard_account


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
        assert "documents no licence API" in html and "q22" in html
        assert "licence=KG-ACTIVE" in html

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        assert self.client.get(self.url)["Location"].startswith("/login/")

    def test_it_forbids_an_outsider_and_answers_post_with_405(self):
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        self.client.force_login(self.viewer)
        assert self.client.post(self.url).status_code == 405
