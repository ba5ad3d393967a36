"""Lookups: reads from Knox that a page asks for (a licence, a firmware list, a connection test, Knox Guard's
upload list), made by a worker as a job, never while a web request waits.

Why: one Knox call may take KNOX_READ_TIMEOUT times (KNOX_MAX_RETRIES + 1) plus back-off when Knox accepts the
connection and never answers (five minutes with the defaults; three times that for Test connection, which asks
three services). Inside a web request that held the request and, under gunicorn's timeout, killed the worker
process: one slow Knox blocked the whole site. A worker can wait; a page must not.

How a lookup goes:
1. The page's POST validates its form as before, then `queue_lookup(kind, ...)`: a Job row holding the inputs in
   `params` (never secrets), handed to django-q2 once the transaction commits. The POST answers at once: with
   htmx, the page's fragment including `portal/_lookup.html`; without JavaScript, a redirect to the page that
   asked, opened with `?job=<pk>` (`Lookup.page`), which shows the same region and is reloaded by hand.
2. The region is the shared progress fragment (`portal/_job_progress.html`, polled by `portal.views.job_progress`,
   which fires the `jobFinished` htmx event when the job ends) and a result region that fetches
   `portal:lookup_result` once, on `jobFinished`. Both only read the database.
3. A worker runs `run_lookup(job_pk)` under `portal.tasks.run_job` (the lease; a KnoxError that escapes ends the
   job failed with Knox's explanation). It calls the kind's `run(job, owner)`, which makes the Knox calls,
   records what the service records for that read (its call log, its own rows, an audit event naming the job's
   `created_by`), stores the JSON-able answer with `job.set_result(...)` and reports progress; a refusal is stored
   in the answer too (so the page can show Knox's sentence and code) and ends the job failed.
4. `portal:lookup_result` renders `Lookup.template` from `job.result`, after checking that the job is a lookup and
   that the user holds `Lookup.perm`, the permission that lets them ask for it: a viewer cannot read a
   connection test through it, and no other kind of job is rendered by it.

Portal never imports kdp, guard or efota: each service app registers its lookups here in AppConfig.ready (as
`portal.uploads.register_row_check` does), naming its function by dotted path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.utils.module_loading import import_string
from django.views.decorators.debug import sensitive_variables

from portal.models import Job, KnoxAccount
from portal.tasks import run_job

TASK = "portal.lookups.run_lookup"


@dataclass(frozen=True)
class Lookup:
    kind: str  # Job.kind, e.g. "efota.firmware"
    run: str  # dotted path of `run(job: Job, owner: str) -> None`: the Knox calls, run in a worker
    perm: str  # who may ask for it and read its answer, e.g. "portal.access_portal"
    template: str  # renders the answer from `result` (and `job`), e.g. "efota/firmware.html#firmware-answer"
    page: Callable[[Job], str]  # the URL of the page that asks, opened on this job (`?job=<pk>`)
    unit: str = ""  # what the progress counters count ("Devices", "Services"); "" hides them (one call)


LOOKUPS: dict[str, Lookup] = {}


def register_lookup(lookup: Lookup) -> None:
    LOOKUPS[lookup.kind] = lookup


def queue_lookup(
    kind: str, *, account: KnoxAccount, user: Any, params: dict[str, Any], title: str, total: int = 1
) -> Job:
    """Create the lookup's job and queue it (on commit). `total` is how many things its progress counts."""
    if kind not in LOOKUPS:
        raise ValueError(f"{kind!r} is not a registered lookup")
    job = Job.objects.create(
        kind=kind,
        account=account,
        created_by=user if getattr(user, "pk", None) else None,
        params=params,
        title=title,
        total=total,
    )
    job.enqueue(TASK)
    return job


def get_lookup_for_user(request: HttpRequest, pk: int, kind: str = "") -> tuple[Job, Lookup]:
    """A lookup job and its registration, for a view: 404 unless the job is a lookup (of `kind`, when given), 403
    unless the user holds the permission that lets them ask for that kind. (Here rather than with the other
    `_get_<obj>_for_user` helpers in portal/views.py because every service app's views use it.)"""
    job = get_object_or_404(Job.objects.select_related("account", "created_by"), pk=pk)
    lookup = LOOKUPS.get(job.kind)
    if lookup is None or (kind and job.kind != kind):
        raise Http404("No such lookup")
    if not request.user.has_perm(lookup.perm):
        raise PermissionDenied
    return job, lookup


def lookup_context(request: HttpRequest, kind: str, job: Job | None = None) -> dict[str, Any]:
    """What a page's lookup region (portal/_lookup.html) needs: the job just queued, or the one the page was
    opened on (`?job=<pk>`, after a POST without JavaScript; checked by get_lookup_for_user); {} when there is
    none."""
    from portal.forms import LookupForm

    if job is None:
        form = LookupForm(request.GET)
        if not form.is_valid() or form.cleaned_data["job"] is None:
            return {}
        job, lookup = get_lookup_for_user(request, form.cleaned_data["job"], kind)
    else:
        lookup = LOOKUPS[job.kind]
    return {"lookup_job": job, "lookup": lookup, "lookup_page": lookup.page(job)}


def run_lookup(job_pk: int) -> None:
    """The django-q2 task of every lookup."""
    run_job(job_pk, _run)


def _run(job: Job, owner: str) -> None:
    lookup = LOOKUPS[job.kind]  # a job of another kind here is a bug: run_job ends it failed and re-raises
    import_string(lookup.run)(job, owner)


# --- portal's own lookup: Test connection ---------------------------------------------------------------------

CONNECTION_TEST = "portal.connection_test"


def queue_connection_test(account: KnoxAccount, *, user: Any) -> Job:
    """Test connection, as a job: the account page and the admin action queue it."""
    from portal.knox.checks import services_to_check

    tried = sum(1 for service in services_to_check(account) if not account.missing_credentials(service))
    return queue_lookup(
        CONNECTION_TEST, account=account, user=user, params={}, title=f"Test connection of {account}", total=tried
    )


@sensitive_variables()
def connection_test(job: Job, owner: str) -> None:
    """Mint a token and make one harmless read per service set up; store the outcome on the account, audit it.

    Each service's outcome counts as one succeeded or failed step (skipped services are not counted), so the job
    ends succeeded, partially failed or failed as the services did."""
    from portal.knox.checks import ServiceCheck, check_connection
    from portal.models import AuditEvent

    account = job.account
    assert account is not None  # queue_connection_test always sets it

    def progress(check: ServiceCheck) -> None:
        if check.ok is not None:
            job.add_progress(succeeded=1 if check.ok else 0, failed=0 if check.ok else 1)
        job.heartbeat(owner)

    results = [
        {"service": r.service, "label": r.label, "ok": r.ok, "message": r.message, "code": r.code}
        for r in check_connection(account, progress=progress)
    ]
    tried = [r for r in results if r["ok"] is not None]
    ok = bool(tried) and all(r["ok"] for r in tried)
    account.record_test(ok, "\n".join(f"{r['label']}: {r['message']}" for r in results))
    AuditEvent.objects.record(
        "account.test_connection",
        actor=job.created_by,
        target=account,
        summary={
            "ok": ok,
            "job": job.pk,
            "results": [{"service": r["service"], "ok": r["ok"], "code": r["code"]} for r in results],
        },
    )
    job.set_result({"ok": ok, "results": results})
    failures = "; ".join(f"{r['label']}: {r['message']}" for r in tried if not r["ok"])
    job.finish(failures if tried else "No Knox service is set up on this account: nothing was tested.")
