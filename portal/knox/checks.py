"""'Test connection': mint a token and make the cheapest read call of each service the account is set up for."""

from __future__ import annotations

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


def check_connection(account: KnoxAccount, session: KnoxSession | None = None) -> list[ServiceCheck]:
    session = session or KnoxSession(account)
    kdp = account.kdp_service()
    results = []
    for service in (kdp, "guard", "efota"):
        label = SERVICE_LABELS[service]
        missing = account.missing_credentials(service)
        if missing:
            results.append(ServiceCheck(service, label, None, "not set up: needs " + ", ".join(missing)))
            continue
        # Start from a fresh token so the check proves the credentials, not a token cached earlier.
        authenticator_for(account, service).renew()
        try:
            results.append(ServiceCheck(service, label, True, _probe(session, service)))
        except errors.KnoxError as e:
            results.append(ServiceCheck(service, label, False, str(e), e.code))
    return results
