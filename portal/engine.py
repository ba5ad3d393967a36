"""The one Knox request engine: a request to Knox is recorded, sent, followed and applied here, for every service.

A service job (KDP transfer, Knox Guard bulk action, Knox Guard upload, E-FOTA force update) splits its devices
into requests of at most Knox's per-call limit. Each request is a row of a concrete subclass of `KnoxRequest`
(kdp.Transaction, guard.GuardChunk, guard.GuardUpload, efota.ForceUpdate) and its life is:

    PREPARED ──start_sending──▶ SENDING ──mark_submitted──▶ SUBMITTED ──(poll)──▶ COMPLETE / REJECTED
        │                          │  ▲                                           ▲
        │                          │  └─unsend (the connection was never made)  │
        │                          └── settle: read Knox, then SUBMITTED, back to PREPARED, or FAILED "UNKNOWN"
        └── end(FAILED, "NOT_SENT") when the job cannot go on (credentials refused, patience run out)

Why an abstract model and not one concrete table: each service keeps per-request fields Knox needs to receive
again (KDP's customer and profile alias, E-FOTA's licence and model, Guard's action), and their pages and admin
already read those tables. The shared part is the columns and transitions below and the driver `drive()`; the
`duplicates` tool keeps the service modules from growing their own copies again.

The invariants, for every service (tests/portal/test_engine.py checks each of them against each service):
1. Recorded before sent: a request is a committed row before Knox sees it; SENDING is committed before the call.
2. Never sent twice: a request found SENDING (the answer was lost, or the worker died mid-call) is settled by
   reading Knox (`Protocol.lookup`) before anything else; it is sent again only when Knox provably does not have
   it, or when the protocol is repeatable (Knox applies one transactionId once).
3. Resumable after kill -9 at any point: the driver's next step is read from the rows, never from memory.
4. A request whose fate is unknown is settled by reading Knox before it is reported failed or sent again.

Knox outages: a request that meets "Knox unreachable" (connection refused, 5xx or 429 past the HTTP layer's own
bounded retries) does not fail the job. The job records that it is waiting (Job.waiting_since / next_try_at, shown
live on its page), tries again with backoff for KNOX_OUTAGE_PATIENCE seconds, then resumes where it was. Only when
the patience runs out are the unsent requests ended NOT_SENT and the unsettled ones UNKNOWN, with the reason.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any, ClassVar

from django.conf import settings
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from portal.knox import errors
from portal.models import Job
from portal.workers import check_lease

logger = logging.getLogger(__name__)

NOT_SENT = "NOT_SENT"
UNKNOWN = "UNKNOWN"
# Outage backoff: the first retry after this long, doubling up to the cap (a minute: an outage usually lasts
# minutes, and staff watching the page see the next try time move).
OUTAGE_FIRST_WAIT_SECONDS = 2.0
OUTAGE_MAX_WAIT_SECONDS = 60.0
# The longest a driver sleeps between two looks at its rows (the lease is renewed in between).
MAX_NAP_SECONDS = 5.0


class KnoxRequest(models.Model):
    """One request to Knox carrying some of a job's devices, and where it stands (see the module docstring).
    Subclasses add `job` (with their own related name) and what their service needs to send the request again."""

    class State(models.TextChoices):
        PREPARED = "prepared", "Prepared"
        SENDING = "sending", "Being sent"
        SUBMITTED = "submitted", "Sent, in progress at Knox"
        COMPLETE = "complete", "Complete"
        REJECTED = "rejected", "Rejected by Knox"
        FAILED = "failed", "Not accepted"

    TERMINAL: ClassVar[tuple[str, ...]] = (State.COMPLETE, State.REJECTED, State.FAILED)

    sequence = models.PositiveIntegerField(default=1, help_text="Order of the request within its job.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PREPARED)
    device_count = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    knox_code = models.CharField(max_length=20, blank=True)
    knox_message = models.TextField(blank=True)
    # Committed just before the first send: from then on Knox may have the request (invariant 2).
    send_attempted_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    polls = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL

    def _move(self, from_states: Iterable[str], **fields: Any) -> bool:
        """Change this request's row only if it is still in one of `from_states` (a resumed worker, or a second
        driver, finds it moved and does nothing); mirror the change on the instance."""
        n = type(self).objects.filter(pk=self.pk, state__in=list(from_states)).update(**fields)
        if n:
            for name, value in fields.items():
                if not hasattr(value, "resolve_expression"):
                    setattr(self, name, value)
        return n == 1

    def start_sending(self) -> bool:
        """PREPARED → SENDING, committed before the call (the caller is not inside a transaction)."""
        return self._move([self.State.PREPARED], state=self.State.SENDING, send_attempted_at=timezone.now())

    def unsend(self) -> bool:
        """SENDING → PREPARED: the connection was never made, so Knox cannot have the request."""
        return self._move([self.State.SENDING], state=self.State.PREPARED)

    def mark_submitted(self, first_poll_in: float, **fields: Any) -> bool:
        """SENDING → SUBMITTED: Knox has the request; its result is read `first_poll_in` seconds from now."""
        now = timezone.now()
        return self._move(
            [self.State.SENDING],
            state=self.State.SUBMITTED,
            submitted_at=now,
            next_poll_at=now + timedelta(seconds=first_poll_in),
            **fields,
        )

    def poll_later(self, seconds: float, **fields: Any) -> None:
        """Knox is still working on it: read it again in `seconds`."""
        self._move(
            [self.State.SUBMITTED],
            polls=F("polls") + 1,
            next_poll_at=timezone.now() + timedelta(seconds=seconds),
            **fields,
        )
        self.polls += 1

    def end(
        self, state: str, *, succeeded: int = 0, failed: int = 0, code: str = "", message: str = "", **fields: Any
    ) -> bool:
        """→ a terminal state, with the request's device counts. Call it inside the transaction that records the
        devices' outcomes; False (nothing changed) when another worker ended it first."""
        assert state in self.TERMINAL
        if code:
            fields["knox_code"] = code[:20]
        if message:
            fields["knox_message"] = message
        return self._move(
            [self.State.PREPARED, self.State.SENDING, self.State.SUBMITTED],
            state=state,
            succeeded=succeeded,
            failed=failed,
            completed_at=timezone.now(),
            **fields,
        )


