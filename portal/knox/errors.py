"""Knox error bodies turned into typed exceptions, and Knox codes turned into sentences staff understand.

Knox answers errors in four shapes (knox-api.md §2.5, §3.10, §4.10, §5.5):
- KDP / auth JSON:      {"code": 40000011, "message": "CUSTOMER_ID_INVALID", "data": "...", "errorId": "..."}
- Knox Guard JSON:      {"result": "FAIL", "error": {"code": "4000310", "message": "...", "reason": "..."}}
- OAuth JSON:           {"error": "invalid_client", "error_description": "..."}
- E-FOTA XML:           <error><code>FUD_1001</code><message/><resource>...</resource></error>
Codes arrive as numbers or strings; both are normalised to strings.
"""

from __future__ import annotations

import json
from typing import Any

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

# Sentences for the codes knox-api.md lists. Keys are the code as a string.
EXPLANATIONS: dict[str, str] = {
    # Authentication (knox-api.md §2.5)
    "4000000": "Knox refused a parameter of the request as invalid.",
    "4002250": "Knox saw the same signed token twice; the portal signs a new one and retries.",
    "4002251": "The requested token lifetime is not accepted by Knox.",
    "4010011": "The Samsung Account app is not authorised for this partner flow.",
    "4012250": "Knox rejected the access token: check the account's keys.json and Client Identifier (they must belong together and to this region).",
    "40122050": "Knox rejected the access token: check the account's keys.json and Client Identifier (they must belong together and to this region).",
    "4032251": "The Knox access token expired; the portal renews it automatically.",
    "4030000": "Knox could not read the token; this is usually a wrong clock on this server (check NTP).",
    # KDP (knox-api.md §3.10)
    "2000000": "Accepted by Knox.",
    "40000004": "Knox says this device ID is not valid (wrong IMEI/serial, or not a Samsung device Knox knows).",
    "40000011": "The customer ID is not valid for this reseller; refresh the customer list from Knox.",
    "40000044": "This device is not registered to this customer under your reseller account, so it cannot be deleted: it belongs to another customer, or your reseller account never uploaded it.",
    "40300000": "This Knox account is not authorised for the service; ask Samsung to enable API access for it.",
    "40400001": "Knox does not know this reseller ID; check the account's reseller ID.",
    "50000000": "Knox had an internal error; the portal retries later.",
    "4002101": "The reseller ID is missing from the request; set it on the Knox account.",
    "4042104": "Knox does not know this customer; refresh the customer list from Knox.",
    "4092100": "This device is already registered in Knox (to your account or another reseller's).",
    # Knox Guard (knox-api.md §4.10)
    "4010000": "Knox Guard rejected the credentials (invalid key or token, or a restriction mismatch).",
    "4002102": "The API key's IP/referrer restriction is badly formatted.",
    "4042101": "The API key has no IP/referrer restriction set.",
    "4040100": "No Knox user is linked to this key.",
    "4040900": "No Knox Guard tenant is linked to this key.",
    "4040300": "Knox Guard has no device with this identifier.",
    "4000310": "The device's current Knox Guard state does not allow this action.",
    "4000316": "Too many devices in one bulk request for Knox Guard.",
    "4040400": "Knox Guard could not find an internal profile for this request.",
    "4001809": "No Knox Guard licence is left to activate this device.",
    "4001802": "The trial licence limit has been reached.",
    "4001805": "A licence with this name already exists.",
    "4001806": "The device is already registered with a licence.",
    "4001812": "The licence has been deleted.",
    "4001813": "The licence is registered in the other region (EU/US).",
    "4041800": "Knox Guard cannot find the licence.",
    "5001804": "Knox Guard could not reach its licence server; try again later.",
    # E-FOTA (knox-api.md §5.5)
    "FUD_1001": "The E-FOTA mdmId is missing or longer than 50 bytes.",
    "FUD_1002": "The E-FOTA customer ID is missing or longer than 50 bytes.",
    "FUD_1003": "The E-FOTA group ID is missing or longer than 50 bytes.",
    "FUD_1004": "The E-FOTA licence is missing or longer than 100 bytes.",
    # OAuth
    "invalid_client": "The OAuth client ID or secret is wrong.",
    "invalid_request": "Knox rejected the token request as malformed.",
    "invalid_scope": "The OAuth scopes requested are not granted to this client.",
}

