"""Knox Guard v1.1 (/kcs/v1.1/kg): authorization, uploads, device actions and their *Async twins, transactions.

Device state machine (seed 003; the transitional states settle after the process delay):

    Pending --approve--> Accepted ~~> Enrolled          Pending --reject--> Rejected
    Enrolled --lock--> Locking ~~> Locked               Locked/Enrolled --unlock--> Unlocking ~~> Enrolled
    Enrolled --blink--> StartingReminder ~~> Blinked    Blinked --unlock--> StoppingReminder ~~> Enrolled
    Enrolled|Locked|Blinked --complete--> Completing ~~> Completed
    Rejected|Completed --delete--> (gone)               Enrolled|Locked|Blinked --sendMessage--> (unchanged)

Anything else is 4000310 DEVICE_STATE_INVALID; an unknown device is 404 / 4040300 DEVICE_NOT_FOUND.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from sandbox import ids
from sandbox.auth import authenticate_kg
from sandbox.constants import (
    KG_APPROVE_COMMENT_MAX_LENGTH,
    KG_APPROVE_ID_MAX_LENGTH,
    KG_ASYNC_MAX_DEVICES,
    KG_BLINK_INTERVAL_MAX,
    KG_BLINK_INTERVAL_MIN,
    KG_BLINKABLE_STATES,
    KG_BULK_LIMIT_EXCEEDED,
    KG_COMPLETABLE_STATES,
    KG_CONTACT_REQUIRED,
    KG_DELETABLE_STATES,
    KG_DEVICE_NOT_FOUND,
    KG_DEVICE_STATE_INVALID,
    KG_INVALID_PARAM,
    KG_LOCKABLE_STATES,
    KG_MAX_PAGE_SIZE,
    KG_MESSAGE_MAX_LENGTH,
    KG_MESSAGE_STATES,
    KG_SETTLES_TO,
    KG_TRANSACTION_ID_MAX_LENGTH,
    KG_TRANSACTION_RESULTS_FAILED_ONLY,
    KG_UNKNOWN_TRANSACTION,
    KG_UNKNOWN_UPLOAD,
    KG_UPLOAD_MAX_DEVICES,
    KG_UPLOAD_STATUS_COMPLETE,
    KG_UPLOAD_STATUS_PROGRESS,
)
from sandbox.wire import BadJson, Request, Response, json_response, kg_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from sandbox.store import Sandbox

PREFIX = "/kcs/v1.1/kg"
_TX_ID_RE = re.compile(r"[A-Za-z0-9]+")
ACTIONS = ("approve", "reject", "lock", "unlock", "blink", "sendMessage", "complete", "delete")


class KgError(Exception):
    def __init__(self, pair: tuple[int, str], reason: str, requested_id: str | None = None) -> None:
        super().__init__(reason)
        self.pair = pair
        self.reason = reason
        self.requested_id = requested_id

    def response(self) -> Response:
        return kg_error(self.pair, self.reason)


def _invalid(reason: str, requested_id: str | None = None) -> KgError:
    return KgError(KG_INVALID_PARAM, reason, requested_id)


def _body(req: Request) -> dict[str, Any]:
    try:
        body = req.json()
    except BadJson as exc:
        raise _invalid(str(exc)) from None
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object")
    return body


def _common(app: Sandbox, req: Request) -> Response | None:
    """Authentication (with the rate limit) and the x-knox-transactionId format, for every KG call."""
    principal = authenticate_kg(app, req)
    if isinstance(principal, Response):
        return principal
    tx = req.header("x-knox-transactionId")
    if tx is not None and (len(tx) > KG_TRANSACTION_ID_MAX_LENGTH or not _TX_ID_RE.fullmatch(tx)):
        return kg_error(
            KG_INVALID_PARAM, f"x-knox-transactionId must be 1-{KG_TRANSACTION_ID_MAX_LENGTH} letters or digits"
        )
    return None


def _put(app: Sandbox, dev: dict[str, Any]) -> None:
    """Store a (new) device record and keep the objectId/approveId indexes and the timers in step."""
    devices = app.state["guard"]["devices"]
    old = devices.get(dev["deviceUid"])
    if old is not None and old.get("approveId") and old["approveId"] != dev.get("approveId"):
        app.guard_by_approve.pop(old["approveId"], None)
    devices[dev["deviceUid"]] = dev
    app.guard_by_object[dev["objectId"]] = dev["deviceUid"]
    if dev.get("approveId"):
        app.guard_by_approve[dev["approveId"]] = dev["deviceUid"]
    if dev.get("dueAt") is not None:
        heapq.heappush(app.guard_timers, (dev["dueAt"], dev["deviceUid"]))
    app.mark_dirty()


def _transition(app: Sandbox, dev: dict[str, Any], state: str, **changes: Any) -> dict[str, Any]:
    due = time.time() + app.config.process_delay if state in KG_SETTLES_TO else None
    new = {**dev, **changes, "state": state, "dueAt": due}
    _put(app, new)
    return new


def settle_due(app: Sandbox, now: float) -> None:
    """Move devices out of transitional states once the process delay is over. Called with the lock held."""
    timers = app.guard_timers
    devices = app.state["guard"]["devices"]
    while timers and timers[0][0] <= now:
        due, uid = heapq.heappop(timers)
        dev = devices.get(uid)
        # A timer is stale when the device moved on (or was deleted) after it was set.
        if dev is None or dev.get("dueAt") != due or dev["state"] not in KG_SETTLES_TO:
            continue
        devices[uid] = {**dev, "state": KG_SETTLES_TO[dev["state"]], "dueAt": None}
        app.mark_dirty()


# --- one device action ---------------------------------------------------------------------------------------------


def _identify(app: Sandbox, action: str, body: dict[str, Any]) -> tuple[str, str | None]:
    """(requestedId, deviceUid or None) following the precedence objectId > deviceUid > approveId."""
    names = ("deviceUid",) if action == "approve" else ("objectId", "deviceUid", "approveId")
    for name in names:
        value = body.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise _invalid(f"{name} must be a string")
        if name == "objectId":
            return value, app.guard_by_object.get(value)
        if name == "approveId":
            return value, app.guard_by_approve.get(value)
        return value, value if value in app.state["guard"]["devices"] else None
    if action == "approve":
        raise _invalid("deviceUid is required")
    raise _invalid("one of objectId, deviceUid or approveId is required")


def _text(body: dict[str, Any], name: str, limit: int, *, required: bool, rid: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise _invalid(f"{name} is required", rid)
        return None
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string", rid)
    if len(value) > limit:
        raise _invalid(f"{name} is limited to {limit} characters", rid)
    return value


def _flag(body: dict[str, Any], name: str, rid: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(f"{name} must be a boolean", rid)
    return value


def _contact(body: dict[str, Any], rid: str, *, required: bool = False) -> dict[str, str | None]:
    """The phone number and email shown with a message. Seed 003 requires one of them for blink only; lock and
    sendMessage take them optionally (a public C# client sends sendMessage without: knox-api.md §7)."""
    email = _text(body, "email", 320, required=False, rid=rid)
    tel = _text(body, "tel", 50, required=False, rid=rid)
    if required and not email and not tel:
        raise _invalid("Either a phone number or E-mail address is required", rid)
    return {"email": email, "tel": tel}


def _pair(body: dict[str, Any], name: str, high: int, rid: str) -> list[int] | None:
    value = body.get(name)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise _invalid(f"{name} must be an array of exactly 2 integers", rid)
    if not all(0 <= v <= high for v in value):
        raise _invalid(f"the values of {name} must be between 0 and {high}", rid)
    return value


def _blink_settings(body: dict[str, Any], rid: str) -> dict[str, Any]:
    interval = body.get("interval")
    if interval is None:
        raise _invalid("interval is required", rid)
    if not isinstance(interval, int) or isinstance(interval, bool):
        raise _invalid("interval must be an integer", rid)
    if not KG_BLINK_INTERVAL_MIN <= interval <= KG_BLINK_INTERVAL_MAX:
        raise _invalid(f"interval must be between {KG_BLINK_INTERVAL_MIN} and {KG_BLINK_INTERVAL_MAX}", rid)
    message = _text(body, "message", KG_MESSAGE_MAX_LENGTH, required=True, rid=rid)
    contact = _contact(body, rid, required=KG_CONTACT_REQUIRED)
    time_enable = _flag(body, "timeLimitEnable", rid)
    days_enable = _flag(body, "daysLimitEnable", rid)
    time_limit = _pair(body, "timeLimit", 23, rid)
    days_limit = _pair(body, "daysLimit", 6, rid)
    if (time_enable or days_enable) and time_limit is None:
        raise _invalid("timeLimit is required when timeLimitEnable or daysLimitEnable is true", rid)
    if days_enable and days_limit is None:
        raise _invalid("daysLimit is required when daysLimitEnable is true", rid)
    return {
        "interval": interval,
        "message": message,
        **contact,
        "timeLimitEnable": time_enable,
        "daysLimitEnable": days_enable,
        "timeLimit": time_limit,
        "daysLimit": days_limit,
    }


def _wrong_state(dev: dict[str, Any], action: str, allowed: tuple[str, ...], rid: str) -> KgError:
    return KgError(
        KG_DEVICE_STATE_INVALID,
        f"{action} is not allowed while the device is {dev['state']} (allowed: {', '.join(allowed)})",
        rid,
    )


def perform(app: Sandbox, action: str, body: Any) -> dict[str, Any]:
    """Apply one device action; return the sync success body or raise KgError. Called with the lock held.

    Order of checks: identifier present, fields valid (400 / 4000000), device exists (404 / 4040300), state allows
    the action (400 / 4000310).
    """
    if not isinstance(body, dict):
        raise _invalid("each device entry must be a JSON object")
    rid, uid = _identify(app, action, body)
    changes: dict[str, Any] = {}
    if action == "approve":
        approve_id = _text(body, "approveId", KG_APPROVE_ID_MAX_LENGTH, required=False, rid=rid)
        comment = _text(body, "approveComment", KG_APPROVE_COMMENT_MAX_LENGTH, required=False, rid=rid)
        if approve_id is not None:
            holder = app.guard_by_approve.get(approve_id)
            if holder is not None and holder != uid:
                raise _invalid(f"approveId {approve_id} is already used by another device", rid)
            changes["approveId"] = approve_id
        changes["approveComment"] = comment
    elif action == "lock":
        message = _text(body, "message", KG_MESSAGE_MAX_LENGTH, required=True, rid=rid)
        changes["lastMessage"] = {"message": message, **_contact(body, rid), "at": int(time.time() * 1000)}
    elif action == "sendMessage":
        message = _text(body, "message", KG_MESSAGE_MAX_LENGTH, required=True, rid=rid)
        contact = _contact(body, rid)
        fullscreen = _flag(body, "enableFullscreen", rid)
        message_type = _text(body, "messageType", 50, required=False, rid=rid)
        changes["lastMessage"] = {
            "message": message,
            **contact,
            "enableFullscreen": fullscreen,
            "messageType": message_type,
            "at": int(time.time() * 1000),
        }
    elif action == "blink":
        changes["reminder"] = _blink_settings(body, rid)

    devices = app.state["guard"]["devices"]
    dev = devices.get(uid) if uid is not None else None
    if dev is None:
        raise KgError(KG_DEVICE_NOT_FOUND, f"no device matches {rid}", rid)
    state = dev["state"]

    if action == "approve":
        if state != "Pending":
            raise _wrong_state(dev, action, ("Pending",), rid)
        dev = _transition(app, dev, "Accepted", **changes)
    elif action == "reject":
        if state != "Pending":
            raise _wrong_state(dev, action, ("Pending",), rid)
        dev = _transition(app, dev, "Rejected")
    elif action == "lock":
        if state not in KG_LOCKABLE_STATES:
            raise _wrong_state(dev, action, KG_LOCKABLE_STATES, rid)
        dev = _transition(app, dev, "Locking", **changes)
    elif action == "unlock":
        # There is no documented "stop reminder" call; unlock also ends a blinking reminder (docs/sandbox.md).
        # Seed 003: "Enrolled — … lock, unlock, send a message, or blink a device". Unlocking an Enrolled device
        # is accepted and leaves it Enrolled (through Unlocking, like any unlock).
        if state in ("Locked", "Enrolled"):
            dev = _transition(app, dev, "Unlocking")
        elif state == "Blinked":
            dev = _transition(app, dev, "StoppingReminder", reminder=None)
        else:
            raise _wrong_state(dev, action, ("Enrolled", "Locked", "Blinked"), rid)
    elif action == "blink":
        if state not in KG_BLINKABLE_STATES:
            raise _wrong_state(dev, action, KG_BLINKABLE_STATES, rid)
        dev = _transition(app, dev, "StartingReminder", **changes)
    elif action == "sendMessage":
        if state not in KG_MESSAGE_STATES:
            raise _wrong_state(dev, action, KG_MESSAGE_STATES, rid)
        dev = {**dev, **changes}
        _put(app, dev)
    elif action == "complete":
        if state not in KG_COMPLETABLE_STATES:
            raise _wrong_state(dev, action, KG_COMPLETABLE_STATES, rid)
        dev = _transition(app, dev, "Completing", reminder=None)
    elif action == "delete":
        if state not in KG_DELETABLE_STATES:
            raise _wrong_state(dev, action, KG_DELETABLE_STATES, rid)
        del devices[dev["deviceUid"]]
        app.guard_by_object.pop(dev["objectId"], None)
        if dev.get("approveId"):
            app.guard_by_approve.pop(dev["approveId"], None)
        app.mark_dirty()
    return {"result": "SUCCESS", "objectId": dev["objectId"], "requestedId": rid}


def _sync_action(action: str) -> Callable[[Sandbox, Request], Response]:
    def handler(app: Sandbox, req: Request) -> Response:
        failure = _common(app, req)
        if failure is not None:
            return failure
        try:
            body = _body(req)
            with app.lock:
                app.tick()
                return json_response(perform(app, action, body))
        except KgError as exc:
            return exc.response()

    handler.__name__ = f"kg_{action}"
    return handler


def _async_action(action: str) -> Callable[[Sandbox, Request], Response]:
    def handler(app: Sandbox, req: Request) -> Response:
        failure = _common(app, req)
        if failure is not None:
            return failure
        tx_id = req.header("x-knox-transactionId")
        if not tx_id:
            return kg_error(KG_INVALID_PARAM, "x-knox-transactionId header is required for asynchronous requests")
        try:
            body = _body(req)
        except KgError as exc:
            return exc.response()
        items = async_items(body)
        if not items:
            return kg_error(KG_INVALID_PARAM, "deviceUid must be a non-empty array of device identifiers")
        if len(items) > KG_ASYNC_MAX_DEVICES:
            return kg_error(KG_BULK_LIMIT_EXCEEDED, f"at most {KG_ASYNC_MAX_DEVICES} devices per asynchronous request")
        fingerprint = hashlib.sha256((action + json.dumps(body, sort_keys=True)).encode()).hexdigest()
        with app.lock:
            app.tick()
            transactions = app.state["guard"]["transactions"]
            existing = transactions.get(tx_id)
            if existing is not None:
                # A retry of the same request (same transactionId, same body) is answered again, not re-applied.
                if existing["fingerprint"] != fingerprint:
                    return kg_error(KG_UNKNOWN_TRANSACTION, f"x-knox-transactionId {tx_id} was already used")
                return json_response({"result": "SUCCESS", "transactionId": tx_id})
            results = []
            success = 0
            for item in items:
                try:
                    perform(app, action, item)
                    success += 1
                    if not KG_TRANSACTION_RESULTS_FAILED_ONLY:
                        results.append({"result": "SUCCESS", "requestedId": _requested(item)})
                except KgError as exc:
                    code, message = exc.pair
                    # The documented async example carries error.code as a string.
                    results.append(
                        {
                            "result": "FAIL",
                            "requestedId": exc.requested_id or _requested(item),
                            "error": {"code": str(code), "message": message, "reason": exc.reason},
                        }
                    )
            transactions[tx_id] = {
                "transactionId": tx_id,
                "action": action,
                "count": len(items),
                "success": success,
                "fail": len(items) - success,
                "resultList": results,
                "fingerprint": fingerprint,
                "createdAt": time.time(),
            }
            app.mark_dirty()
        return json_response({"result": "SUCCESS", "transactionId": tx_id})

    handler.__name__ = f"kg_{action}_async"
    return handler


def async_items(body: dict[str, Any]) -> list[Any]:
    """The per-device bodies of an `…Async` request, in either form (knox-api.md §6 q17):
    - the synchronous body with `deviceUid` a list, as public clients send it (§7): each device gets the shared
      parameters;
    - `{"deviceList": [<sync body>, …]}`, the form this project guessed first: still accepted (lenient).
    Anything else is [] (refused)."""
    uids = body.get("deviceUid")
    if isinstance(uids, list):
        shared = {k: v for k, v in body.items() if k != "deviceUid"}
        return [{**shared, "deviceUid": uid} for uid in uids]
    items = body.get("deviceList")
    return items if isinstance(items, list) else []


def _requested(item: Any) -> str | None:
    if isinstance(item, dict):
        for name in ("objectId", "deviceUid", "approveId"):
            if isinstance(item.get(name), str) and item[name]:
                return item[name]
    return None


# --- other endpoints -----------------------------------------------------------------------------------------------


def authorization(app: Sandbox, req: Request) -> Response:
    """GET /authorization"""
    failure = _common(app, req)
    if failure is not None:
        return failure
    return json_response({"result": "SUCCESS", "user": app.state["guard"]["tenant"]})


def transaction(app: Sandbox, req: Request) -> Response:
    """POST /transaction {"transactionId": <x-knox-transactionId of an async call>}"""
    failure = _common(app, req)
    if failure is not None:
        return failure
    try:
        body = _body(req)
    except KgError as exc:
        return exc.response()
    tx_id = body.get("transactionId")
    if not isinstance(tx_id, str) or not tx_id:
        return kg_error(KG_INVALID_PARAM, "transactionId is required")
    tx = app.state["guard"]["transactions"].get(tx_id)
    if tx is None:
        return kg_error(KG_UNKNOWN_TRANSACTION, f"no asynchronous request with transactionId {tx_id}")
    return json_response(
        {
            "count": tx["count"],
            "success": tx["success"],
            "fail": tx["fail"],
            "transactionId": tx_id,
            "resultList": tx["resultList"],
        }
    )


def _query_paging(req: Request) -> tuple[int, int]:
    try:
        page_num = int(req.q("pageNum") or 0)
        page_size = int(req.q("pageSize") or KG_MAX_PAGE_SIZE)
    except ValueError:
        raise _invalid("pageNum and pageSize must be integers") from None
    if page_num < 0 or not 0 < page_size <= KG_MAX_PAGE_SIZE:
        raise _invalid(f"pageNum must be >= 0 and pageSize > 0 and <= {KG_MAX_PAGE_SIZE}")
    return page_num, page_size


def upload_devices(app: Sandbox, req: Request) -> Response:
    """POST /devices/uploads"""
    failure = _common(app, req)
    if failure is not None:
        return failure
    try:
        body = _body(req)
        items = body.get("deviceList")
        if not isinstance(items, list):
            raise _invalid("deviceList is required and must be an array")
        if len(items) > KG_UPLOAD_MAX_DEVICES:
            raise KgError(KG_BULK_LIMIT_EXCEEDED, f"deviceList is limited to {KG_UPLOAD_MAX_DEVICES} devices")
        flags = {
            name: _flag(body, name, "")
            for name in ("autoAccept", "autoLock", "applySimControl", "enableBlockFactoryReset")
        }
    except KgError as exc:
        return exc.response()
    now = time.time()
    upload_id = str(uuid.uuid4())
    with app.lock:
        app.tick()
        devices = app.state["guard"]["devices"]
        seen: set[str] = set()
        approve_seen: set[str] = set()
        results: list[dict[str, Any]] = []
        invalid: list[dict[str, Any]] = []
        for item in items:
            uid = item.get("deviceUid") if isinstance(item, dict) else None
            approve_id = item.get("approveId") if isinstance(item, dict) else None
            reason = None
            if not isinstance(uid, str) or not ids.is_valid_kg_device_uid(uid):
                reason = "deviceUid must be a valid IMEI or serial number"
            elif uid in devices or uid in seen:
                reason = "device already exists"
            elif approve_id is not None and (
                not isinstance(approve_id, str) or len(approve_id) > KG_APPROVE_ID_MAX_LENGTH
            ):
                reason = f"approveId must be a string of at most {KG_APPROVE_ID_MAX_LENGTH} characters"
            elif approve_id and (approve_id in app.guard_by_approve or approve_id in approve_seen):
                reason = "approveId already in use"
            if reason is not None:
                invalid.append({"deviceUid": uid, "reason": reason})
                results.append({"deviceUid": uid, "approveId": approve_id, "result": "FAIL", "reason": reason})
                continue
            seen.add(uid)
            if approve_id:
                approve_seen.add(approve_id)
            dev = {
                "deviceUid": uid,
                "objectId": ids.make_kg_object_id(),
                "approveId": approve_id or None,
                "state": "Pending",
                "uploadId": upload_id,
                "createTime": int(now * 1000),
                "model": None,
                "approveComment": None,
                "lastMessage": None,
                "reminder": None,
                "dueAt": None,
                "flags": flags,
            }
            _put(app, dev)
            # autoAccept moves Pending -> Accepted by itself (seed 003); the tenant has every permission.
            if flags["autoAccept"]:
                _transition(app, dev, "Accepted")
            results.append({"deviceUid": uid, "approveId": approve_id, "result": "SUCCESS"})
        valid = len(items) - len(invalid)
        app.state["guard"]["uploads"][upload_id] = {
            "uploadId": upload_id,
            "channel": "API",
            "createTime": int(now * 1000),
            "dueAt": now + app.config.process_delay,
            "totalDeviceCount": len(items),
            "validDeviceCount": valid,
            "invalidDeviceCount": len(invalid),
            "flags": flags,
            "devices": results,
        }
        app.mark_dirty()
    # Knox spells it "uploadID" (capital D) in this response only.
    return json_response(
        {
            "result": "SUCCESS",
            "uploadID": upload_id,
            "uploadStatus": KG_UPLOAD_STATUS_PROGRESS,
            "totalDeviceCount": len(items),
            "validDeviceCount": valid,
            "invalidDeviceCount": len(invalid),
            "invalidReasons": invalid,
        }
    )


def _upload_status(upload: dict[str, Any]) -> str:
    return KG_UPLOAD_STATUS_COMPLETE if time.time() >= upload["dueAt"] else KG_UPLOAD_STATUS_PROGRESS


def list_uploads(app: Sandbox, req: Request) -> Response:
    """GET /devices/uploads?pageNum&pageSize"""
    failure = _common(app, req)
    if failure is not None:
        return failure
    try:
        page_num, page_size = _query_paging(req)
    except KgError as exc:
        return exc.response()
    uploads = list(app.state["guard"]["uploads"].values())
    page = uploads[page_num * page_size : (page_num + 1) * page_size]
    items = [
        {
            "uploadId": u["uploadId"],
            "status": _upload_status(u),
            "channel": u["channel"],
            "createTime": u["createTime"],
            "totalDeviceCount": u["totalDeviceCount"],
            "validDeviceCount": u["validDeviceCount"],
            "invalidDeviceCount": u["invalidDeviceCount"],
        }
        for u in page
    ]
    return json_response({"result": "SUCCESS", "totalCount": len(uploads), "uploads": items})


def get_upload(app: Sandbox, req: Request, upload_id: str) -> Response:
    """GET /devices/uploads/{uploadId}"""
    failure = _common(app, req)
    if failure is not None:
        return failure
    try:
        page_num, page_size = _query_paging(req)
    except KgError as exc:
        return exc.response()
    upload = app.state["guard"]["uploads"].get(upload_id)
    if upload is None:
        return kg_error(KG_UNKNOWN_UPLOAD, f"no upload with id {upload_id}")
    page = upload["devices"][page_num * page_size : (page_num + 1) * page_size]
    return json_response({"result": "SUCCESS", "status": _upload_status(upload), "devices": page})


def list_devices(app: Sandbox, req: Request) -> Response:
    """POST /devices/list {"pageNum", "pageSize", "search"}"""
    failure = _common(app, req)
    if failure is not None:
        return failure
    try:
        body = _body(req)
        page_num = body.get("pageNum", 0)
        page_size = body.get("pageSize", KG_MAX_PAGE_SIZE)
        for name, value in (("pageNum", page_num), ("pageSize", page_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise _invalid(f"{name} must be an integer")
        if page_num < 0 or not 0 < page_size <= KG_MAX_PAGE_SIZE:
            raise _invalid(f"pageNum must be >= 0 and pageSize > 0 and <= {KG_MAX_PAGE_SIZE}")
        search = body.get("search")
        if search is not None and not isinstance(search, str):
            raise _invalid("search must be a string")
    except KgError as exc:
        return exc.response()
    with app.lock:
        app.tick()
        devices = list(app.state["guard"]["devices"].values())
    if search:
        devices = [d for d in devices if search in d["deviceUid"] or search in (d.get("approveId") or "")]
    page = devices[page_num * page_size : (page_num + 1) * page_size]
    items = []
    for d in page:
        item: dict[str, Any] = {"id": d["objectId"]}
        item["imei" if ids.is_valid_imei(d["deviceUid"]) else "serial"] = d["deviceUid"]
        item.update({"approveId": d.get("approveId"), "state": d["state"], "model": d.get("model")})
        item["uploadId"] = d.get("uploadId")
        items.append(item)
    return json_response(
        {
            "result": "SUCCESS",
            "totalCount": len(devices),
            "pageNum": page_num,
            "pageSize": page_size,
            "deviceList": items,
        }
    )


ROUTES: dict[tuple[str, str], Callable[[Sandbox, Request], Response]] = {
    ("GET", f"{PREFIX}/authorization"): authorization,
    ("POST", f"{PREFIX}/transaction"): transaction,
    ("POST", f"{PREFIX}/devices/uploads"): upload_devices,
    ("GET", f"{PREFIX}/devices/uploads"): list_uploads,
    ("POST", f"{PREFIX}/devices/list"): list_devices,
}
for _action in ACTIONS:
    ROUTES[("POST", f"{PREFIX}/devices/{_action}")] = _sync_action(_action)
    ROUTES[("POST", f"{PREFIX}/devices/{_action}Async")] = _async_action(_action)

UPLOAD_PREFIX = f"{PREFIX}/devices/uploads/"
