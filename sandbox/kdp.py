"""Knox Deployment Program: Gen2 (/kcs/v1/rp) and Gen1 (/bulkenroll) endpoints.

Uploads and deletes are asynchronous. A request is validated as a whole (a failure there is a 400 with the KDP
error object and records nothing); if it passes, a transaction is stored in state "Progress" and answered at once.
After the process delay `process_due()` settles it against the registry *as it is then* and records one outcome
per device, so two transactions racing for the same device behave as they would on the real service.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from collections import Counter
from itertools import islice
from typing import TYPE_CHECKING, Any

from sandbox import ids
from sandbox.auth import Principal, authenticate_gen1, authenticate_kdp
from sandbox.constants import (
    KDP_ACCEPTED_STATE,
    KDP_CUSTOMER_ID_INVALID,
    KDP_CUSTOMER_STATUS_PENDING,
    KDP_DEVICE_INVALID,
    KDP_DEVICE_INVALID_DATA,
    KDP_DEVICE_OWNED_ELSEWHERE,
    KDP_DEVICE_STATE_VERIFIED,
    KDP_DEVICE_TYPE_IMEI,
    KDP_DEVICE_TYPE_SERIAL,
    KDP_DUPLICATE_IN_REQUEST,
    KDP_GEN1_CUSTOMER_NOT_FOUND,
    KDP_GEN1_DEVICE_INVALID,
    KDP_GEN1_RESELLER_ID_MISSING,
    KDP_INVALID_PARAM,
    KDP_PAGE_SIZE,
    KDP_PAGE_SIZE_ACCEPTED,
    KDP_PENDING_CUSTOMER,
    KDP_PROFILE_ALIAS_HEADERS,
    KDP_PROFILE_ALIAS_NAME_KEY,
    KDP_PROFILE_ALIAS_SERVICE_KEY,
    KDP_RESELLER_CUSTOMER_DEVICE_NOT_FOUND,
    KDP_RESELLER_NOT_FOUND,
    KDP_SCOPES_CUSTOMERS,
    KDP_SCOPES_MANAGE,
    KDP_SCOPES_PROFILE_ALIAS,
    KDP_SCOPES_VIEW,
    KDP_SUCCESS_CODE,
    KDP_TARGET_SERVICE_KME,
    KDP_TRANSACTION_ID_MAX_LENGTH,
    KDP_UNKNOWN_PROFILE_ALIAS,
    KDP_WRONG_GENERATION,
)
from sandbox.wire import BadJson, Request, Response, json_response, kdp_error, status_for_code

if TYPE_CHECKING:
    from collections.abc import Callable

    from sandbox.store import Sandbox

UPLOAD = "UPLOAD"
DELETE = "DELETE"
_TYPE_LABEL = {UPLOAD: "Put", DELETE: "Delete"}
_TRANSACTION_ID_RE = re.compile(r"[A-Za-z0-9_.\-]+")


class Invalid(Exception):
    """A whole-request validation failure, carrying the response to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _bad(pair: tuple[int, str], data: str, status: int | None = None) -> Invalid:
    return Invalid(kdp_error(pair, data, status))


def _tx_key(reseller_id: str, transaction_id: str) -> str:
    return f"{reseller_id}/{transaction_id}"


def _fingerprint(operation: str, body: dict[str, Any]) -> str:
    return hashlib.sha256((operation + json.dumps(body, sort_keys=True)).encode()).hexdigest()


def _device_key(type_: str) -> str:
    return "serialNumber" if type_ == KDP_DEVICE_TYPE_SERIAL else "imei"


def _valid_device(type_: str, device_id: str) -> bool:
    if type_ == KDP_DEVICE_TYPE_IMEI:
        return ids.is_valid_imei(device_id)
    return ids.is_valid_kdp_serial(device_id)


# --- shared validation ---------------------------------------------------------------------------------------------


def _json_object(req: Request) -> dict[str, Any]:
    try:
        body = req.json()
    except BadJson as exc:
        raise _bad(KDP_INVALID_PARAM, str(exc)) from None
    if not isinstance(body, dict):
        raise _bad(KDP_INVALID_PARAM, "request body must be a JSON object")
    return body


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(KDP_INVALID_PARAM, f"{name} must be a string")
    return value


