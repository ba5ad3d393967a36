"""KDP API calls for Gen2 (`/kcs/v1/rp`) and Gen1 (`/bulkenroll/v1/reseller`), on portal.knox's HTTP layer.

Payload builders and answer parsers are plain functions so their shapes can be tested per generation
(knox-api.md §3). `KdpClient` picks the generation from the account: Samsung never lets one account mix them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdp.constants import (
    KDP_DEVICE_TYPE_IMEI,
    KDP_LIST_IMEI_KEYS,
    KDP_PAGE_SIZE,
    KDP_PROFILE_ALIAS_HEADERS,
    KDP_PROFILE_ALIAS_NAME_KEY,
    KDP_PROFILE_ALIAS_SERVICE_KEY,
    KDP_TARGET_SERVICE_KME,
    KDP_TERMINAL_STATES,
)
from portal.knox import errors
from portal.knox.http import KnoxSession

if TYPE_CHECKING:
    from portal.models import KnoxAccount

GEN1_PREFIX = "/bulkenroll/v1/reseller"


# --- request bodies -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """One chunk to send: everything the request body needs, independent of the generation."""

    transaction_id: str
    operation: str  # "upload" | "delete"
    reseller_id: str
    customer_id: str
    device_type: str  # KDP_DEVICE_TYPE_IMEI | KDP_DEVICE_TYPE_SERIAL
    devices: Sequence[str]
    vendor_id: str = ""
    order_no: str = ""
    order_time: int | None = None  # epoch seconds (knox-api.md §3.2)
    profile_alias: str = ""


def gen2_body(s: Submission) -> dict[str, Any]:
    """V2 body (seed 001): flat `devices`, top-level `type`, operation given by the path."""
    body: dict[str, Any] = {
        "transactionId": s.transaction_id,
        "resellerId": s.reseller_id,
        "customerId": s.customer_id,
        "type": s.device_type,
        "devices": list(s.devices),
    }
    if s.vendor_id:
        body["vendorId"] = s.vendor_id
    if s.operation == "upload":
        if s.order_no:
            body["orderNo"] = s.order_no
        if s.order_time is not None:
            body["orderTime"] = s.order_time
        if s.profile_alias:
            # Seed 002: targetService plus ProfileAliasObjects so KME assigns the profile at registration.
            body["targetService"] = KDP_TARGET_SERVICE_KME
            body["profileAliases"] = [
                {KDP_PROFILE_ALIAS_SERVICE_KEY: KDP_TARGET_SERVICE_KME, KDP_PROFILE_ALIAS_NAME_KEY: s.profile_alias}
            ]
    return body


def gen1_body(s: Submission) -> dict[str, Any]:
    """V1 body (seed 001): `transactionType` New/Delete and `devices: {type, list}`; two-tier adds vendorId."""
    body: dict[str, Any] = {
        "transactionId": s.transaction_id,
        "resellerId": s.reseller_id,
        "customerId": s.customer_id,
        "transactionType": "New" if s.operation == "upload" else "Delete",
        "devices": {"type": s.device_type, "list": list(s.devices)},
    }
    if s.vendor_id:
        body["vendorId"] = s.vendor_id
    if s.operation == "upload" and s.order_no:
        body["orderNo"] = s.order_no
    return body


# --- answers ------------------------------------------------------------------------------------------------


@dataclass
class DeviceFailure:
    code: str
    message: str
    data: str = ""


@dataclass
class TransactionStatus:
    """What Knox says about one transaction. `failures` maps device id → failure; with `lists_all` (V1) every
    device appears and the absent ones are unknown, otherwise (V2) absent devices succeeded."""

    transaction_id: str
    state: str
    failures: dict[str, DeviceFailure] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)
    lists_all: bool = False
    found: bool = True

    @property
    def is_terminal(self) -> bool:
        return self.state in KDP_TERMINAL_STATES


def _device_id(entry: dict[str, Any]) -> str:
    for key in ("imei", "serialNumber", "serial", "meid", "mei"):
        if entry.get(key):
            return str(entry[key])
    return ""


def parse_status(doc: Any, transaction_id: str) -> TransactionStatus:
    """Parse the V1, V2-wrapped and V2-flat status shapes (knox-api.md §3.4 DECISION)."""
    if not isinstance(doc, dict):
        raise errors.KnoxBadResponse("Knox's transaction status is not a JSON object", service="kdp")
    lists_all = False
    if isinstance(doc.get("devices"), dict):  # V2 wrapped
        transactions = doc["devices"].get("transactions") or []
    elif "transactions" in doc:  # V1: every device listed
        transactions = doc.get("transactions") or []
        lists_all = True
    elif "state" in doc:  # V2 flat
        transactions = [doc]
    else:
        raise errors.KnoxBadResponse("Knox's transaction status has no transactions", service="kdp")
    match = next(
        (t for t in transactions if isinstance(t, dict) and str(t.get("transactionId")) == transaction_id), None
    )
    if match is None:
        match = transactions[0] if len(transactions) == 1 and isinstance(transactions[0], dict) else None
    if match is None:
        return TransactionStatus(transaction_id, state="", found=False, lists_all=lists_all)
    status = TransactionStatus(transaction_id, state=str(match.get("state") or ""), lists_all=lists_all)
    for entry in match.get("devices") or []:
        if not isinstance(entry, dict):
            continue
        device = _device_id(entry)
        if not device:
            continue
        status.listed.add(device)
        if entry.get("code") not in (None, "", 0, "0"):
            status.failures[device] = DeviceFailure(
                code=str(entry.get("code")), message=str(entry.get("message") or ""), data=str(entry.get("data") or "")
            )
    return status


@dataclass
class CustomerInfo:
    customer_id: str
    name: str
    status: str = ""


@dataclass
class ListedDevice:
    identifier: str
    imei: str = ""
    serial_number: str = ""
    meid: str = ""
    customer_id: str = ""
    model: str = ""
    state: str = ""


def parse_device(entry: dict[str, Any]) -> ListedDevice:
    imei = next((str(entry[k]) for k in KDP_LIST_IMEI_KEYS if entry.get(k)), "")
    serial = str(entry.get("serialNumber") or "")
    return ListedDevice(
        identifier=imei or serial or str(entry.get("meid") or ""),
        imei=imei,
        serial_number=serial,
        meid=str(entry.get("meid") or ""),
        customer_id=str(entry.get("customerId") or ""),
        model=str(entry.get("model") or ""),
        state=str(entry.get("state") or ""),
    )


# --- the client ---------------------------------------------------------------------------------------------


class KdpClient:
    def __init__(self, account: KnoxAccount, session: KnoxSession | None = None) -> None:
        self.account = account
        self.session = session or KnoxSession(account)
        self.gen1 = account.kdp_generation == account.Generation.GEN1
        self.service = account.kdp_service()

    def submit(self, s: Submission) -> None:
        """Send one upload/delete chunk. Safe to repeat: Knox keys the transaction on our transactionId."""
        if self.gen1:
            path = f"{GEN1_PREFIX}/devices" if s.operation == "upload" else f"{GEN1_PREFIX}/devices/delete"
            body = gen1_body(s)
        else:
            path = "/devices/upload" if s.operation == "upload" else "/devices/delete"
            body = gen2_body(s)
        self.session.request(self.service, "PUT", path, json=body, idempotent=True, transaction_id=s.transaction_id)

    def status(self, transaction_id: str) -> TransactionStatus:
        params = {"transactionId": transaction_id}
        if self.gen1:
            params["resellerId"] = self.account.reseller_id
            if self.account.vendor_id:
                params["vendorId"] = self.account.vendor_id
            path = f"{GEN1_PREFIX}/devices/status"
        else:
            path = "/devices/status"
        doc = self.session.request(self.service, "GET", path, params=params, idempotent=True).json()
        return parse_status(doc, transaction_id)

    def customers(self) -> list[CustomerInfo]:
        if self.gen1:
            body: dict[str, Any] = {"resellerId": self.account.reseller_id}
            if self.account.vendor_id:
                body["vendorId"] = self.account.vendor_id
            doc = self.session.request(
                self.service, "POST", f"{GEN1_PREFIX}/customers", json=body, idempotent=True
            ).json()
            items = doc.get("customers", []) if isinstance(doc, dict) else doc
            return [_customer(c) for c in items or [] if isinstance(c, dict)]
        found: list[CustomerInfo] = []
        page = 0
        while True:
            doc = self.session.request(
                self.service, "GET", "/customers", params={"pageNum": page, "pageSize": KDP_PAGE_SIZE}, idempotent=True
            ).json_object()
            items = [c for c in doc.get("customers") or [] if isinstance(c, dict)]
            found.extend(_customer(c) for c in items)
            total = int(doc.get("totalCount") or 0)
            if len(items) < KDP_PAGE_SIZE or len(found) >= total:
                return found
            page += 1

    def profile_aliases(self, customer_id: str) -> list[tuple[str, str]]:
        """(alias name, profileId) pairs of a customer's KME profiles. Gen1 has no such call (seed 000)."""
        if self.gen1:
            return []
        reseller_header, customer_header = KDP_PROFILE_ALIAS_HEADERS
        headers = {reseller_header: self.account.reseller_id, customer_header: customer_id}
        doc = self.session.request(self.service, "GET", "/profilealias/kme", headers=headers, idempotent=True).json()
        items = (
            doc
            if isinstance(doc, list)
            else (doc.get("profileAliases") or doc.get("aliases") or [])
            if isinstance(doc, dict)
            else []
        )
        pairs = []
        for item in items:
            if isinstance(item, dict) and item.get(KDP_PROFILE_ALIAS_NAME_KEY):
                pairs.append((str(item[KDP_PROFILE_ALIAS_NAME_KEY]), str(item.get("profileId") or "")))
            elif isinstance(item, str):
                pairs.append((item, ""))
        return pairs

    def iter_devices(self, customer_id: str = "") -> Iterator[ListedDevice]:
        """Every device registered to this reseller (optionally one customer), page by page."""
        page = 0
        while True:
            params: dict[str, Any] = {"pageNum": page, "pageSize": KDP_PAGE_SIZE}
            if self.gen1:
                params["resellerId"] = self.account.reseller_id
                path = f"{GEN1_PREFIX}/devices"
            else:
                path = "/devices"
                if customer_id:
                    params["customerId"] = customer_id
            doc = self.session.request(self.service, "GET", path, params=params, idempotent=True).json_object()
            items = [d for d in doc.get("devices") or [] if isinstance(d, dict)]
            for entry in items:
                device = parse_device(entry)
                if device.identifier:
                    yield device
            pages = doc.get("totalPages", doc.get("totalPage"))
            if not items or len(items) < KDP_PAGE_SIZE or (pages is not None and page + 1 >= int(pages)):
                return
            page += 1


def _customer(c: dict[str, Any]) -> CustomerInfo:
    return CustomerInfo(
        customer_id=str(c.get("customerId") or c.get("id") or ""),
        name=str(c.get("customerName") or c.get("name") or ""),
        status=str(c.get("status") or ""),
    )


def device_type_for(kind: str) -> str:
    from kdp.constants import KDP_DEVICE_TYPE_SERIAL

    return KDP_DEVICE_TYPE_IMEI if kind == "imei" else KDP_DEVICE_TYPE_SERIAL
