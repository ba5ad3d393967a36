"""The one way the portal talks to Knox: `KnoxSession(account).request(service, method, path, ...)`.

What every call gets:
- a pooled `requests.Session` per account and process, with connect/read timeouts from settings;
- credentials for the service (portal.knox.auth), renewed once and retried once on a 401 (or a 403 whose code
  says the token is bad or expired);
- a transaction id (32 hex characters unless the caller passes its own) in every log line, sent as the
  `x-knox-transactionId` header only to Knox Guard, the one API that documents it (seed 003; knox-api.md §4.1);
- pacing under the service's rate limit, shared by every process (portal.knox.ratelimit);
- bounded retries with exponential backoff and full jitter on 429, 500, 502, 503, 504 and connection errors,
  honouring `Retry-After`;
- a log line with method, path, status, duration, Knox code and transaction id, and never a header or body;
- a 2xx answer whose body is not what Knox sends (an HTML page from a proxy, JSON cut short, XML with entity
  declarations) is a failed attempt: retried like a 503 when the call is idempotent, `KnoxOutcomeUnknown` when
  it is not, and `KnoxBadResponse` once the retries are spent. It never reaches a parser unchecked.

Which calls are retried (the `idempotent` flag the caller passes):
- idempotent=True: reads (status, lists, customers, aliases, authorization, transaction results), token
  requests, and KDP uploads/deletes, which carry a transactionId the portal generated and stored before the
  first attempt, so Knox treats a repeat as the same transaction. These retry on 429, 500/502/503/504,
  connection errors and timeouts.
- idempotent=False: Knox Guard device actions and E-FOTA writes, where a repeat of an applied action fails
  (state invalid) or acts twice. These retry only when Knox cannot have processed the request: a 429 (refused
  before processing), a connection that could not be opened. Any other failure after the request left raises
  `KnoxOutcomeUnknown`, and the job checks the device's state before it tries again.
A 429 never uses up one of the KNOX_MAX_RETRIES attempts; it has its own, larger bound.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import requests
from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException
from django.conf import settings

from portal.knox import errors
from portal.knox.auth import authenticator_for
from portal.knox.ratelimit import RateLimiter, limit_for
from portal.workers import check_lease

if TYPE_CHECKING:
    from portal.models import KnoxAccount

logger = logging.getLogger("portal.knox")

# Answers that say "not now" rather than "no": 429, and the server failures. A 500 is Knox's generic
# INTERNAL_SERVER_ERROR (50000000), transient in practice; repeating an idempotent call after it is safe.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "knox-reseller-portal/0.1"
# A response body larger than this is refused rather than read into memory.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

_local = threading.local()


# Knox Guard documents the x-knox-transactionId header (seed 003); KDP carries its transactionId in the body,
# and neither E-FOTA nor the token endpoints mention one, so they get none.
TRANSACTION_HEADER_SERVICES = frozenset({"guard"})


def _session_for(account_pk: int) -> requests.Session:
    """One pooled session per account and thread (requests.Session is not documented as thread-safe)."""
    sessions: dict[int, requests.Session] = getattr(_local, "sessions", None) or {}
    _local.sessions = sessions
    s = sessions.get(account_pk)
    if s is None:
        s = requests.Session()
        s.headers["User-Agent"] = USER_AGENT
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=8, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        sessions[account_pk] = s
    return s


def new_transaction_id() -> str:
    return uuid.uuid4().hex


@dataclass
class KnoxResponse:
    status: int
    body: bytes
    headers: dict[str, str]
    service: str
    transaction_id: str
    duration_ms: float
    attempts: int = 1
    _json: Any = field(default=None, repr=False)
    # The body as decode_body() parsed it (a dict/list for JSON, an Element for XML), None for an empty body.
    decoded: Any = field(default=None, repr=False)

    def json(self) -> Any:
        if self._json is None and isinstance(self.decoded, (dict, list)):
            self._json = self.decoded
        if self._json is None:
            try:
                self._json = json.loads(self.body) if self.body else None
            except (ValueError, UnicodeDecodeError):
                raise errors.KnoxBadResponse(
                    "Knox answered with something that is not JSON (an HTML error page or a cut-off body)",
                    status=self.status,
                    service=self.service,
                    transaction_id=self.transaction_id,
                    detail=self.body[:200].decode("utf-8", "replace"),
                ) from None
        return self._json

    def json_object(self) -> dict[str, Any]:
        doc = self.json()
        if not isinstance(doc, dict):
            raise errors.KnoxBadResponse(
                "Knox answered with JSON of an unexpected shape",
                status=self.status,
                service=self.service,
                transaction_id=self.transaction_id,
            )
        return doc


def decode_body(body: bytes, content_type: str) -> Any:
    """The parsed body of a 2xx answer (JSON or XML, by content type); raise KnoxBadResponse when it is not a Knox
    answer. Knox answers JSON (KDP, Knox Guard, tokens) or XML (E-FOTA); never HTML."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if not body.strip():
        return None
    if kind in ("text/html", "application/xhtml+xml") or body.lstrip()[:15].lower().startswith(
        (b"<!doctype", b"<html")
    ):
        raise errors.KnoxBadResponse(
            "Knox answered with a web page (HTML) instead of data; a proxy or maintenance page"
        )
    if kind.endswith("xml"):
        try:
            return SafeET.fromstring(body)
        except (SafeET.ParseError, DefusedXmlException, ValueError):
            raise errors.KnoxBadResponse(
                "Knox answered with XML that is cut off or declares entities; it was not read"
            ) from None
    if kind.endswith("json") or body.lstrip()[:1] in (b"{", b"["):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise errors.KnoxBadResponse("Knox answered with JSON that is cut off or malformed") from None
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """Parse Retry-After (seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; Retry-After, when given, is the floor."""
    cap = min(settings.KNOX_BACKOFF_MAX, settings.KNOX_BACKOFF_BASE * (2**attempt))
    delay = random.uniform(0, cap)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.KNOX_BACKOFF_MAX))
    return delay


