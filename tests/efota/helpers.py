"""Builders the E-FOTA tests share: an E-FOTA-ready account built locally, licences the portal knows, and the
sandbox's E-FOTA world."""

from __future__ import annotations

from django.utils import timezone

from efota.models import EfotaLicence
from portal.models import KnoxAccount

CUSTOMER = "EEEE4444-FF55-AA66-BB77-CCCCCC888888"


LICENCE = "EFOTA1-fff555-ggg666-hh77"


TOO_LONG_GROUP = "é" * 25 + "a"  # 26 characters, 51 bytes in UTF-8


def ready_account(name: str = "Acme Mobile") -> KnoxAccount:
    """An account with everything E-FOTA needs; tests using it never let it call E-FOTA."""
    account = KnoxAccount(
        name=name,
        environment="sandbox",
        efota_client_id="efota-tests",
        efota_mdm_id="d1e2f3g4h5",
    )
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