def _transaction_id(body: dict[str, Any]) -> str:
    tx = body.get("transactionId")
    if not isinstance(tx, str) or not tx:
        raise _bad(KDP_INVALID_PARAM, "transactionId is required")
    if len(tx) > KDP_TRANSACTION_ID_MAX_LENGTH or not _TRANSACTION_ID_RE.fullmatch(tx):
        raise _bad(
            KDP_INVALID_PARAM,
            f"transactionId must be 1-{KDP_TRANSACTION_ID_MAX_LENGTH} letters, digits, '-', '_' or '.'",
        )
    return tx


def _reseller(app: Sandbox, principal: Principal, reseller_id: Any, generation: int) -> dict[str, Any]:
    """The caller's own reseller record; 404 for an unknown id, 403 for someone else's or the other generation."""
    if not isinstance(reseller_id, str) or not reseller_id:
        if generation == 1:
            raise _bad(KDP_GEN1_RESELLER_ID_MISSING, "reseller id is missing")
        raise _bad(KDP_INVALID_PARAM, "resellerId is required")
    reseller = app.state["kdp"]["resellers"].get(reseller_id)
    if reseller is None:
        raise _bad(KDP_RESELLER_NOT_FOUND, f"reseller {reseller_id} does not exist")
    if reseller["generation"] != generation:
        raise _bad(KDP_WRONG_GENERATION, f"reseller {reseller_id} is a Gen{reseller['generation']} account")
    if reseller_id != principal.reseller_id:
        raise _bad(KDP_WRONG_GENERATION, f"not authorised for reseller {reseller_id}")
    return reseller


def _customer(app: Sandbox, reseller_id: str, customer_id: Any) -> dict[str, Any] | None:
    if not isinstance(customer_id, str) or not customer_id:
        return None
    customer = app.state["kdp"]["customers"].get(customer_id)
    if customer is None or customer["resellerId"] != reseller_id:
        return None
    return customer


def _paging(req: Request, default_size: int = KDP_PAGE_SIZE) -> tuple[int, int]:
    try:
        page_num = int(req.q("pageNum") or 0)
        page_size = int(req.q("pageSize") or default_size)
    except ValueError:
        raise _bad(KDP_INVALID_PARAM, "pageNum and pageSize must be whole numbers") from None
    if page_num < 0 or not 1 <= page_size <= KDP_PAGE_SIZE_ACCEPTED:
        raise _bad(KDP_INVALID_PARAM, f"pageNum must be >= 0 and pageSize between 1 and {KDP_PAGE_SIZE_ACCEPTED}")
    return page_num, page_size


def _handler(fn: Callable[[Sandbox, Request], Response]) -> Callable[[Sandbox, Request], Response]:
    def wrapped(app: Sandbox, req: Request) -> Response:
        try:
            return fn(app, req)
        except Invalid as exc:
            return exc.response

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


# --- transactions --------------------------------------------------------------------------------------------------