class KnoxSession:
    """Calls Knox for one account. Cheap to create; the pooled connection is reused per thread."""

    def __init__(self, account: KnoxAccount, *, sleep: Any = time.sleep) -> None:
        self.account = account
        self.sleep = sleep
        self._limiters: dict[str, RateLimiter] = {}

    def limiter(self, service: str) -> RateLimiter:
        if service not in self._limiters:
            self._limiters[service] = RateLimiter(f"{self.account.pk}:{service}", limit_for(service))
        return self._limiters[service]

    def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool,
        transaction_id: str | None = None,
        authenticate: bool = True,
        ok_statuses: tuple[int, ...] = (),
    ) -> KnoxResponse:
        """Send one logical call, with the retries its idempotency allows; raise a KnoxError on failure."""
        missing = self.account.missing_credentials(service) if service != "auth" else []
        if missing:
            raise errors.KnoxNotConfigured(
                f"{self.account} cannot call {service}: it still needs {', '.join(missing)}", service=service
            )
        url = self.account.base_url(service) + path
        transaction_id = transaction_id or new_transaction_id()
        auth = authenticator_for(self.account, service) if authenticate else None
        renewed = False
        failures = 0  # 5xx / connection / timeout attempts
        maybe_sent = False  # an earlier attempt may have reached Knox (it answered, or the connection broke)
        throttled = 0  # 429 attempts, bounded separately
        attempts = 0
        while True:
            attempts += 1
            send_headers = dict(headers or {})
            if service in TRANSACTION_HEADER_SERVICES:
                send_headers.setdefault("x-knox-transactionId", transaction_id)
            if auth is not None:
                send_headers.update(auth.headers(self))
            if service != "auth":
                self.limiter(service).acquire()
            # A job's worker that lost its lease (another worker took the job over) sends nothing more.
            check_lease()
            started = time.monotonic()
            try:
                raw = _session_for(self.account.pk).request(
                    method,
                    url,
                    json=json,
                    data=data,
                    params=params,
                    headers=send_headers,
                    timeout=(settings.KNOX_CONNECT_TIMEOUT, settings.KNOX_READ_TIMEOUT),
                    stream=True,
                )
                body = self._read_body(raw)
            except requests.RequestException as e:
                duration = (time.monotonic() - started) * 1000
                never_sent = not maybe_sent and (
                    isinstance(e, requests.ConnectTimeout) or (isinstance(e, requests.ConnectionError) and _refused(e))
                )
                maybe_sent = maybe_sent or not never_sent
                self._log(method, path, service, None, duration, "", transaction_id, attempts, type(e).__name__)
                if (idempotent or never_sent) and failures < settings.KNOX_MAX_RETRIES:
                    failures += 1
                    self.sleep(backoff_delay(failures))
                    continue
                cls = errors.KnoxUnavailable if (idempotent or never_sent) else errors.KnoxOutcomeUnknown
                reason = _describe_transport_error(e)
                if cls is errors.KnoxOutcomeUnknown:
                    reason += "; the request may have reached Knox, so it is not repeated blindly"
                err = cls(reason, service=service, transaction_id=transaction_id)
                err.never_sent = never_sent  # portal.engine: Knox cannot have a request never sent
                raise err from None
            duration = (time.monotonic() - started) * 1000
            status = raw.status_code
            resp_headers = {k.lower(): v for k, v in raw.headers.items()}
            if 200 <= status < 300:
                try:
                    decoded = decode_body(body, resp_headers.get("content-type", ""))
                except errors.KnoxBadResponse as bad:
                    self._log(method, path, service, status, duration, "BAD_BODY", transaction_id, attempts)
                    if idempotent and failures < settings.KNOX_MAX_RETRIES:
                        failures += 1
                        self.sleep(backoff_delay(failures))
                        continue
                    if not idempotent:
                        raise errors.KnoxOutcomeUnknown(
                            f"{bad}; the request may have reached Knox, so it is not repeated blindly",
                            status=status,
                            service=service,
                            transaction_id=transaction_id,
                            detail=body[:200].decode("utf-8", "replace"),
                        ) from None
                    raise errors.KnoxBadResponse(
                        f"{bad} ({attempts} attempts)",
                        status=status,
                        service=service,
                        transaction_id=transaction_id,
                        detail=body[:200].decode("utf-8", "replace"),
                    ) from None
                self._log(method, path, service, status, duration, "", transaction_id, attempts)
                resp = KnoxResponse(status, body, resp_headers, service, transaction_id, duration, attempts)
                resp.decoded = decoded
                return resp
            if status in ok_statuses:
                self._log(method, path, service, status, duration, "", transaction_id, attempts)
                return KnoxResponse(status, body, resp_headers, service, transaction_id, duration, attempts)

            err = errors.error_from_response(
                status,
                body,
                content_type=resp_headers.get("content-type", ""),
                service=service,
                transaction_id=transaction_id,
                retry_after=retry_after_seconds(resp_headers.get("retry-after")),
            )
            self._log(method, path, service, status, duration, err.code, transaction_id, attempts)
            if auth is not None and not renewed and _token_refused(err):
                renewed = True
                auth.renew()
                continue
            if status == 429 and throttled < settings.KNOX_MAX_RATE_LIMITED_RETRIES:
                throttled += 1
                self.sleep(backoff_delay(min(throttled, 4), getattr(err, "retry_after", None)))
                continue
            maybe_sent = True  # a 5xx may have been applied (a 429 or a refused token was not)
            if status in RETRY_STATUSES and status != 429 and idempotent and failures < settings.KNOX_MAX_RETRIES:
                failures += 1
                self.sleep(backoff_delay(failures, retry_after_seconds(resp_headers.get("retry-after"))))
                continue
            if status in RETRY_STATUSES and status != 429 and not idempotent:
                raise errors.KnoxOutcomeUnknown(
                    f"Knox answered HTTP {status} to a call that is not repeated blindly; check the result before trying again",
                    status=status,
                    code=err.code,
                    service=service,
                    transaction_id=transaction_id,
                )
            raise err

    def _read_body(self, raw: requests.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in raw.iter_content(65536):
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise errors.KnoxBadResponse(f"Knox's answer is larger than {MAX_RESPONSE_BYTES} bytes")
                chunks.append(chunk)
        finally:
            raw.close()
        return b"".join(chunks)

    def _log(
        self,
        method: str,
        path: str,
        service: str,
        status: int | None,
        duration_ms: float,
        code: str,
        transaction_id: str,
        attempt: int,
        failure: str = "",
    ) -> None:
        logger.info(
            "knox %s %s %s account=%s status=%s duration_ms=%.0f code=%s txn=%s attempt=%d%s",
            service,
            method,
            path,
            self.account.pk,
            status if status is not None else "-",
            duration_ms,
            code or "-",
            transaction_id,
            attempt,
            f" error={failure}" if failure else "",
        )


def _token_refused(err: errors.KnoxError) -> bool:
    return err.status == 401 or (err.status == 403 and err.code in errors.TOKEN_RENEW_CODES)


def _refused(e: requests.ConnectionError) -> bool:
    """True when the TCP connection was never established (nothing reached Knox)."""
    text = repr(e)
    return "NewConnectionError" in text or "Connection refused" in text or "Name or service not known" in text


def _describe_transport_error(e: requests.RequestException) -> str:
    if isinstance(e, requests.ConnectTimeout):
        return "Knox did not accept the connection in time"
    if isinstance(e, requests.ReadTimeout):
        return "Knox did not answer in time"
    if isinstance(e, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return "Knox's answer was cut off"
    if isinstance(e, requests.ConnectionError):
        return "The connection to Knox failed (refused or reset)" if _refused(e) else "The connection to Knox was reset"
    return f"The request to Knox failed ({type(e).__name__})"