# Codes that mean "the token is bad or stale": renew it once and retry once (knox-api.md §2.2 DECISION).
TOKEN_RENEW_CODES = frozenset({"4012250", "40122050", "4032251", "4030000", "4010000"})

STATUS_SENTENCES = {
    400: "Knox refused the request as invalid.",
    401: "Knox did not accept the credentials.",
    403: "This Knox account is not allowed to do that.",
    404: "Knox could not find what was asked for.",
    406: "Knox cannot answer in the requested format.",
    422: "The request exceeds a Knox limit.",
    429: "Knox is rate-limiting this account; the portal slows down and retries.",
    500: "Knox had an internal error.",
    501: "Knox does not implement this call.",
    502: "Knox's gateway failed; the portal retries.",
    503: "Knox is temporarily unavailable; the portal retries.",
    504: "Knox timed out; the portal retries.",
}


class KnoxError(Exception):
    """Any failure talking to Knox. Carries what the user needs to act: code, message, detail, status."""

    retryable = False
    # True when the connection was never made, so Knox cannot have received the request.
    never_sent = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        detail: str = "",
        error_id: str = "",
        service: str = "",
        transaction_id: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = str(code) if code is not None else ""
        self.detail = detail
        self.error_id = error_id
        self.service = service
        self.transaction_id = transaction_id

    def explain(self) -> str:
        """One sentence for the person in front of the screen."""
        return explain(self.code, status=self.status, fallback=self.message)

    def __str__(self) -> str:
        parts = [self.explain()]
        tech = " ".join(p for p in (self.code, self.message if self.message != self.explain() else "") if p)
        if tech:
            parts.append(f"[{tech}]")
        if self.detail and self.detail != self.message:
            parts.append(f"({self.detail})")
        return " ".join(parts)


class KnoxAuthError(KnoxError):
    """401/403, or a token request refused."""


class KnoxRateLimited(KnoxError):
    retryable = True

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class KnoxServerError(KnoxError):
    """5xx from Knox."""

    retryable = True


class KnoxUnavailable(KnoxError):
    """No usable answer: connection refused or reset, timeout."""

    retryable = True


class KnoxOutcomeUnknown(KnoxUnavailable):
    """A call that changes state may or may not have been applied (reset after sending, read timeout) and is
    not safe to repeat blindly. The caller must check Knox's state before trying again."""

    retryable = False


class KnoxBadResponse(KnoxError):
    """Knox answered 2xx with a body that is not what the documentation describes (HTML, truncated, hostile XML)."""


class KnoxNotConfigured(KnoxError):
    """The account lacks what this call needs; nothing was sent."""


def explain(code: str | int | None, *, status: int | None = None, fallback: str = "") -> str:
    code = "" if code is None else str(code)
    if code in EXPLANATIONS:
        return EXPLANATIONS[code]
    if code.startswith("FUD_3"):
        return f"E-FOTA could not process the request ({code}); check the group, licence and devices."
    if code.startswith("FUD_9"):
        return f"E-FOTA had a service error ({code}); the portal retries later."
    if status in STATUS_SENTENCES:
        return STATUS_SENTENCES[status]
    return fallback or "Knox answered with an unexpected error."


def _error_class(status: int) -> type[KnoxError]:
    if status == 429:
        return KnoxRateLimited
    if status in (401, 403):
        return KnoxAuthError
    if status >= 500:
        return KnoxServerError
    return KnoxError