@dataclass(frozen=True)
class Timings:
    """How a service's requests are followed after sending."""

    first_poll: float  # seconds after sending before the first status read
    backoff: float  # each later read waits this much longer than the previous one
    max_interval: float  # ... up to this
    timeout: float  # after this long submitted without a result, the request ends UNKNOWN

    def interval(self, polls: int) -> float:
        return min(self.max_interval, self.first_poll * self.backoff ** (polls + 1))


class Absent:
    """`Protocol.lookup`'s answer when Knox provably does not have the request."""


ABSENT = Absent()


class Protocol(ABC):
    """What a service supplies to the driver. Every method except `plan` and `finish` gets one request.

    - `send(req)`: send it; raise KnoxError when Knox refuses. Return the answer when it is already the result
      (a synchronous call), else None and the driver polls.
    - `poll(req)`: Knox's result, or None when Knox is still working on it.
    - `lookup(req)`: after a lost answer, what Knox has under this request: its result (or any truthy value
      when Knox has it but has not finished), ABSENT, or None when Knox cannot tell (then it ends UNKNOWN).
    - `apply(req, result)`: record every device's outcome and call `req.end(...)`, in one transaction.
    - `fail(req, state, code, message, detail)`: every still-pending device of `req` fails with the reason, and
      `req.end(state, ...)`, in one transaction.
    - `finish(summary)`: the job's own ending (release devices, recount) then `job.finish(summary)`; the summary
      is "" or why the job could not go on (`summary_of`).
    - `plan_steps()`, optional: plan the requests a few at a time (see `Planning`); by default `plan` makes
      them all at once. `send_spacing()`, optional: the seconds the rate limiter leaves between two sends.
    """

    model: type[KnoxRequest]
    client_class: type  # the service's Knox client, made on first use as `self.client`
    timings = Timings(first_poll=0.5, backoff=1.5, max_interval=15.0, timeout=1800)
    # Knox applies a request once per transactionId, so sending it again is harmless.
    repeatable = False
    # Codes that refuse every request of the job the same way (a bad customer, credentials): the rest is not sent.
    job_level_codes: frozenset[str] = frozenset()

    def __init__(self, job: Job, owner: str = "") -> None:
        self.job = job
        self.owner = owner

    @cached_property
    def client(self) -> Any:
        return self.client_class(self.job.account)

    def requests(self) -> models.QuerySet[Any]:
        return self.model.objects.filter(job=self.job)

    @abstractmethod
    def plan(self) -> None: ...

    def plan_steps(self) -> Iterator[object]:
        """Plan the job's requests, yielding after each commit of one or more of them; resumable (a job planned in
        part by a worker that died is planned on from where it stopped, never twice). By default all at once,
        the first time the job runs."""
        if not self.requests().exists():
            self.plan()
        yield from ()

    def send_spacing(self) -> float:
        """Seconds between two sends at the service's paced rate (0: not paced, or unknown): the time a planning
        step may use after a send without making the next send late."""
        return 0.0

    @abstractmethod
    def send(self, req: Any) -> Any: ...

    @abstractmethod
    def poll(self, req: Any) -> Any: ...

    def lookup(self, req: Any) -> Any:
        return None

    @abstractmethod
    def apply(self, req: Any, result: Any) -> None: ...

    @abstractmethod
    def fail(self, req: Any, state: str, code: str, message: str, detail: str = "") -> None: ...

    @abstractmethod
    def finish(self, summary: str) -> None: ...

    def refused_state(self, e: errors.KnoxError) -> str:
        """The state a request Knox refused ends in."""
        return KnoxRequest.State.FAILED

    def is_job_level(self, e: errors.KnoxError) -> bool:
        return e.code in self.job_level_codes or isinstance(e, errors.KnoxAuthError)

    def not_yet(self, e: errors.KnoxError, req: Any) -> bool:
        """Whether a refused status read means "not known yet" (the service answers 404 while processing)."""
        return False


