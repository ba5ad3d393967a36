"""Knox E-FOTA legacy API (b2bfota v2, XML; knox-api.md §5) on portal.knox's HTTP layer.

XML is built with ElementTree (user input is escaped by the library, never concatenated into markup) and
answers are parsed with defusedxml, which refuses entity expansion and external references. Field rules are
checked before any call, in UTF-8 bytes as Knox counts them, and mdmId/groupId are upper-cased as Knox treats
them. Errors come back as `<error><code>FUD_xxxx</code>`: parameter errors (FUD_1xxx) are shown as validation
errors, processing errors (FUD_3xxx) fail the request, service errors (FUD_9xxx) are retried with back-off.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from efota.constants import (
    EFOTA_FIRMWARE_VERSION_MAX_LENGTH,
    EFOTA_GROUP_LICENSE_CHANGE_ROOT,
    EFOTA_ID_MAX_BYTES,
    EFOTA_LATEST_FIRMWARE,
    EFOTA_LICENSE_MAX_BYTES,
    EFOTA_MAX_DEVICES_PER_CALL,
    EFOTA_MODEL_MAX_LENGTH,
    EFOTA_NETWORK_TYPES,
    EFOTA_SALES_CODE_MAX_LENGTH,
    EFOTA_SERIAL_LENGTH,
    FUD_SENTENCES,
)
from portal.knox import errors
from portal.knox.http import KnoxSession, backoff_delay

if TYPE_CHECKING:
    from portal.models import KnoxAccount

PATH = "/b2bfota/v2/"
SERVICE_RETRIES = 3
SERIAL_RE = re.compile(rf"^[A-Z0-9]{{{EFOTA_SERIAL_LENGTH}}}$")


class EfotaValidationError(ValueError):
    def __init__(self, errors_by_field: dict[str, str]) -> None:
        super().__init__("; ".join(errors_by_field.values()))
        self.errors = errors_by_field


# What the sentences call each identifier. The keys are the field names of EfotaValidationError.errors, Knox's own
# names (so "license"); the words are the portal's, which says "licence" as the pages do.
ID_LABELS = {"mdm_id": "mdmId", "customer_id": "customer ID", "group_id": "group ID", "license": "licence"}


def _bytes_rule(problems: dict[str, str], name: str, value: str, limit: int) -> None:
    label = ID_LABELS[name]
    size = len(value.encode("utf-8"))
    if not value.strip():
        problems[name] = f"The {label} is required."
    elif size > limit:
        problems[name] = (
            f"The {label} is {size} bytes in UTF-8; E-FOTA allows {limit} bytes (accented letters count twice)."
        )


@dataclass(frozen=True)
class Ids:
    """The identifiers every call carries."""

    mdm_id: str
    customer_id: str
    license: str = ""

    def normalised(self) -> Ids:
        # "All lower case letters are treated as upper case letters" (seed 004): send them upper-cased.
        return Ids(self.mdm_id.strip().upper(), self.customer_id.strip(), self.license.strip())


def check_ids(ids: Ids, *, group_id: str | None = None, need_license: bool = True) -> None:
    problems: dict[str, str] = {}
    _bytes_rule(problems, "mdm_id", ids.mdm_id, EFOTA_ID_MAX_BYTES)
    _bytes_rule(problems, "customer_id", ids.customer_id, EFOTA_ID_MAX_BYTES)
    if group_id is not None:
        _bytes_rule(problems, "group_id", group_id, EFOTA_ID_MAX_BYTES)
    if need_license:
        _bytes_rule(problems, "license", ids.license, EFOTA_LICENSE_MAX_BYTES)
    if problems:
        raise EfotaValidationError(problems)


@dataclass(frozen=True)
class DeviceField:
    """One of the device fields firmwareList and forceUpdate carry, as the portal limits it (efota.constants)."""

    label: str
    max_length: int
    required: bool
    example: str = ""


# Keyed by the name the forms, queue_force_update and the lookups' params use.
DEVICE_FIELDS = {
    "model": DeviceField("device model name", EFOTA_MODEL_MAX_LENGTH, required=True, example="SM-G991B"),
    "sales_code": DeviceField("sales code", EFOTA_SALES_CODE_MAX_LENGTH, required=True, example="BTU"),
    "target": DeviceField("target firmware version", EFOTA_FIRMWARE_VERSION_MAX_LENGTH, required=False),
    "current": DeviceField("current firmware version", EFOTA_FIRMWARE_VERSION_MAX_LENGTH, required=False),
}


def check_device_fields(**values: str) -> None:
    """Check a device model, sales code and firmware version (given by their DEVICE_FIELDS names) against the
    portal's limits; raise with every problem named. The one check of those limits: the forms, queue_force_update
    and the client's calls all use it, so a page, a queued job and a call can never disagree."""
    problems: dict[str, str] = {}
    for name, value in values.items():
        rule = DEVICE_FIELDS[name]
        if rule.required and not value.strip():
            example = f" (e.g. {rule.example})" if rule.example else ""
            problems[name] = f"The {rule.label} is required{example}."
        elif len(value.strip()) > rule.max_length:
            problems[name] = f"The {rule.label} is longer than {rule.max_length} characters."
    if problems:
        raise EfotaValidationError(problems)


