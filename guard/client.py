"""Knox Guard v1.1 calls (knox-api.md §4) on portal.knox's HTTP layer, and the checks made before any call.

Every action is described once in ACTIONS: the endpoint, the states it is allowed from (seed 003), the state
the device moves to, whether it needs the Guard-control permission and a typed confirmation. Validation of the
parameters follows seed 003's field rules and says what is wrong in words.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from guard.constants import (
    KG_APPROVE_COMMENT_MAX_LENGTH,
    KG_APPROVE_ID_MAX_LENGTH,
    KG_ASYNC_MAX_DEVICES,
    KG_BLINK_INTERVAL_MAX,
    KG_BLINK_INTERVAL_MIN,
    KG_BLINK_STOP_ACTION,
    KG_CONSOLE_LABELS,
    KG_CONTACT_REQUIRED,
    KG_MAX_PAGE_SIZE,
    KG_MESSAGE_MAX_LENGTH,
    KG_UPLOAD_MAX_DEVICES,
)
from portal.knox.http import KnoxSession

if TYPE_CHECKING:
    from portal.models import KnoxAccount


@dataclass(frozen=True)
class ActionSpec:
    name: str
    label: str
    endpoint: str  # POST /devices/<endpoint>, and /devices/<endpoint>Async for bulk
    allowed_from: tuple[str, ...]
    becomes: str | None  # the state right after Knox accepts it; None = unchanged; "" = the device is gone
    needs_control: bool  # lock/unlock/complete/delete act on an end user's phone (portal.control_guard_devices)
    typed_confirmation: bool  # bulk "type LOCK 250 to confirm"
    uses_message: bool = False

    @property
    def allowed_label(self) -> str:
        """The states it is allowed from, as the Knox Guard console names them (staff never read API spellings)."""
        return ", ".join(KG_CONSOLE_LABELS.get(s, s) for s in self.allowed_from)

    @property
    def becomes_label(self) -> str:
        return KG_CONSOLE_LABELS.get(self.becomes or "", self.becomes or "")


ACTIONS: dict[str, ActionSpec] = {
    a.name: a
    for a in (
        ActionSpec("approve", "Approve", "approve", ("Pending",), "Accepted", False, False),
        ActionSpec("reject", "Reject", "reject", ("Pending",), "Rejected", False, False),
        ActionSpec("lock", "Lock", "lock", ("Enrolled",), "Locking", True, True, uses_message=True),
        # Seed 003's state table: "Enrolled — … lock, unlock, send a message, or blink a device".
        ActionSpec("unlock", "Unlock", "unlock", ("Enrolled", "Locked"), "Unlocking", True, False),
        ActionSpec(
            "blink",
            "Start payment reminders",
            "blink",
            ("Enrolled",),
            "StartingReminder",
            False,
            False,
            uses_message=True,
        ),
        ActionSpec(
            "stop-blink", "Stop payment reminders", KG_BLINK_STOP_ACTION, ("Blinked",), "StoppingReminder", False, False
        ),
        ActionSpec(
            "message",
            "Send a message",
            "sendMessage",
            ("Enrolled", "Locked", "Blinked"),
            None,
            False,
            False,
            uses_message=True,
        ),
        ActionSpec(
            "complete",
            "Complete (release from Knox Guard)",
            "complete",
            ("Enrolled", "Locked", "Blinked"),
            "Completing",
            True,
            True,
        ),
        ActionSpec("delete", "Delete from Knox Guard", "delete", ("Rejected", "Completed"), "", True, True),
    )
}


class GuardValidationError(ValueError):
    """Parameters that Knox would refuse; `errors` maps a field name to a sentence."""

    def __init__(self, errors_by_field: dict[str, str]) -> None:
        super().__init__("; ".join(errors_by_field.values()))
        self.errors = errors_by_field


@dataclass
class ActionParams:
    """What an action may carry. Only the fields the action uses are sent."""

    message: str = ""
    email: str = ""
    tel: str = ""
    interval: int | None = None
    time_limit: tuple[int, int] | None = None  # quiet hours [from, to], 0..23
    days_limit: tuple[int, int] | None = None  # quiet days [from, to], 0 = Sunday .. 6 = Saturday
    approve_id: str = ""
    approve_comment: str = ""

    def summary(self) -> dict[str, Any]:
        """For job params and the audit log (contact details kept: staff must see what was shown on the phone)."""
        return {k: v for k, v in vars(self).items() if v not in ("", None)}


EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TEL_RE = re.compile(r"^\+?[0-9 ()./-]{3,30}$")


def validate(action: str, p: ActionParams) -> None:
    """Raise GuardValidationError for anything seed 003 (or our §6 q20 decision) says Knox refuses."""
    spec = ACTIONS[action]
    problems: dict[str, str] = {}
    if spec.uses_message:
        if not p.message.strip():
            problems["message"] = "A message is required: it is what the phone's user will read."
        elif len(p.message) > KG_MESSAGE_MAX_LENGTH:
            problems["message"] = (
                f"The message is {len(p.message)} characters; Knox Guard allows {KG_MESSAGE_MAX_LENGTH}."
            )
        if KG_CONTACT_REQUIRED and not (p.email.strip() or p.tel.strip()):
            problems["tel"] = "Give a phone number or an email address for the user to contact about the payment."
        if p.email and not EMAIL_RE.match(p.email.strip()):
            problems["email"] = "This email address does not look right."
        if p.tel and not TEL_RE.match(p.tel.strip()):
            problems["tel"] = "This phone number does not look right (digits, spaces, +, -, brackets)."
    if action == "blink":
        if p.interval is None:
            problems["interval"] = "Say how often the reminder repeats (seconds)."
        elif not KG_BLINK_INTERVAL_MIN <= p.interval <= KG_BLINK_INTERVAL_MAX:
            problems["interval"] = (
                f"The reminder interval must be between {KG_BLINK_INTERVAL_MIN} seconds and "
                f"{KG_BLINK_INTERVAL_MAX:,} seconds (24 hours); it is {p.interval:,}."
            )
        for name, pair, top, what in (
            ("time_limit", p.time_limit, 23, "hours (0-23)"),
            ("days_limit", p.days_limit, 6, "days (0 = Sunday … 6 = Saturday)"),
        ):
            if pair is not None and (len(pair) != 2 or any(not isinstance(v, int) or not 0 <= v <= top for v in pair)):
                problems[name] = f"The quiet period needs exactly two {what}."
        if p.days_limit is not None and p.time_limit is None:
            problems["time_limit"] = "Quiet days also need the quiet hours (Knox requires timeLimit with daysLimit)."
    if action == "approve":
        if len(p.approve_id) > KG_APPROVE_ID_MAX_LENGTH:
            problems["approve_id"] = (
                f"The approve ID is {len(p.approve_id)} characters; Knox Guard allows {KG_APPROVE_ID_MAX_LENGTH}."
            )
        if len(p.approve_comment) > KG_APPROVE_COMMENT_MAX_LENGTH:
            problems["approve_comment"] = (
                f"The comment is {len(p.approve_comment)} characters; Knox Guard allows {KG_APPROVE_COMMENT_MAX_LENGTH}."
            )
    if problems:
        raise GuardValidationError(problems)


@dataclass(frozen=True)
class DeviceRef:
    object_id: str = ""
    device_uid: str = ""
    approve_id: str = ""

    def identifier(self) -> dict[str, str]:
        """The one identifier to send: objectId wins over deviceUid, which wins over approveId (seed 003)."""
        for key, value in (
            ("objectId", self.object_id),
            ("deviceUid", self.device_uid),
            ("approveId", self.approve_id),
        ):
            if value:
                return {key: value}
        raise ValueError("a device needs an objectId, a deviceUid or an approveId")

    @property
    def requested_id(self) -> str:
        return next(iter(self.identifier().values()))


def action_body(action: str, ref: DeviceRef, p: ActionParams) -> dict[str, Any]:
    spec = ACTIONS[action]
    if action == "approve":
        # approve takes deviceUid only (seed 003), optionally with the approveId to assign.
        body: dict[str, Any] = {"deviceUid": ref.device_uid}
        if p.approve_id:
            body["approveId"] = p.approve_id
        if p.approve_comment:
            body["approveComment"] = p.approve_comment
        return body
    body = dict(ref.identifier())
    if spec.uses_message:
        body["message"] = p.message
        if p.email:
            body["email"] = p.email.strip()
        if p.tel:
            body["tel"] = p.tel.strip()
    if action == "blink":
        body["interval"] = p.interval
        body.update(quiet_flags(p))
    return body


def quiet_flags(p: ActionParams) -> dict[str, Any]:
    """The blink's quiet period exactly as chosen, in seed 003's two forms:
    - hours every day: `timeLimitEnable: true, daysLimitEnable: false, timeLimit: [23, 7], daysLimit: null`;
    - from a day and hour to a day and hour: `timeLimitEnable: false, daysLimitEnable: true, timeLimit: [6, 7],
      daysLimit: [0, 1]` (06:00 Sunday to 07:00 Monday)."""
    span = p.days_limit is not None
    return {
        "timeLimitEnable": p.time_limit is not None and not span,
        "daysLimitEnable": span,
        "timeLimit": list(p.time_limit) if p.time_limit is not None else None,
        "daysLimit": list(p.days_limit) if span else None,
    }


def async_body(action: str, items: Sequence[tuple[DeviceRef, ActionParams]]) -> dict[str, Any]:
    """An `…Async` body as public clients send it (knox-api.md §7): the synchronous body with `deviceUid` a list.
    Every device of one request shares the parameters (guard.tasks plans one request per set of parameters)."""
    shared = []
    for ref, p in items:
        body = action_body(action, ref, p)
        for key in {"deviceUid"} if action == "approve" else ref.identifier():
            body.pop(key)
        shared.append(body)
    if any(body != shared[0] for body in shared):
        raise ValueError("every device of one asynchronous request must share its parameters")
    return {**shared[0], "deviceUid": [ref.device_uid or ref.requested_id for ref, _ in items]}


@dataclass
class AsyncResult:
    transaction_id: str
    count: int
    success: int
    fail: int
    failures: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # requestedId -> (code, message, reason)


@dataclass
class ListedDevice:
    object_id: str
    device_uid: str
    approve_id: str
    state: str
    model: str = ""
    upload_id: str = ""


def parse_listed(item: dict[str, Any]) -> ListedDevice:
    # devices/list names them id, imei or serial, approveId (knox-api.md §4.2).
    return ListedDevice(
        object_id=str(item.get("id") or item.get("objectId") or ""),
        device_uid=str(item.get("imei") or item.get("serial") or item.get("deviceUid") or ""),
        approve_id=str(item.get("approveId") or ""),
        state=str(item.get("state") or ""),
        model=str(item.get("model") or ""),
        upload_id=str(item.get("uploadId") or ""),
    )


class GuardClient:
    service = "guard"

    def __init__(self, account: KnoxAccount, session: KnoxSession | None = None) -> None:
        self.account = account
        self.session = session or KnoxSession(account)

    def authorization(self) -> dict[str, Any]:
        return self.session.request(self.service, "GET", "/authorization", idempotent=True).json_object()

    def act(self, action: str, ref: DeviceRef, p: ActionParams, *, transaction_id: str) -> dict[str, Any]:
        """One device, synchronously. Not idempotent: a repeat of an applied action fails (state invalid)."""
        validate(action, p)
        path = f"/devices/{ACTIONS[action].endpoint}"
        body = action_body(action, ref, p)
        return self.session.request(
            self.service, "POST", path, json=body, idempotent=False, transaction_id=transaction_id
        ).json_object()

    def act_async(self, action: str, items: Sequence[tuple[DeviceRef, ActionParams]], *, transaction_id: str) -> None:
        """Many devices in one request; its result is fetched with `result()`. Safe to repeat: Knox keys it on the
        x-knox-transactionId, and the same id with the same body is not applied twice."""
        if len(items) > KG_ASYNC_MAX_DEVICES:
            raise ValueError(f"at most {KG_ASYNC_MAX_DEVICES} devices per asynchronous request")
        for _, p in items:
            validate(action, p)
        body = async_body(action, items)
        path = f"/devices/{ACTIONS[action].endpoint}Async"
        self.session.request(self.service, "POST", path, json=body, idempotent=True, transaction_id=transaction_id)

    def result(self, transaction_id: str) -> AsyncResult:
        doc = self.session.request(
            self.service, "POST", "/transaction", json={"transactionId": transaction_id}, idempotent=True
        ).json_object()
        failures = {}
        for entry in doc.get("resultList") or []:
            if not isinstance(entry, dict) or str(entry.get("result", "")).upper() == "SUCCESS":
                continue
            err = entry.get("error") or {}
            failures[str(entry.get("requestedId") or "")] = (
                str(err.get("code") or ""),
                str(err.get("message") or ""),
                str(err.get("reason") or ""),
            )
        return AsyncResult(
            transaction_id=transaction_id,
            count=int(doc.get("count") or 0),
            success=int(doc.get("success") or 0),
            fail=int(doc.get("fail") or 0),
            failures=failures,
        )

    def list_devices(
        self, page: int = 0, size: int = KG_MAX_PAGE_SIZE, search: str = ""
    ) -> tuple[int, list[ListedDevice]]:
        body: dict[str, Any] = {"pageNum": page, "pageSize": size}
        if search:
            body["search"] = search
        doc = self.session.request(self.service, "POST", "/devices/list", json=body, idempotent=True).json_object()
        items = doc.get("deviceList") or doc.get("devices") or []
        return int(doc.get("totalCount") or 0), [parse_listed(i) for i in items if isinstance(i, dict)]

    def iter_devices(self, page_size: int = KG_MAX_PAGE_SIZE) -> Iterator[ListedDevice]:
        page = 0
        while True:
            _, items = self.list_devices(page, page_size)
            yield from items
            if len(items) < page_size:  # a short page is the last one (seed 003, "Paging")
                return
            page += 1

    def find(self, device_uid: str) -> ListedDevice | None:
        # A substring search may return other devices first: read a full page and look for the exact match.
        _, items = self.list_devices(0, KG_MAX_PAGE_SIZE, search=device_uid)
        return next((d for d in items if device_uid in (d.device_uid, d.approve_id, d.object_id)), None)

    def upload(
        self, devices: Sequence[tuple[str, str]], flags: dict[str, bool], *, transaction_id: str
    ) -> dict[str, Any]:
        """POST devices/uploads with at most KG_UPLOAD_MAX_DEVICES (deviceUid, approveId) pairs."""
        if len(devices) > KG_UPLOAD_MAX_DEVICES:
            raise ValueError(f"at most {KG_UPLOAD_MAX_DEVICES} devices per Knox Guard upload")
        body: dict[str, Any] = {
            "deviceList": [{"deviceUid": uid, **({"approveId": aid} if aid else {})} for uid, aid in devices]
        }
        body.update(
            {k: bool(flags.get(k)) for k in ("autoAccept", "autoLock", "applySimControl", "enableBlockFactoryReset")}
        )
        # Not idempotent: a repeated upload would register the devices again; the job checks before retrying.
        return self.session.request(
            self.service, "POST", "/devices/uploads", json=body, idempotent=False, transaction_id=transaction_id
        ).json_object()

    def uploads(self, page: int = 0, size: int = KG_MAX_PAGE_SIZE) -> dict[str, Any]:
        return self.session.request(
            self.service, "GET", "/devices/uploads", params={"pageNum": page, "pageSize": size}, idempotent=True
        ).json_object()


# --- per-device results of an upload: GET devices/uploads/{uploadId} (seed 003) -----------------------------------
# Here rather than on GuardClient because this part of the module is added at its end.

# Knox Guard's uploadStatus while it is still working on an upload: the only value seed 003 shows (in the answer to
# POST devices/uploads). The sandbox says "Complete" once done; any value other than this one is taken as final.
KG_UPLOAD_STATUS_PROGRESS = "Progress"
# Knox's per-device `result` words (the sandbox's, which follow the async resultList of POST /transaction).
_SUCCESS_WORDS = frozenset({"SUCCESS", "SUCCEEDED", "VALID", "OK"})
_FAILURE_WORDS = frozenset({"FAIL", "FAILED", "FAILURE", "INVALID", "ERROR"})


@dataclass(frozen=True)
class UploadDeviceResult:
    device_uid: str
    approve_id: str
    outcome: str  # "succeeded", "failed", or "unknown" when Knox's answer says neither
    result: str  # Knox's own word, as sent (SUCCESS, FAIL, ...)
    code: str
    message: str
    reason: str


@dataclass
class UploadResults:
    upload_id: str
    status: str  # Knox's status of the upload: Progress, then Complete
    devices: list[UploadDeviceResult] = field(default_factory=list)

    @property
    def in_progress(self) -> bool:
        return self.status.strip().lower() == KG_UPLOAD_STATUS_PROGRESS.lower()


def parse_upload_device(item: dict[str, Any]) -> UploadDeviceResult:
    """One entry of `devices`. Seed 003 shows the list collapsed (`"devices": [+ {...}]`), so its members are the
    sandbox's: deviceUid, approveId, result (SUCCESS/FAIL) and, on a failure, reason. An `error` object with
    code/message/reason, the shape of every other Knox Guard per-device result (knox-api.md §4.9), is read too;
    devices/list's imei/serial naming (§4.2) stands in for deviceUid."""
    err = item.get("error") if isinstance(item.get("error"), dict) else {}
    word = str(item.get("result") or item.get("status") or "").strip()
    code = str(err.get("code") or item.get("code") or item.get("errorCode") or "")
    reason = str(err.get("reason") or item.get("reason") or "")
    if word.upper() in _SUCCESS_WORDS:
        outcome = "succeeded"
    elif word.upper() in _FAILURE_WORDS or (not word and (code or reason)):
        outcome = "failed"
    else:
        outcome = "unknown"
    return UploadDeviceResult(
        device_uid=str(item.get("deviceUid") or item.get("imei") or item.get("serial") or "")[:50],
        approve_id=str(item.get("approveId") or "")[:50],
        outcome=outcome,
        result=word[:20],
        code=code[:20],
        message=str(err.get("message") or item.get("message") or "")[:100],
        reason=reason[:400],
    )