def is_outage(e: errors.KnoxError) -> bool:
    """Knox did not answer usefully (down, overloaded, rate-limiting past our retries): wait, do not fail."""
    return isinstance(e, errors.KnoxUnavailable | errors.KnoxServerError | errors.KnoxRateLimited) and not isinstance(
        e, errors.KnoxOutcomeUnknown
    )


def outage_patience() -> float:
    return float(settings.KNOX_OUTAGE_PATIENCE)


class Outage:
    """The job's wait for Knox to come back: recorded on the job (its page says so live), with backoff, bounded by
    KNOX_OUTAGE_PATIENCE from the first failure of this outage."""

    def __init__(self, job: Job, owner: str) -> None:
        self.job = job
        self.owner = owner
        self.tries = 0

    def wait(self, e: errors.KnoxError) -> None:
        """Sleep until the next try, renewing the lease; re-raise `e` when the patience is spent."""
        now = timezone.now()
        since = self.job.waiting_since or now
        if (now - since).total_seconds() >= outage_patience():
            raise e
        pause = min(OUTAGE_MAX_WAIT_SECONDS, OUTAGE_FIRST_WAIT_SECONDS * 2**self.tries)
        pause = min(pause, max(0.0, outage_patience() - (now - since).total_seconds()))
        self.tries += 1
        self.job.wait_for_knox(e.explain(), since=since, next_try_at=now + timedelta(seconds=pause))
        logger.warning("job %s: Knox unreachable (%s); next try in %.0f s", self.job.pk, e, pause)
        nap(self.job, self.owner, pause)

    def over(self) -> None:
        if self.tries or self.job.waiting_since is not None:
            self.tries = 0
            self.job.knox_back()


def nap(job: Job, owner: str, seconds: float) -> None:
    """Sleep, renewing the lease at least three times per lease period (LeaseLost stops the driver)."""
    step = max(min(settings.JOB_LEASE_SECONDS / 3, MAX_NAP_SECONDS), 0.01)
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(step, left))
        job.heartbeat(owner)


def drive(job: Job, owner: str, protocol: Protocol) -> None:
    """Run a job's requests to the end: plan them once, then repeat one step at a time, each read from the rows.

    Order of a step: settle a request found SENDING; send the next PREPARED one (every request is sent before any
    is polled: they share the rate limit, and a request polled while later ones are sent is usually still in
    progress); poll the one due first; else sleep until one is due. The job ends through `protocol.finish`.

    A step that could not reach Knox (an outage error, or a second lost answer in a row) waits with backoff
    (`Outage`); the wait ends only when a later step hears from Knox.

    Planning overlaps sending (`Planning`): the first request is planned and committed before anything is sent,
    and the rest are planned between sends, so the first request leaves at once instead of after the whole plan.
    """
    protocol.owner = owner
    planning = Planning(protocol)
    planning.advance()
    outage = Outage(job, owner)
    job_error: errors.KnoxError | None = None
    lost_in_a_row = 0
    while True:
        job.heartbeat(owner)
        try:
            step = _step(protocol, job_error, planning)
            if step.lost is not None:
                lost_in_a_row += 1
                if lost_in_a_row > 1:  # answers keep getting lost: treat it as Knox being away
                    raise step.lost
                continue
        except errors.KnoxError as e:
            if not (is_outage(e) or isinstance(e, errors.KnoxOutcomeUnknown | errors.KnoxBadResponse)):
                raise
            try:
                outage.wait(e)
            except errors.KnoxError:
                end_unfinished(protocol, e.explain(), planning)
                protocol.finish(summary_of(e))
                raise
            continue
        if step.heard:  # only an answer from Knox ends a run of lost answers, or an outage
            lost_in_a_row = 0
            outage.over()
        job_error = job_error or step.refusal
        if not step.more:
            break
    protocol.finish(summary_of(job_error))