def parse_error_body(body: bytes, content_type: str = "") -> dict[str, str]:
    """Extract code/message/detail/error_id from any of Knox's error shapes; empty values when unknown."""
    found = {"code": "", "message": "", "detail": "", "error_id": ""}
    text = body[:65536]
    stripped = text.lstrip()
    if stripped.startswith(b"<") and not stripped[:15].lower().startswith((b"<!doctype", b"<html")):
        try:
            root = SafeET.fromstring(text)
        except (SafeET.ParseError, DefusedXmlException, ValueError):
            return found
        if root.tag == "error":
            found["code"] = (root.findtext("code") or "").strip()
            found["message"] = (root.findtext("message") or "").strip()
            found["detail"] = (root.findtext("resource") or "").strip()
        return found
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return found
    if not isinstance(data, dict):
        return found
    if isinstance(data.get("error"), dict):  # Knox Guard
        err = data["error"]
        found["code"] = str(err.get("code") or "")
        found["message"] = str(err.get("message") or "")
        found["detail"] = str(err.get("reason") or "")
    elif isinstance(data.get("error"), str):  # OAuth
        found["code"] = data["error"]
        found["message"] = str(data.get("error_description") or "")
    else:  # KDP / auth
        found["code"] = str(data.get("code") or "")
        found["message"] = str(data.get("message") or "")
        detail = data.get("data")
        found["detail"] = detail if isinstance(detail, str) else (json.dumps(detail) if detail else "")
        found["error_id"] = str(data.get("errorId") or "")
    return found


def error_from_response(
    status: int,
    body: bytes,
    *,
    content_type: str = "",
    service: str = "",
    transaction_id: str = "",
    retry_after: float | None = None,
) -> KnoxError:
    parsed = parse_error_body(body, content_type)
    message = parsed["message"] or f"HTTP {status}"
    cls = _error_class(status)
    kwargs: dict[str, Any] = dict(
        status=status,
        code=parsed["code"],
        detail=parsed["detail"],
        error_id=parsed["error_id"],
        service=service,
        transaction_id=transaction_id,
    )
    if cls is KnoxRateLimited:
        return KnoxRateLimited(message, retry_after=retry_after, **kwargs)
    return cls(message, **kwargs)


# --- which failures a retry can fix ---------------------------------------------------------------------------
# A device's failure is permanent when sending the same request again gets the same answer; the reason is what
# "Retry the failed devices" says about the devices it leaves out. Everything else (Knox unreachable, a 5xx or
# 429, an answer lost, not sent, another job busy on the device, an outcome never read) is transient: a retry
# may succeed. Codes from knox-api.md §3.10 (KDP) and §4.10 (Knox Guard); STATE is the portal's own refusal of an
# action the device's recorded state does not allow.
ALREADY_EXISTS = "already registered in Knox"
NOT_FOUND = "unknown to Knox"
WRONG_STATE = "in a state that does not allow the action"
WRONG_CUSTOMER = "registered to another customer, or not by this reseller"
INVALID = "refused as not valid"
PERMANENT: dict[str, str] = {
    "4092100": ALREADY_EXISTS,  # KDP RESELLER_DEVICE_ALREADY_EXISTS (another reseller's, or another customer's)
    "4001806": ALREADY_EXISTS,  # Knox Guard: already registered with a licence
    "40000004": INVALID,  # KDP DEVICE_INVALID: not a Samsung device Knox knows, or a duplicate in the request
    "4000000": INVALID,  # a parameter Knox refused (e.g. an unknown profile alias)
    "40000044": WRONG_CUSTOMER,  # KDP RESELLER_CUSTOMER_DEVICE_NOT_FOUND on delete
    "4040300": NOT_FOUND,  # Knox Guard has no device with this identifier
    "4000310": WRONG_STATE,  # Knox Guard refused the action in the device's state
    "STATE": WRONG_STATE,  # refused by the portal before sending, for the same reason
}


def why_not_retryable(code: str) -> str:
    """Why sending a device's failed request again cannot help ("" when it can)."""
    return PERMANENT.get(str(code or ""), "")


def is_retryable(code: str) -> bool:
    return not why_not_retryable(code)


def retry_breakdown(codes: dict[str, int]) -> tuple[int, list[tuple[str, int]]]:
    """From failed devices counted by code: how many a retry can fix, and the others by reason (most first)."""
    retryable = 0
    left_out: dict[str, int] = {}
    for code, n in codes.items():
        reason = why_not_retryable(code)
        if reason:
            left_out[reason] = left_out.get(reason, 0) + n
        else:
            retryable += n
    return retryable, sorted(left_out.items(), key=lambda kv: (-kv[1], kv[0]))