def upload_results_page(client: GuardClient, upload_id: str, page: int, size: int) -> dict[str, Any]:
    """One page of GET devices/uploads/{uploadId}: {"result", "status", "devices": [...]} (seed 003)."""
    return client.session.request(
        client.service,
        "GET",
        f"/devices/uploads/{upload_id}",
        params={"pageNum": page, "pageSize": size},
        idempotent=True,
    ).json_object()


def upload_results(client: GuardClient, upload_id: str, page_size: int = KG_MAX_PAGE_SIZE) -> UploadResults:
    """Knox Guard's per-device results of one upload, every page (a short page is the last, seed 003 "Paging").

    While Knox still reports the upload in Progress only the first page is read: its list may not be complete, and
    the caller asks again later. A device listed twice is kept once. At most KG_UPLOAD_MAX_DEVICES devices are read
    (one upload holds no more), so a server that ignored pageNum could not keep this reading for ever.
    """
    results = UploadResults(upload_id=upload_id, status="")
    seen: set[str] = set()
    for page in range(KG_UPLOAD_MAX_DEVICES // page_size + 1):
        doc = upload_results_page(client, upload_id, page, page_size)
        if page == 0:
            results.status = str(doc.get("status") or "")[:20]
        items = [i for i in doc.get("devices") or [] if isinstance(i, dict)]
        for item in items:
            device = parse_upload_device(item)
            if device.device_uid and device.device_uid not in seen:
                seen.add(device.device_uid)
                results.devices.append(device)
        if results.in_progress or len(items) < page_size:
            break
    return results