def summary_of(error: errors.KnoxError | None) -> str:
    """Why a job could not send everything: Knox refused the whole request, or stayed unreachable."""
    if error is None:
        return ""
    if is_outage(error) or isinstance(error, errors.KnoxOutcomeUnknown | errors.KnoxBadResponse):
        return str(error)
    return f"Knox refused the request: {error.explain()}" + (f" [{error.code}]" if error.code else "")


class Planning:
    """A job's requests as they are planned, a step at a time, interleaved with sending.

    Why: planning 100 KDP chunks of 1,000 devices takes seconds of database work; planned all at once it left
    Knox idle that long before the first request. Each step commits whole requests (a request is a committed row
    before it can be sent: invariant 1), and the protocol's planner skips what is already planned, so a resumed
    worker plans on where the dead one stopped (invariant 3).

    When: a step runs when nothing is ready to send, or when it fits before the next send slot (the last send
    plus the service's spacing, with the last step's duration as the estimate), so planning uses the time the
    rate limiter leaves between sends and does not make a send late. Requests are still all sent before any is
    polled (see `drive`).
    """

    def __init__(self, protocol: Protocol) -> None:
        self.steps = protocol.plan_steps()
        self.spacing = protocol.send_spacing()
        self.done = False
        self.took = 0.0  # seconds the last step took: the estimate of the next one
        self.next_send_at = 0.0  # time.monotonic() of the next send slot, as far as this driver knows

    def advance(self) -> bool:
        """Plan the next request(s); False (and `done`) when everything is planned."""
        if self.done:
            return False
        started = time.monotonic()
        self.done = next(self.steps, _PLANNED) is _PLANNED
        self.took = time.monotonic() - started
        return not self.done

    def finish(self) -> None:
        """Plan everything still unplanned (the job ends early: every device must get its outcome)."""
        while not self.done:
            self.advance()

    def sending(self) -> None:
        """A send starts now: the next one cannot leave before one spacing from now."""
        self.next_send_at = time.monotonic() + self.spacing

    def step_now(self, can_send: bool) -> bool:
        """Whether the next step plans: nothing can be sent, or a planning step fits before the next send slot."""
        if self.done:
            return False
        return not can_send or time.monotonic() + self.took <= self.next_send_at


_PLANNED = object()


@dataclass
class Step:
    """What one step of `drive` did."""

    more: bool = True  # anything left to do
    heard: bool = False  # Knox answered (a result, a refusal, "not yet"): an outage is over
    refusal: errors.KnoxError | None = None  # a job-level refusal: the rest is not sent
    lost: errors.KnoxError | None = None  # the answer was lost: the request stays SENDING, to be settled


def _step(protocol: Protocol, job_error: errors.KnoxError | None, planning: Planning) -> Step:
    reqs = protocol.requests()
    S = KnoxRequest.State
    sending = reqs.filter(state=S.SENDING).order_by("sequence").first()
    if sending is not None:
        return Step(heard=_settle(protocol, sending))
    prepared = reqs.filter(state=S.PREPARED).order_by("sequence").first()
    if planning.step_now(can_send=prepared is not None and job_error is None):
        planning.advance()
        return Step()
    if prepared is not None:
        if job_error is not None:
            protocol.fail(prepared, S.FAILED, job_error.code or NOT_SENT, f"not sent: {job_error.explain()}")
            return Step()
        planning.sending()
        return _send(protocol, prepared)
    due = reqs.filter(state=S.SUBMITTED, next_poll_at__lte=timezone.now()).order_by("next_poll_at").first()
    if due is not None:
        _poll(protocol, due)
        return Step(heard=True)
    waiting = reqs.filter(state=S.SUBMITTED).order_by("next_poll_at").values_list("next_poll_at", flat=True).first()
    if waiting is None:
        return Step(more=False)
    nap(protocol.job, protocol.owner, min(max((waiting - timezone.now()).total_seconds(), 0.05), MAX_NAP_SECONDS))
    return Step()


