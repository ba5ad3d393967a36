"""Knox E-FOTA legacy API: POST /b2bfota/v2/<operation>, XML in and out, Bearer tokens from /iam/auth/oauth/v2/token.

Bodies are parsed with defusedxml, refusing DTDs and entity declarations outright (an XML bomb or an external
entity is a malformed request, FUD_3022). Parameter errors are FUD_1001..1004 (knox-api.md section 5.5); the
processing codes FUD_3017..3022 carry the meanings chosen in sandbox/constants.py.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from sandbox import ids
from sandbox.auth import Principal, authenticate_efota
from sandbox.constants import (
    EFOTA_FUD_GROUP_OTHER_LICENSE,
    EFOTA_FUD_INVALID_REQUEST,
    EFOTA_FUD_LICENSE_EXPIRED,
    EFOTA_FUD_LICENSE_NOT_FOUND,
    EFOTA_FUD_LIMIT_EXCEEDED,
    EFOTA_FUD_NOT_FOUND,
    EFOTA_FUD_PARAM_CUSTOMER_ID,
    EFOTA_FUD_PARAM_GROUP_ID,
    EFOTA_FUD_PARAM_LICENSE,
    EFOTA_FUD_PARAM_MDM_ID,
    EFOTA_GROUP_LICENSE_CHANGE_ROOT,
    EFOTA_ID_MAX_BYTES,
    EFOTA_LATEST_FIRMWARE,
    EFOTA_LICENSE_MAX_BYTES,
    EFOTA_MAX_DEVICES_PER_CALL,
    EFOTA_NETWORK_TYPES,
)
from sandbox.wire import Request, Response, efota_error, xml_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from sandbox.store import Sandbox

PREFIX = "/b2bfota/v2/"


class Fud(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Call:
    """One parsed, authenticated b2bfota request."""

    def __init__(self, app: Sandbox, principal: Principal, root: ET.Element) -> None:
        self.app = app
        self.client = principal.efota_client or {}
        self.root = root

    def text(self, name: str) -> str | None:
        el = self.root.find(name)
        if el is None or el.text is None or not el.text.strip():
            return None
        return el.text.strip()

    def param(self, name: str, code: str, max_bytes: int) -> str:
        value = self.text(name)
        # Limits are in bytes of UTF-8, so a 17-character Korean name (51 bytes) is already too long.
        if value is None or len(value.encode("utf-8")) > max_bytes:
            raise Fud(code)
        return value

    def identity(self, *, group: bool = False) -> tuple[str, str, str | None, str]:
        """(mdmId, customerId, groupId, license), validated in the documented FUD_1001..1004 order."""
        mdm_id = self.param("mdmId", EFOTA_FUD_PARAM_MDM_ID, EFOTA_ID_MAX_BYTES)
        customer_id = self.param("customerId", EFOTA_FUD_PARAM_CUSTOMER_ID, EFOTA_ID_MAX_BYTES)
        group_id = self.param("groupId", EFOTA_FUD_PARAM_GROUP_ID, EFOTA_ID_MAX_BYTES).upper() if group else None
        license_key = self.param("license", EFOTA_FUD_PARAM_LICENSE, EFOTA_LICENSE_MAX_BYTES)
        # mdmId (and groupId) are case-insensitive: "lower case letters are treated as upper case letters".
        if mdm_id.upper() != self.client["mdmId"].upper() or customer_id != self.client["customerId"]:
            raise Fud(EFOTA_FUD_LICENSE_NOT_FOUND)
        return self.client["mdmId"], customer_id, group_id, license_key

    def active_license(self, license_key: str) -> dict[str, Any]:
        lic = self.app.state["efota"]["licenses"].get(license_key)
        if lic is None or lic["mdmId"] != self.client["mdmId"] or lic["customerId"] != self.client["customerId"]:
            raise Fud(EFOTA_FUD_LICENSE_NOT_FOUND)
        if date.fromisoformat(lic["expirationDate"]) < datetime.now(UTC).date():
            raise Fud(EFOTA_FUD_LICENSE_EXPIRED)
        return lic

    def serials(self, *, required: bool) -> list[str]:
        found = [((el.text or "").strip()) for el in self.root.findall("deviceList/serialNumber")]
        if required and not found:
            raise Fud(EFOTA_FUD_INVALID_REQUEST)
        if len(found) > EFOTA_MAX_DEVICES_PER_CALL:
            raise Fud(EFOTA_FUD_LIMIT_EXCEEDED)
        if not all(ids.is_valid_efota_serial(s) for s in found):
            raise Fud(EFOTA_FUD_INVALID_REQUEST)
        return [s.upper() for s in found]

    def required(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise Fud(EFOTA_FUD_INVALID_REQUEST)
        return value


def _element(root: ET.Element, name: str, text: Any) -> ET.Element:
    el = ET.SubElement(root, name)
    if text is not None:
        el.text = str(text)
    return el


def _catalogue(app: Sandbox, model: str, sales_code: str) -> list[str]:
    return list(app.state["efota"]["firmware"].get(f"{model}/{sales_code}", []))


# --- operations ----------------------------------------------------------------------------------------------------


def group_register(call: Call) -> Response:
    mdm_id, customer_id, group_id, license_key = call.identity(group=True)
    assert group_id is not None
    call.active_license(license_key)
    groups = call.app.state["efota"]["groups"]
    group = groups.get(group_id)
    if group is not None:
        if group["license"] != license_key:
            raise Fud(EFOTA_FUD_GROUP_OTHER_LICENSE)
        return Response(200, b"", None)
    groups[group_id] = {
        "groupId": group_id,
        "license": license_key,
        "mdmId": mdm_id,
        "customerId": customer_id,
        "registeredAt": int(time.time() * 1000),
    }
    call.app.mark_dirty()
    return Response(200, b"", None)


def group_license_change(call: Call) -> Response:
    mdm_id, customer_id, group_id, license_key = call.identity(group=True)
    assert group_id is not None
    call.active_license(license_key)
    groups = call.app.state["efota"]["groups"]
    group = groups.get(group_id)
    if group is None or group["mdmId"] != mdm_id or group["customerId"] != customer_id:
        raise Fud(EFOTA_FUD_NOT_FOUND)
    groups[group_id] = {**group, "license": license_key}
    call.app.mark_dirty()
    return Response(200, b"", None)


def license_info(call: Call) -> Response:
    mdm_id, customer_id, _, license_key = call.identity()
    lic = call.active_license(license_key)
    root = ET.Element("B2bLicenseInfoVO")
    _element(root, "mdmId", mdm_id)
    _element(root, "customerId", customer_id)
    _element(root, "license", license_key)
    _element(root, "maxDeviceCount", lic["maxDeviceCount"])
    _element(root, "expirationDate", lic["expirationDate"])
    return xml_response(root)


def firmware_list(call: Call) -> Response:
    _, _, _, license_key = call.identity()
    call.active_license(license_key)
    model = call.required("deviceModelName")
    sales_code = call.required("salesCode")
    current = call.text("currentFirmwareVersion")
    devices = call.app.state["efota"]["devices"].values()
    versions: list[str] = []
    # "Empty if no device is registered on the licence" (list-firmware-v2.htm).
    if any(d["license"] == license_key for d in devices):
        versions = _catalogue(call.app, model, sales_code)
        if current in versions:
            versions = versions[versions.index(current) + 1 :]
    root = ET.Element("B2bFirmwareInfoListVO")
    listing = _element(root, "firmwareList", None)
    for version in versions:
        item = _element(listing, "firmware", None)
        _element(item, "firmwareVersion", version)
    return xml_response(root)


def force_update(call: Call) -> Response:
    mdm_id, customer_id, _, license_key = call.identity()
    call.active_license(license_key)
    model = call.required("deviceModelName")
    sales_code = call.required("salesCode")
    network = call.required("networkType")
    target = call.required("targetFirmwareVersion")
    serials = call.serials(required=True)
    if network.upper() not in EFOTA_NETWORK_TYPES:
        raise Fud(EFOTA_FUD_INVALID_REQUEST)
    versions = _catalogue(call.app, model, sales_code)
    if not versions:
        raise Fud(EFOTA_FUD_INVALID_REQUEST)
    if target == EFOTA_LATEST_FIRMWARE:
        target = versions[-1]
    elif target not in versions:
        raise Fud(EFOTA_FUD_INVALID_REQUEST)
    registered = call.app.state["efota"]["devices"]
    outcome: dict[str, str] = {}
    for sn in serials:
        dev = registered.get(sn)
        if dev is None or dev["license"] != license_key:
            outcome[sn] = "Not Enrolled"
        elif dev["blocked"]:
            outcome[sn] = "Blocked, Insufficient License"
        elif dev["deviceModelName"] != model or dev["salesCode"] != sales_code:
            outcome[sn] = "Model Mismatch"
        else:
            outcome[sn] = ""
    now = time.time()
    force_id = uuid.uuid4().hex.upper()
    call.app.state["efota"]["forceUpdates"][force_id] = {
        "forceUpdateId": force_id,
        "license": license_key,
        "mdmId": mdm_id,
        "customerId": customer_id,
        "deviceModelName": model,
        "salesCode": sales_code,
        "networkType": network.upper(),
        "targetFirmwareVersion": target,
        "createdAt": now,
        "dueAt": now + call.app.config.process_delay,
        "devices": outcome,
    }
    call.app.mark_dirty()
    root = ET.Element("B2bForceUpdateVO")
    _element(root, "forceUpdateId", force_id)
    return xml_response(root)


def _force_record(call: Call) -> dict[str, Any]:
    _, _, _, license_key = call.identity()
    call.active_license(license_key)
    force_id = call.required("forceUpdateId")
    rec = call.app.state["efota"]["forceUpdates"].get(force_id)
    if rec is None or rec["license"] != license_key:
        raise Fud(EFOTA_FUD_NOT_FOUND)
    return rec


def _device_states(rec: dict[str, Any]) -> dict[str, str]:
    """serial -> DOWNLOADED / PROCESSING / FAILED; eligible devices download once the process delay is over."""
    done = time.time() >= rec["dueAt"]
    return {
        sn: ("FAILED" if reason else "DOWNLOADED" if done else "PROCESSING") for sn, reason in rec["devices"].items()
    }


def force_update_summary(call: Call) -> Response:
    rec = _force_record(call)
    states = list(_device_states(rec).values())
    root = ET.Element("B2bForceUpdateSummaryVO")
    _element(root, "forceUpdateId", rec["forceUpdateId"])
    _element(root, "downloaded", states.count("DOWNLOADED"))
    _element(root, "failed", states.count("FAILED"))
    _element(root, "processing", states.count("PROCESSING"))
    return xml_response(root)


def force_update_detail(call: Call) -> Response:
    rec = _force_record(call)
    root = ET.Element("B2bForceUpdateDetailVO")
    _element(root, "forceUpdateId", rec["forceUpdateId"])
    listing = _element(root, "deviceList", None)
    for sn, state in _device_states(rec).items():
        if state == "DOWNLOADED":
            continue
        item = _element(listing, "device", None)
        _element(item, "serialNumber", sn)
        _element(item, "status", state)
        if rec["devices"][sn]:
            _element(item, "reason", rec["devices"][sn])
    return xml_response(root)


def abnormal_device_list(call: Call) -> Response:
    _, _, _, license_key = call.identity()
    call.active_license(license_key)
    serials = call.serials(required=True)
    registered = call.app.state["efota"]["devices"]
    categories: dict[str, list[str]] = {}
    for sn in serials:
        dev = registered.get(sn)
        if dev is None or dev["license"] != license_key:
            categories.setdefault("Not Enrolled", []).append(sn)
        elif dev["blocked"]:
            categories.setdefault("Blocked, Insufficient License", []).append(sn)
    root = ET.Element("B2bAbnormalDeviceListVO")
    listing = _element(root, "abnormalCategoryList", None)
    for title, members in categories.items():
        item = _element(listing, "abnormalCategoryItem", None)
        _element(item, "abnormalCategoryTitle", title)
        devices = _element(item, "abnormalDeviceList", None)
        for sn in members:
            _element(devices, "serialNumber", sn)
    return xml_response(root)


OPERATIONS: dict[str, tuple[str, Callable[[Call], Response]]] = {
    "groupRegister": ("B2bGroupRegisterVO", group_register),
    "groupLicenseChange": (EFOTA_GROUP_LICENSE_CHANGE_ROOT, group_license_change),
    "licenseInfo": ("B2bLicenseInfoVO", license_info),
    "firmwareList": ("B2bFirmwareInfoListVO", firmware_list),
    "forceUpdate": ("B2bForceUpdateVO", force_update),
    "forceUpdateSummary": ("B2bForceUpdateSummaryVO", force_update_summary),
    "forceUpdateDetail": ("B2bForceUpdateDetailVO", force_update_detail),
    "abnormalDeviceList": ("B2bAbnormalDeviceListVO", abnormal_device_list),
}


def _operation(name: str) -> Callable[[Sandbox, Request], Response]:
    root_name, fn = OPERATIONS[name]

    def handler(app: Sandbox, req: Request) -> Response:
        principal = authenticate_efota(app, req)
        if isinstance(principal, Response):
            return principal
        content_type = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/xml":
            return efota_error(EFOTA_FUD_INVALID_REQUEST)
        try:
            root = fromstring(req.body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except (DefusedXmlException, ET.ParseError, ValueError):
            return efota_error(EFOTA_FUD_INVALID_REQUEST)
        if root.tag != root_name:
            return efota_error(EFOTA_FUD_INVALID_REQUEST)
        try:
            with app.lock:
                return fn(Call(app, principal, root))
        except Fud as exc:
            return efota_error(exc.code)

    handler.__name__ = f"efota_{name}"
    return handler


ROUTES: dict[tuple[str, str], Callable[[Sandbox, Request], Response]] = {
    ("POST", PREFIX + name): _operation(name) for name in OPERATIONS
}