def _submit(
    app: Sandbox,
    *,
    generation: int,
    operation: str,
    reseller_id: str,
    customer_id: str,
    transaction_id: str,
    type_: str,
    devices: list[str],
    fingerprint: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Store a new transaction, or return the existing one when the same request is sent again."""
    key = _tx_key(reseller_id, transaction_id)
    transactions = app.state["kdp"]["transactions"]
    existing = transactions.get(key)
    if existing is not None:
        if existing["fingerprint"] != fingerprint:
            raise _bad(KDP_INVALID_PARAM, f"transactionId {transaction_id} was already used for a different request")
        return existing
    now = time.time()
    tx = {
        "transactionId": transaction_id,
        "resellerId": reseller_id,
        "customerId": customer_id,
        "generation": generation,
        "operation": operation,
        "type": type_,
        "devices": devices,
        "state": KDP_ACCEPTED_STATE,
        "submittedAt": now,
        "dueAt": now + app.config.process_delay,
        "completedAt": None,
        "failures": [],
        "fingerprint": fingerprint,
        "uploadId": str(uuid.uuid4()) if operation == UPLOAD else None,
        **extra,
    }
    transactions[key] = tx
    app.state["kdp"]["pending"].append(key)
    app.mark_dirty()
    return tx


def process_due(app: Sandbox, now: float) -> None:
    """Settle, oldest first, every transaction whose process delay has elapsed. Called with the lock held."""
    kdp = app.state["kdp"]
    pending = kdp["pending"]
    transactions = kdp["transactions"]
    done = 0
    for key in pending:
        tx = transactions.get(key)
        if tx is not None and tx["dueAt"] > now:
            break
        done += 1
        if tx is not None and tx["state"] == KDP_ACCEPTED_STATE:
            transactions[key] = _settle(app, tx, now)
    if done:
        del pending[:done]
        app.mark_dirty()


def _settle(app: Sandbox, tx: dict[str, Any], now: float) -> dict[str, Any]:
    """Apply one transaction to the registry; return its completed record with the per-device failures."""
    kdp = app.state["kdp"]
    registry = kdp["devices"]
    reseller_id = tx["resellerId"]
    customer_id = tx["customerId"]
    type_ = tx["type"]
    owned = app.kdp_by_reseller.setdefault(reseller_id, {})
    failures: list[dict[str, Any]] = []
    key = _device_key(type_)
    invalid = KDP_GEN1_DEVICE_INVALID if tx["generation"] == 1 else KDP_DEVICE_INVALID

    def fail(device_id: str, pair: tuple[int, str], data: str) -> None:
        failures.append({key: device_id, "code": pair[0], "message": pair[1], "data": data})

    alias_error = None
    if tx["operation"] == UPLOAD and tx.get("profileAliases"):
        customer_aliases = kdp["customers"][customer_id]["profileAliases"]
        for alias in tx["profileAliases"]:
            if alias[KDP_PROFILE_ALIAS_SERVICE_KEY] != KDP_TARGET_SERVICE_KME or (
                alias[KDP_PROFILE_ALIAS_NAME_KEY] not in customer_aliases
            ):
                alias_error = (
                    f"profile alias {alias[KDP_PROFILE_ALIAS_NAME_KEY]!r} for service "
                    f"{alias[KDP_PROFILE_ALIAS_SERVICE_KEY]!r} is not registered for customer {customer_id}"
                )
                break

    counts = Counter(tx["devices"])
    duplicates_seen = 0
    for device_id in counts:
        if counts[device_id] > 1:
            fail(device_id, KDP_DUPLICATE_IN_REQUEST, f"device {device_id} appears {counts[device_id]} times")
            continue
        if not _valid_device(type_, device_id):
            fail(device_id, invalid, KDP_DEVICE_INVALID_DATA)
            continue
        existing = registry.get(device_id)
        if tx["operation"] == UPLOAD:
            # Counted whatever happens next: the client sent again a device it had already registered.
            if (
                existing is not None
                and existing["resellerId"] == reseller_id
                and existing["transactionId"] != tx["transactionId"]
            ):
                duplicates_seen += 1
            if existing is not None and existing["resellerId"] != reseller_id:
                fail(device_id, KDP_DEVICE_OWNED_ELSEWHERE, f"device {key}[{device_id}] already exists")
                continue
            if existing is not None and existing["customerId"] != customer_id:
                fail(
                    device_id,
                    KDP_DEVICE_OWNED_ELSEWHERE,
                    f"device {key}[{device_id}] already exists for another customer",
                )
                continue
            if alias_error is not None:
                fail(device_id, KDP_UNKNOWN_PROFILE_ALIAS, alias_error)
                continue
            if existing is not None:
                # Same reseller, same customer: a no-op, except that new profile aliases are attached.
                if tx.get("profileAliases"):
                    registry[device_id] = {
                        **existing,
                        "profileAliases": tx["profileAliases"],
                        "targetService": tx.get("targetService"),
                    }
                continue
            rec: dict[str, Any] = {
                "id": ids.make_kdp_device_record_id(),
                "deviceId": device_id,
                "type": type_,
                "resellerId": reseller_id,
                "customerId": customer_id,
                "vendorId": tx.get("vendorId"),
                "transactionId": tx["transactionId"],
                "uploadId": tx["uploadId"],
                "createTime": int(now * 1000),
                "model": None,
                "targetService": tx.get("targetService"),
                "profileAliases": tx.get("profileAliases") or [],
                "orderNo": tx.get("orderNo"),
            }
            if type_ == KDP_DEVICE_TYPE_SERIAL:
                rec["serialNumber"] = device_id
            registry[device_id] = rec
            owned[device_id] = None
        else:
            if existing is None or existing["resellerId"] != reseller_id or existing["customerId"] != customer_id:
                fail(
                    device_id,
                    KDP_RESELLER_CUSTOMER_DEVICE_NOT_FOUND,
                    f"device {key}[{device_id}] is not registered by reseller {reseller_id} for customer {customer_id}",
                )
                continue
            del registry[device_id]
            owned.pop(device_id, None)
    if duplicates_seen:
        app.count("duplicate_device_submissions", n=duplicates_seen)
    return {**tx, "state": "Complete", "completedAt": now, "failures": failures}


# --- Gen2 ----------------------------------------------------------------------------------------------------------


def _gen2_submit(app: Sandbox, req: Request, operation: str) -> Response:
    principal = authenticate_kdp(app, req, KDP_SCOPES_MANAGE)
    if isinstance(principal, Response):
        return principal
    body = _json_object(req)
    transaction_id = _transaction_id(body)
    devices = body.get("devices")
    type_ = body.get("type")
    with app.lock:
        app.tick()
        reseller = _reseller(app, principal, body.get("resellerId"), 2)
        customer = _customer(app, reseller["resellerId"], body.get("customerId"))
        if customer is None:
            raise _bad(KDP_CUSTOMER_ID_INVALID, f"customer id {body.get('customerId')!r} is not valid")
        if operation == UPLOAD and customer["status"] == KDP_CUSTOMER_STATUS_PENDING:
            raise _bad(KDP_PENDING_CUSTOMER, f"customer {customer['customerId']} is pending verification")
        if type_ not in (KDP_DEVICE_TYPE_IMEI, KDP_DEVICE_TYPE_SERIAL):
            raise _bad(KDP_INVALID_PARAM, f"type must be {KDP_DEVICE_TYPE_IMEI!r} or {KDP_DEVICE_TYPE_SERIAL!r}")
        _check_devices(app, devices)
        extra = {
            "vendorId": _optional_str(body, "vendorId"),
            "orderNo": _optional_str(body, "orderNo"),
            "orderTime": _order_time(body),
            **_profile_fields(body),
        }
        tx = _submit(
            app,
            generation=2,
            operation=operation,
            reseller_id=reseller["resellerId"],
            customer_id=customer["customerId"],
            transaction_id=transaction_id,
            type_=type_,
            devices=list(devices),
            fingerprint=_fingerprint(operation, body),
            extra=extra,
        )
        return json_response(
            {"transactionId": tx["transactionId"], "state": tx["state"], "code": KDP_SUCCESS_CODE, "message": "SUCCESS"}
        )


def _check_devices(app: Sandbox, devices: Any) -> None:
    if not isinstance(devices, list) or not devices or not all(isinstance(d, str) for d in devices):
        raise _bad(KDP_INVALID_PARAM, "devices must be a non-empty array of strings")
    limit = app.config.max_devices_per_request
    if len(devices) > limit:
        raise _bad(KDP_INVALID_PARAM, f"at most {limit} devices per request ({len(devices)} sent)")


def _order_time(body: dict[str, Any]) -> int | None:
    value = body.get("orderTime")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise _bad(KDP_INVALID_PARAM, "orderTime must be a number (epoch seconds)")
    return value


def _profile_fields(body: dict[str, Any]) -> dict[str, Any]:
    target = _optional_str(body, "targetService")
    if target is not None and target != KDP_TARGET_SERVICE_KME:
        raise _bad(KDP_INVALID_PARAM, f"targetService must be {KDP_TARGET_SERVICE_KME!r}")
    aliases = body.get("profileAliases")
    if aliases is None:
        return {"targetService": target, "profileAliases": []}
    if not isinstance(aliases, list):
        raise _bad(KDP_INVALID_PARAM, "profileAliases must be an array of ProfileAliasObject")
    clean = []
    for alias in aliases:
        if (
            not isinstance(alias, dict)
            or not isinstance(alias.get(KDP_PROFILE_ALIAS_SERVICE_KEY), str)
            or not isinstance(alias.get(KDP_PROFILE_ALIAS_NAME_KEY), str)
            or not alias[KDP_PROFILE_ALIAS_NAME_KEY]
        ):
            raise _bad(
                KDP_INVALID_PARAM,
                f"each profileAliases item needs string {KDP_PROFILE_ALIAS_SERVICE_KEY!r} "
                f"and {KDP_PROFILE_ALIAS_NAME_KEY!r}",
            )
        clean.append(
            {
                KDP_PROFILE_ALIAS_SERVICE_KEY: alias[KDP_PROFILE_ALIAS_SERVICE_KEY],
                KDP_PROFILE_ALIAS_NAME_KEY: alias[KDP_PROFILE_ALIAS_NAME_KEY],
            }
        )
    return {"targetService": target, "profileAliases": clean}


@_handler
def gen2_upload(app: Sandbox, req: Request) -> Response:
    """PUT /kcs/v1/rp/devices/upload"""
    return _gen2_submit(app, req, UPLOAD)


@_handler
def gen2_delete(app: Sandbox, req: Request) -> Response:
    """PUT /kcs/v1/rp/devices/delete"""
    return _gen2_submit(app, req, DELETE)


def _v2_transaction(tx: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "transactionId": tx["transactionId"],
        "state": tx["state"],
        "type": _TYPE_LABEL[tx["operation"]],
        "operationType": tx["operation"],
    }
    if tx.get("orderNo"):
        entry["orderNo"] = tx["orderNo"]
    # Seed 001: only failed devices are listed, and the element is absent when every device succeeded.
    if tx["failures"]:
        entry["devices"] = tx["failures"]
    return entry


@_handler
def gen2_status(app: Sandbox, req: Request) -> Response:
    """GET /kcs/v1/rp/devices/status?transactionId=..."""
    principal = authenticate_kdp(app, req, KDP_SCOPES_VIEW)
    if isinstance(principal, Response):
        return principal
    transaction_id = req.q("transactionId")
    if not transaction_id:
        raise _bad(KDP_INVALID_PARAM, "transactionId query parameter is required")
    with app.lock:
        app.tick()
        if req.q("resellerId") is not None:
            _reseller(app, principal, req.q("resellerId"), 2)
        tx = app.state["kdp"]["transactions"].get(_tx_key(principal.reseller_id or "", transaction_id))
        found = [_v2_transaction(tx)] if tx is not None and tx["generation"] == 2 else []
    return json_response(
        {"devices": {"totalCount": len(found), "totalPage": len(found), "pageNum": 0, "transactions": found}}
    )


def _v2_device(app: Sandbox, rec: dict[str, Any]) -> dict[str, Any]:
    customer = app.state["kdp"]["customers"].get(rec["customerId"])
    item: dict[str, Any] = {"id": rec["id"], "createTime": rec["createTime"]}
    if rec["type"] == KDP_DEVICE_TYPE_IMEI:
        item["mei"] = rec["deviceId"]
    if rec.get("serialNumber"):
        item["serialNumber"] = rec["serialNumber"]
    if rec.get("meid"):
        item["meid"] = rec["meid"]
    item.update(
        {
            "customerName": customer["name"] if customer else None,
            "customerId": rec["customerId"],
            "model": rec.get("model"),
            "state": KDP_DEVICE_STATE_VERIFIED,
            "uploadId": rec.get("uploadId"),
        }
    )
    return item


def _owned_devices(app: Sandbox, reseller_id: str, req: Request) -> tuple[int, list[dict[str, Any]], int, int]:
    """(total, page of device records, pageNum, pageSize) for the list endpoints, honouring their filters."""
    page_num, page_size = _paging(req)
    registry = app.state["kdp"]["devices"]
    owned = app.kdp_by_reseller.get(reseller_id, {})
    customer_id = req.q("customerId")
    upload_id = req.q("uploadId")
    if customer_id is not None and _customer(app, reseller_id, customer_id) is None:
        raise _bad(KDP_CUSTOMER_ID_INVALID, f"customer id {customer_id!r} is not valid")
    start = page_num * page_size
    if customer_id is None and upload_id is None:
        total = len(owned)
        page = [registry[d] for d in islice(owned, start, start + page_size)]
    else:
        matching = [
            registry[d]
            for d in owned
            if (customer_id is None or registry[d]["customerId"] == customer_id)
            and (upload_id is None or registry[d].get("uploadId") == upload_id)
        ]
        total = len(matching)
        page = matching[start : start + page_size]
    return total, page, page_num, page_size


@_handler
def gen2_list(app: Sandbox, req: Request) -> Response:
    """GET /kcs/v1/rp/devices?pageNum&pageSize[&customerId][&uploadId]"""
    principal = authenticate_kdp(app, req, KDP_SCOPES_VIEW)
    if isinstance(principal, Response):
        return principal
    with app.lock:
        app.tick()
        if req.q("resellerId") is not None:
            _reseller(app, principal, req.q("resellerId"), 2)
        total, page, page_num, page_size = _owned_devices(app, principal.reseller_id or "", req)
        items = [_v2_device(app, rec) for rec in page]
    return json_response(
        {
            # Seed 001: V2 sends the code as a string, and renamed totalPage to totalPages.
            "code": str(KDP_SUCCESS_CODE),
            "message": "SUCCESS",
            "pageNum": page_num,
            "pageSize": page_size,
            "totalCount": total,
            "totalPages": math.ceil(total / page_size),
            "size": len(items),
            "devices": items,
        }
    )


def _customer_items(app: Sandbox, reseller_id: str) -> list[dict[str, Any]]:
    return [
        {"customerId": c["customerId"], "customerName": c["name"], "status": c["status"]}
        for c in app.state["kdp"]["customers"].values()
        if c["resellerId"] == reseller_id
    ]


@_handler
def gen2_customers(app: Sandbox, req: Request) -> Response:
    """GET /kcs/v1/rp/customers"""
    principal = authenticate_kdp(app, req, KDP_SCOPES_CUSTOMERS)
    if isinstance(principal, Response):
        return principal
    page_num, page_size = _paging(req)
    with app.lock:
        if req.q("resellerId") is not None:
            _reseller(app, principal, req.q("resellerId"), 2)
        customers = _customer_items(app, principal.reseller_id or "")
    page = customers[page_num * page_size : (page_num + 1) * page_size]
    return json_response({"totalCount": len(customers), "pageNum": page_num, "customers": page})


@_handler
def gen2_profile_aliases(app: Sandbox, req: Request) -> Response:
    """GET /kcs/v1/rp/profilealias/kme with resellerId and customerId as headers (since July 2020)."""
    principal = authenticate_kdp(app, req, KDP_SCOPES_PROFILE_ALIAS)
    if isinstance(principal, Response):
        return principal
    reseller_header, customer_header = KDP_PROFILE_ALIAS_HEADERS
    with app.lock:
        reseller = _reseller(app, principal, req.header(reseller_header), 2)
        customer = _customer(app, reseller["resellerId"], req.header(customer_header))
        if customer is None:
            raise _bad(KDP_CUSTOMER_ID_INVALID, f"{customer_header} header is missing or not a customer of yours")
        aliases = [{"aliasName": name, "profileId": pid} for name, pid in customer["profileAliases"].items()]
    return json_response(aliases)


# --- Gen1 ----------------------------------------------------------------------------------------------------------


def _gen1_submit(app: Sandbox, req: Request, operation: str) -> Response:
    principal = authenticate_gen1(app, req)
    if isinstance(principal, Response):
        return principal
    body = _json_object(req)
    transaction_id = _transaction_id(body)
    expected_type = "New" if operation == UPLOAD else "Delete"
    with app.lock:
        app.tick()
        reseller = _reseller(app, principal, body.get("resellerId"), 1)
        if body.get("transactionType") != expected_type:
            raise _bad(KDP_INVALID_PARAM, f"transactionType must be {expected_type!r} on this endpoint")
        vendor_id = _optional_str(body, "vendorId")
        if vendor_id is not None and vendor_id not in reseller["vendorIds"]:
            raise _bad(KDP_INVALID_PARAM, f"vendorId {vendor_id} is not a vendor of reseller {reseller['resellerId']}")
        devices_obj = body.get("devices")
        remove_tx = _optional_str(body, "removeTransactionId")
        if operation == DELETE and remove_tx is not None and devices_obj is None:
            earlier = app.state["kdp"]["transactions"].get(_tx_key(reseller["resellerId"], remove_tx))
            if earlier is None or earlier["operation"] != UPLOAD:
                raise _bad(KDP_INVALID_PARAM, f"removeTransactionId {remove_tx} is not an upload of yours")
            type_, devices = earlier["type"], list(earlier["devices"])
        else:
            if not isinstance(devices_obj, dict):
                raise _bad(KDP_INVALID_PARAM, "devices must be an object {type, list}")
            type_ = devices_obj.get("type")
            if type_ not in (KDP_DEVICE_TYPE_IMEI, KDP_DEVICE_TYPE_SERIAL):
                raise _bad(KDP_INVALID_PARAM, "devices.type must be 'IMEI' or 'SN'")
            devices = devices_obj.get("list")
            _check_devices(app, devices)
        customer_id = body.get("customerId")
        customer = _customer(app, reseller["resellerId"], customer_id)
        key = _tx_key(reseller["resellerId"], transaction_id)
        fingerprint = _fingerprint(operation, body)
        if customer is None or customer["status"] == KDP_CUSTOMER_STATUS_PENDING:
            return _gen1_reject(app, key, transaction_id, reseller["resellerId"], customer_id, operation, fingerprint)
        tx = _submit(
            app,
            generation=1,
            operation=operation,
            reseller_id=reseller["resellerId"],
            customer_id=customer["customerId"],
            transaction_id=transaction_id,
            type_=type_,
            devices=list(devices),
            fingerprint=fingerprint,
            extra={"vendorId": vendor_id, "orderNo": _optional_str(body, "orderNo")},
        )
        return _gen1_answer(tx)


def _gen1_answer(tx: dict[str, Any]) -> Response:
    if tx["state"] == "Rejected":
        code, message = KDP_GEN1_CUSTOMER_NOT_FOUND
        body = {
            "transactionId": tx["transactionId"],
            "state": "Rejected",
            "code": code,
            "message": message,
            "data": tx["rejection"],
        }
        return json_response(body, status_for_code(code))
    return json_response(
        {"transactionId": tx["transactionId"], "state": tx["state"], "code": KDP_SUCCESS_CODE, "message": "SUCCESS"}
    )


def _gen1_reject(
    app: Sandbox,
    key: str,
    transaction_id: str,
    reseller_id: str,
    customer_id: Any,
    operation: str,
    fingerprint: str,
) -> Response:
    """Gen1 refuses an unknown customer with a *Rejected transaction* (third-party code shows the body)."""
    transactions = app.state["kdp"]["transactions"]
    existing = transactions.get(key)
    if existing is not None:
        if existing["fingerprint"] != fingerprint:
            raise _bad(KDP_INVALID_PARAM, f"transactionId {transaction_id} was already used for a different request")
        return _gen1_answer(existing)
    now = time.time()
    tx = {
        "transactionId": transaction_id,
        "resellerId": reseller_id,
        "customerId": customer_id,
        "generation": 1,
        "operation": operation,
        "type": None,
        "devices": [],
        "state": "Rejected",
        "submittedAt": now,
        "dueAt": now,
        "completedAt": now,
        "failures": [],
        "fingerprint": fingerprint,
        "uploadId": None,
        "vendorId": None,
        "rejection": f"customer not found. (customer id : [{customer_id}])",
    }
    transactions[key] = tx
    app.mark_dirty()
    return _gen1_answer(tx)


@_handler
def gen1_upload(app: Sandbox, req: Request) -> Response:
    """PUT /bulkenroll/v1/reseller/devices (and /bulkenroll/v2/...)"""
    return _gen1_submit(app, req, UPLOAD)


@_handler
def gen1_delete(app: Sandbox, req: Request) -> Response:
    """PUT /bulkenroll/v1/reseller/devices/delete"""
    return _gen1_submit(app, req, DELETE)


def _v1_transaction(tx: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "transactionId": tx["transactionId"],
        "state": tx["state"],
        "type": _TYPE_LABEL[tx["operation"]],
    }
    if tx["state"] == "Rejected":
        code, message = KDP_GEN1_CUSTOMER_NOT_FOUND
        entry.update({"code": code, "message": message, "data": tx.get("rejection"), "devices": []})
        return entry
    if tx["state"] != "Complete":
        entry["devices"] = []
        return entry
    # V1 lists every device; a device without `code` succeeded (seed 001).
    key = _device_key(tx["type"])
    failed = {f[key]: f for f in tx["failures"]}
    entry["devices"] = [failed.get(d) or {key: d} for d in dict.fromkeys(tx["devices"])]
    return entry


@_handler
def gen1_status(app: Sandbox, req: Request) -> Response:
    """GET /bulkenroll/v1/reseller/devices/status?resellerId&transactionId[&vendorId]"""
    principal = authenticate_gen1(app, req)
    if isinstance(principal, Response):
        return principal
    page_num, page_size = _paging(req, 100)
    with app.lock:
        app.tick()
        reseller = _reseller(app, principal, req.q("resellerId"), 1)
        transaction_id = req.q("transactionId")
        vendor_id = req.q("vendorId")
        transactions = app.state["kdp"]["transactions"]
        if transaction_id:
            tx = transactions.get(_tx_key(reseller["resellerId"], transaction_id))
            found = [tx] if tx is not None else []
        else:
            found = [
                tx
                for tx in transactions.values()
                if tx["resellerId"] == reseller["resellerId"] and tx["generation"] == 1
            ]
        if vendor_id:
            found = [tx for tx in found if tx.get("vendorId") == vendor_id]
        total = len(found)
        page = [_v1_transaction(tx) for tx in found[page_num * page_size : (page_num + 1) * page_size]]
    return json_response(
        {"totalCount": total, "totalPage": math.ceil(total / page_size), "pageNum": page_num, "transactions": page}
    )


@_handler
def gen1_list(app: Sandbox, req: Request) -> Response:
    """GET /bulkenroll/v1/reseller/devices?resellerId&pageNum&pageSize"""
    principal = authenticate_gen1(app, req)
    if isinstance(principal, Response):
        return principal
    with app.lock:
        app.tick()
        reseller = _reseller(app, principal, req.q("resellerId"), 1)
        total, page, page_num, page_size = _owned_devices(app, reseller["resellerId"], req)
        items = [{_device_key(rec["type"]): rec["deviceId"]} for rec in page]
    return json_response(
        {"totalCount": total, "totalPage": math.ceil(total / page_size), "pageNum": page_num, "devices": items}
    )


@_handler
def gen1_customers(app: Sandbox, req: Request) -> Response:
    """POST /bulkenroll/v1/reseller/customers {"resellerId": ...}"""
    principal = authenticate_gen1(app, req)
    if isinstance(principal, Response):
        return principal
    body = _json_object(req)
    with app.lock:
        reseller = _reseller(app, principal, body.get("resellerId"), 1)
        customers = _customer_items(app, reseller["resellerId"])
    return json_response({"totalCount": len(customers), "totalPage": 1, "pageNum": 0, "customers": customers})


@_handler
def gen1_resellers(app: Sandbox, req: Request) -> Response:
    """POST /bulkenroll/v1/reseller/resellers {"resellerId": ...}"""
    principal = authenticate_gen1(app, req)
    if isinstance(principal, Response):
        return principal
    body = _json_object(req)
    with app.lock:
        reseller = _reseller(app, principal, body.get("resellerId"), 1)
    item = {"resellerId": reseller["resellerId"], "resellerName": reseller["name"], "vendorIds": reseller["vendorIds"]}
    return json_response({"totalCount": 1, "totalPage": 1, "pageNum": 0, "resellers": [item]})


ROUTES: dict[tuple[str, str], Callable[[Sandbox, Request], Response]] = {
    ("PUT", "/kcs/v1/rp/devices/upload"): gen2_upload,
    ("PUT", "/kcs/v1/rp/devices/delete"): gen2_delete,
    ("GET", "/kcs/v1/rp/devices/status"): gen2_status,
    ("GET", "/kcs/v1/rp/devices"): gen2_list,
    ("GET", "/kcs/v1/rp/customers"): gen2_customers,
    ("GET", "/kcs/v1/rp/profilealias/kme"): gen2_profile_aliases,
    ("PUT", "/bulkenroll/v1/reseller/devices"): gen1_upload,
    ("PUT", "/bulkenroll/v2/reseller/devices"): gen1_upload,
    ("PUT", "/bulkenroll/v1/reseller/devices/delete"): gen1_delete,
    ("GET", "/bulkenroll/v1/reseller/devices/status"): gen1_status,
    ("GET", "/bulkenroll/v2/reseller/devices/status"): gen1_status,
    ("GET", "/bulkenroll/v1/reseller/devices"): gen1_list,
    ("POST", "/bulkenroll/v1/reseller/customers"): gen1_customers,
    ("POST", "/bulkenroll/v1/reseller/resellers"): gen1_resellers,
}