def _send(protocol: Protocol, req: KnoxRequest) -> Step:
    if not req.start_sending():
        return Step()  # another driver moved it
    check_lease()  # nothing is sent by a worker whose job was taken over
    try:
        answer = protocol.send(req)
    except (errors.KnoxOutcomeUnknown, errors.KnoxBadResponse) as e:
        return Step(lost=e)  # stays SENDING: the next step reads Knox before anything else (invariant 4)
    except errors.KnoxError as e:
        if is_outage(e):
            if e.never_sent or isinstance(e, errors.KnoxRateLimited):
                req.unsend()  # the connection was never made, or a 429 refused it before processing
            raise  # stays SENDING otherwise: settled by reading Knox once it is back
        protocol.fail(req, protocol.refused_state(e), e.code or f"HTTP{e.status}", e.explain(), e.detail)
        return Step(heard=True, refusal=e if protocol.is_job_level(e) else None)
    req.mark_submitted(protocol.timings.first_poll)
    if answer is not None:
        protocol.apply(req, answer)
    return Step(heard=True)


def _settle(protocol: Protocol, req: KnoxRequest) -> bool:
    """A request whose answer was lost (or whose worker died mid-call): read Knox before anything else.
    Returns whether Knox was heard from."""
    if protocol.repeatable:
        req.unsend()  # Knox applies its transactionId once: sending it again is the way to learn its fate
        return False
    found = protocol.lookup(req)
    if found is ABSENT:
        req.unsend()
    elif found is None:
        protocol.fail(
            req,
            KnoxRequest.State.FAILED,
            UNKNOWN,
            "sent, but Knox's answer was lost and Knox cannot tell whether it arrived; check before repeating it",
        )
        return False
    else:
        req.mark_submitted(0)
        if found is not True:
            _apply_if_done(protocol, req, found)
    return True


def _apply_if_done(protocol: Protocol, req: KnoxRequest, result: Any) -> None:
    if getattr(result, "is_terminal", True):
        protocol.apply(req, result)


def _poll(protocol: Protocol, req: KnoxRequest) -> None:
    try:
        result = protocol.poll(req)
    except errors.KnoxError as e:
        if is_outage(e) or not protocol.not_yet(e, req):
            raise
        result = None
    if result is not None:
        protocol.apply(req, result)
        return
    age = (timezone.now() - (req.submitted_at or timezone.now())).total_seconds()
    if age > protocol.timings.timeout:
        protocol.fail(
            req,
            KnoxRequest.State.FAILED,
            UNKNOWN,
            f"Knox did not report the result within {int(protocol.timings.timeout // 60)} minutes; check with Reconcile",
        )
        return
    req.poll_later(protocol.timings.interval(req.polls))


def end_unfinished(protocol: Protocol, reason: str, planning: Planning | None = None) -> None:
    """Knox stayed away past the patience: requests never sent (planned now if they were not yet, so every device
    gets its outcome) end NOT_SENT; sent ones whose result is unread, and ones that may have reached Knox, end
    UNKNOWN (a retry of a KDP upload is safe; Reconcile tells)."""
    if planning is not None:
        planning.finish()
    S = KnoxRequest.State
    for req in protocol.requests().filter(state=S.PREPARED):
        protocol.fail(req, S.FAILED, NOT_SENT, f"not sent: {reason}")
    for req in protocol.requests().filter(state__in=(S.SENDING, S.SUBMITTED)):
        protocol.fail(req, S.FAILED, UNKNOWN, f"sent, but Knox's result could not be read: {reason}")


def record_outcomes(job: Job, req: KnoxRequest, state: str, succeeded: int, failed: int, **fields: Any) -> bool:
    """End `req` and add its counts to the job's, in the caller's transaction; False when it was ended already."""
    assert transaction.get_connection().in_atomic_block
    if not req.end(state, succeeded=succeeded, failed=failed, **fields):
        return False
    job.add_progress(succeeded=succeeded, failed=failed)
    return True
