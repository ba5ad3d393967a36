"""The E-FOTA overview: accounts ready for E-FOTA, groups, licences, recent jobs and the last E-FOTA calls.

Also holds the helpers the other E-FOTA view modules share (a ready account built locally, the sandbox's
E-FOTA world)."""

from __future__ import annotations

import datetime as dt
from html import unescape

from django.utils import timezone

from efota.models import EfotaCall, EfotaGroup, EfotaLicence
from portal.models import Job, KnoxAccount
from tests.base import BaseTestCase

CUSTOMER = "EEEE4444-FF55-AA66-BB77-CCCCCC888888"
LICENCE = "EFOTA1-fff555-ggg666-hh77"
TOO_LONG_GROUP = "é" * 25 + "a"  # 26 characters, 51 bytes in UTF-8


def ready_account(name: str = "Acme Mobile") -> KnoxAccount:
    """An account with everything E-FOTA needs; tests using it never let it call E-FOTA."""
    account = KnoxAccount(
        name=name, environment="sandbox", efota_client_id="efota-tests", efota_mdm_id="d1e2f3g4h5",
    )  # fmt: skip
    account.set_secret("efota_client_secret", "not-a-real-secret")
    account.save()
    return account


def known_licence(account: KnoxAccount, key: str = LICENCE, customer_id: str = CUSTOMER, **fields) -> EfotaLicence:
    """A licence the portal knows (as a check on the Licences page leaves it): the E-FOTA forms offer it, and
    refuse one they don't know."""
    fields.setdefault("checked_at", timezone.now())
    return EfotaLicence.objects.create(account=account, customer_id=customer_id, key=key, **fields)


def efota_world(knox_sandbox, settings, account: KnoxAccount | None = None) -> dict:
    """The sandbox's E-FOTA world (customer ID, licences, group, serials, firmware), with our pacing off (the
    sandbox does not limit E-FOTA). Each module wraps it in an `efota` fixture that also asks for
    `sandbox_account`; given the account, the sandbox's licences are ones the portal knows, as if checked (the
    expired one not checked yet, so that E-FOTA is the one to refuse it)."""
    settings.KNOX_EFOTA_RATE_LIMIT = 0
    world = knox_sandbox.credentials["efota"]
    if account is not None:
        for key in (world["license"], world["second_license"]):
            known_licence(account, key, world["customer_id"])
        known_licence(account, world["expired_license"], world["customer_id"], checked_at=None)
    return world


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
