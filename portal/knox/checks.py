"""'Test connection': mint a token and make the cheapest read call of each service the account is set up for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from portal.knox import errors
from portal.knox.auth import authenticator_for
from portal.knox.hosts import SERVICE_LABELS
from portal.knox.http import KnoxSession

if TYPE_CHECKING:
    from portal.models import KnoxAccount


@dataclass
class ServiceCheck:
    service: str
    label: str
    ok: bool | None  # None: not configured, so not tried
    message: str
    code: str = ""


def _probe(session: KnoxSession, service: str) -> str:
    """One harmless read per service; returns a short description of what Knox said."""
    account = session.account
    if service == "kdp":
        doc = session.request("kdp", "GET", "/customers", idempotent=True).json_object()
        return f"{doc.get('totalCount', len(doc.get('customers') or []))} customer(s) visible"
    if service == "kdp_gen1":
        body = {"resellerId": account.reseller_id}
        if account.vendor_id:
            body["vendorId"] = account.vendor_id
        doc = session.request(
            "kdp_gen1", "POST", "/bulkenroll/v1/reseller/customers", json=body, idempotent=True
        ).json()
        customers = doc.get("customers", doc) if isinstance(doc, dict) else doc
        return f"{len(customers) if isinstance(customers, list) else 'some'} customer(s) visible"
    if service == "guard":
        doc = session.request("guard", "GET", "/authorization", idempotent=True).json_object()
        user = doc.get("user") or {}
        return f"authorised as {user.get('name') or user.get('email') or 'this tenant'}" + (
            f" ({user['companyName']})" if user.get("companyName") else ""
        )
    if service == "efota":
        authenticator_for(account, "efota").headers(session)  # mints (or reuses) the OAuth token
        return "token issued"
    raise ValueError(service)


def services_to_check(account: KnoxAccount) -> list[str]:
    return [account.kdp_service(), "guard", "efota"]


def check_connection(
    account: KnoxAccount, session: KnoxSession | None = None, *, progress: Callable[[ServiceCheck], None] | None = None
) -> list[ServiceCheck]:
    """Each service's check; `progress(check)` is called as soon as one is done (a job reports between them).

    Not a generator on purpose: Django's error reports hide the values of every frame called from a
    `@sensitive_variables` function by walking the frames' callers, and a suspended generator has none, so the
    frames under it (which hold the decrypted keys) would be shown."""
    session = session or KnoxSession(account)
    results = []
    for service in services_to_check(account):
        label = SERVICE_LABELS[service]
        missing = account.missing_credentials(service)
        if missing:
            check = ServiceCheck(service, label, None, "not set up: needs " + ", ".join(missing))
        else:
            # Start from a fresh token so the check proves the credentials, not a token cached earlier.
            authenticator_for(account, service).renew()
            try:
                check = ServiceCheck(service, label, True, _probe(session, service))
            except errors.KnoxError as e:
                check = ServiceCheck(service, label, False, str(e), e.code)
        results.append(check)
        if progress is not None:
            progress(check)
    return results