def clean_serials(serials: Sequence[str]) -> list[str]:
    """Upper-case and check serial numbers; raise with every bad one named."""
    out, bad = [], []
    for raw in serials:
        s = "".join(raw.split()).upper()
        if not s:
            continue
        (out if SERIAL_RE.match(s) else bad).append(s)
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise EfotaValidationError({"serials": f"Not {EFOTA_SERIAL_LENGTH}-character serial numbers: {shown}."})
    if not out:
        raise EfotaValidationError({"serials": "Give at least one serial number."})
    return list(dict.fromkeys(out))


def build(root: str, fields: dict[str, Any]) -> bytes:
    """One XML root element with children; lists become <deviceList><serialNumber>…</serialNumber>…."""
    el = ET.Element(root)
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, list):
            container = ET.SubElement(el, name)
            for item in value:
                ET.SubElement(container, "serialNumber").text = str(item)
        else:
            ET.SubElement(el, name).text = str(value)
    return ET.tostring(el, encoding="utf-8")


def parse(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return SafeET.fromstring(body)
    except (SafeET.ParseError, DefusedXmlException, ValueError):
        raise errors.KnoxBadResponse("E-FOTA answered with XML that cannot be read safely", service="efota") from None


@dataclass
class LicenseInfo:
    license: str
    max_devices: int | None
    expiration_date: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class ForceUpdateSummary:
    force_update_id: str
    downloaded: int
    failed: int
    processing: int


class EfotaClient:
    service = "efota"

    def __init__(self, account: KnoxAccount, session: KnoxSession | None = None, *, sleep: Any = time.sleep) -> None:
        self.account = account
        self.session = session or KnoxSession(account)
        self.sleep = sleep

    def ids(self, customer_id: str, license: str = "") -> Ids:
        return Ids(self.account.efota_mdm_id, customer_id, license).normalised()

    def _call(self, operation: str, root: str, fields: dict[str, Any], *, idempotent: bool) -> Any:
        body = build(root, fields)
        attempt = 0
        while True:
            try:
                r = self.session.request(
                    self.service,
                    "POST",
                    PATH + operation,
                    data=body,
                    idempotent=idempotent,
                    headers={"Content-Type": "application/xml", "Accept": "application/xml"},
                )
                # The HTTP layer has already read an XML answer safely (decode_body); parse only what it left alone.
                return r.decoded if isinstance(r.decoded, ET.Element) else parse(r.body)
            except errors.KnoxError as e:
                # knox-api.md §5.5 DECISION: FUD_9xxx are service errors, retried with back-off (when safe).
                if e.code.startswith("FUD_9") and idempotent and attempt < SERVICE_RETRIES:
                    attempt += 1
                    self.sleep(backoff_delay(attempt))
                    continue
                raise

    def group_register(self, customer_id: str, group_id: str, license: str) -> None:
        ids = self.ids(customer_id, license)
        group = group_id.strip().upper()
        check_ids(ids, group_id=group)
        # Registering the same group to the same licence again answers 200, so a repeat is harmless.
        self._call("groupRegister", "B2bGroupRegisterVO", _fields(ids, groupId=group), idempotent=True)

    def group_license_change(self, customer_id: str, group_id: str, new_license: str) -> None:
        ids = self.ids(customer_id, new_license)
        group = group_id.strip().upper()
        check_ids(ids, group_id=group)
        self._call("groupLicenseChange", EFOTA_GROUP_LICENSE_CHANGE_ROOT, _fields(ids, groupId=group), idempotent=True)

    def license_info(self, customer_id: str, license: str) -> LicenseInfo:
        ids = self.ids(customer_id, license)
        check_ids(ids)
        root = self._call("licenseInfo", "B2bLicenseInfoVO", _fields(ids), idempotent=True)
        if root is None:
            raise errors.KnoxBadResponse("E-FOTA's licence answer is empty", service="efota")
        values = {child.tag: (child.text or "").strip() for child in root}
        max_devices = values.get("maxDeviceCount", "")
        return LicenseInfo(
            license=values.get("license", ids.license),
            max_devices=int(max_devices) if max_devices.isdigit() else None,
            expiration_date=values.get("expirationDate", ""),
            extra={
                k: v
                for k, v in values.items()
                if k not in ("license", "maxDeviceCount", "expirationDate", "mdmId", "customerId")
            },
        )

    def firmware_list(
        self, customer_id: str, license: str, model: str, sales_code: str, current: str = ""
    ) -> list[str]:
        ids = self.ids(customer_id, license)
        check_ids(ids)
        check_device_fields(model=model, sales_code=sales_code, current=current)
        fields = _fields(ids, deviceModelName=model.strip().upper(), salesCode=sales_code.strip().upper())
        if current.strip():
            fields["currentFirmwareVersion"] = current.strip()
        root = self._call("firmwareList", "B2bFirmwareInfoListVO", fields, idempotent=True)
        return [(el.text or "").strip() for el in root.iter("firmwareVersion")] if root is not None else []

    def force_update(
        self,
        customer_id: str,
        license: str,
        model: str,
        sales_code: str,
        serials: Sequence[str],
        *,
        network_type: str = "WIFIONLY",
        target: str = EFOTA_LATEST_FIRMWARE,
    ) -> str:
        """Start a forced update of at most EFOTA_MAX_DEVICES_PER_CALL devices; returns the forceUpdateId.
        Not idempotent (each call starts a new update), so it is never retried after it may have arrived."""
        ids = self.ids(customer_id, license)
        check_ids(ids)
        check_device_fields(model=model, sales_code=sales_code, target=target)
        devices = clean_serials(serials)
        if len(devices) > EFOTA_MAX_DEVICES_PER_CALL:
            raise EfotaValidationError(
                {"serials": f"At most {EFOTA_MAX_DEVICES_PER_CALL} devices per force update call."}
            )
        if network_type not in EFOTA_NETWORK_TYPES:
            raise EfotaValidationError(
                {"network_type": f"The network type must be one of {', '.join(EFOTA_NETWORK_TYPES)}."}
            )
        fields = _fields(
            ids,
            deviceModelName=model.strip().upper(),
            salesCode=sales_code.strip().upper(),
            networkType=network_type,
            targetFirmwareVersion=target.strip() or EFOTA_LATEST_FIRMWARE,
            deviceList=devices,
        )
        root = self._call("forceUpdate", "B2bForceUpdateVO", fields, idempotent=False)
        force_id = (root.findtext("forceUpdateId") or "").strip() if root is not None else ""
        if not force_id:
            raise errors.KnoxBadResponse("E-FOTA's force update answer has no forceUpdateId", service="efota")
        return force_id

    def force_update_summary(self, customer_id: str, license: str, force_update_id: str) -> ForceUpdateSummary:
        ids = self.ids(customer_id, license)
        root = self._call(
            "forceUpdateSummary",
            "B2bForceUpdateSummaryVO",
            _fields(ids, forceUpdateId=force_update_id),
            idempotent=True,
        )

        def number(tag: str) -> int:
            text = (root.findtext(tag) or "0").strip() if root is not None else "0"
            return int(text) if text.isdigit() else 0

        return ForceUpdateSummary(force_update_id, number("downloaded"), number("failed"), number("processing"))

    def force_update_detail(self, customer_id: str, license: str, force_update_id: str) -> list[tuple[str, str, str]]:
        ids = self.ids(customer_id, license)
        root = self._call(
            "forceUpdateDetail", "B2bForceUpdateDetailVO", _fields(ids, forceUpdateId=force_update_id), idempotent=True
        )
        if root is None:
            return []
        return [
            (
                (d.findtext("serialNumber") or "").strip(),
                (d.findtext("status") or "").strip(),
                (d.findtext("reason") or "").strip(),
            )
            for d in root.iter("device")
        ]

    def abnormal_devices(self, customer_id: str, license: str, serials: Sequence[str]) -> dict[str, list[str]]:
        """{category title: [serial, …]} for the given devices, asked in calls of at most 100."""
        ids = self.ids(customer_id, license)
        check_ids(ids)
        found: dict[str, list[str]] = {}
        for part in chunks(clean_serials(serials), EFOTA_MAX_DEVICES_PER_CALL):
            root = self._call(
                "abnormalDeviceList", "B2bAbnormalDeviceListVO", _fields(ids, deviceList=part), idempotent=True
            )
            for item in root.iter("abnormalCategoryItem") if root is not None else []:
                title = (item.findtext("abnormalCategoryTitle") or "").strip()
                found.setdefault(title, []).extend((s.text or "").strip() for s in item.iter("serialNumber"))
        return found


def _fields(ids: Ids, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"mdmId": ids.mdm_id, "customerId": ids.customer_id}
    if "groupId" in extra:
        fields["groupId"] = extra.pop("groupId")
    if ids.license:
        fields["license"] = ids.license
    fields.update(extra)
    return fields


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def explain(e: errors.KnoxError) -> str:
    """A sentence for an E-FOTA error: the FUD table, else the shared Knox explanations; unknown FUD codes are
    shown verbatim with the resource that raised them."""
    if e.code in FUD_SENTENCES:
        return FUD_SENTENCES[e.code]
    if e.code.startswith("FUD_"):
        return f"E-FOTA answered {e.code}" + (f" from {e.detail}" if e.detail else "") + "."
    return e.explain()


def failure_of(e: Exception) -> dict[str, str]:
    """What a page shows for a refused call (kept in a lookup's result): the sentence, the FUD code and its
    category. A refusal of the client's own field rules has no code."""
    if isinstance(e, errors.KnoxError):
        return {"message": explain(e), "code": e.code, "category": fud_category(e.code) if e.code else ""}
    if isinstance(e, EfotaValidationError):
        return {"message": " ".join(e.errors.values()), "code": "", "category": ""}
    raise TypeError(f"not an E-FOTA refusal: {type(e).__name__}")


def fud_category(code: str) -> str:
    """parameter / processing / service / other (knox-api.md §5.5)."""
    if code.startswith("FUD_1"):
        return "parameter"
    if code.startswith("FUD_3"):
        return "processing"
    if code.startswith("FUD_9"):
        return "service"
    return "other"
