from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRefresh, trigger_client_event
from django_htmx.middleware import HtmxDetails

from portal import forms, uploads
from portal.dashboard import render_panels
from portal.knox import errors
from portal.lists import list_context
from portal.lookups import CONNECTION_TEST, LOOKUPS, get_lookup_for_user, lookup_context, queue_connection_test
from portal.models import AuditEvent, Job, KnoxAccount, Upload, UploadRow, UserSettings
from portal.words import action_label, kind_label

logger = logging.getLogger(__name__)


class PortalRequest(HttpRequest):
    user: AbstractBaseUser | AnonymousUser
    htmx: HtmxDetails


ACCESS = "portal.access_portal"
QUEUE = "portal.queue_jobs"
MANAGE_ACCOUNTS = "portal.manage_accounts"


def require_perm(perm: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """403 unless the logged-in user holds `perm` (LoginRequiredMiddleware has already sent anonymous users to
    the login page)."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perm(perm):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        wrapped.required_perm = perm  # type: ignore[attr-defined]  # read by the URL-walking access test
        return wrapped

    return decorator


def get_job_for_user(request: HttpRequest, pk: int, kinds: Iterable[str] | None = None) -> Job:
    """The job `pk` for every page that shows or acts on one (portal, kdp, guard, efota); 404 when it does not
    exist or, with `kinds`, is not of one of them (KDP's pages show KDP's jobs only)."""
    jobs = Job.objects.select_related("account", "created_by")
    if kinds is not None:
        jobs = jobs.filter(kind__in=kinds)
    return get_object_or_404(jobs, pk=pk)


def refused(request: HttpRequest, problem: str, to: str, *args: Any) -> HttpResponse:
    """Nothing was queued or changed: say why (`problem`, words the user can act on) on the page `to` (a URL name
    with `args`, or a URL) the user is sent back to."""
    messages.error(request, problem)
    return redirect(to, *args)


def queued(request: HttpRequest, job: Job, text: str = "") -> HttpResponse:
    """A job was queued: say so (`text`, or its number and title) and open its page."""
    messages.success(request, text or f"Job #{job.pk} queued: {job.title}.")
    return redirect(job.get_absolute_url())


def follow_up(
    request: HttpRequest,
    job: Job,
    read: Job | None,
    created: bool,
    *,
    region: tuple[str, Callable[[], dict[str, Any]]],
    nothing: str,
    asking: str,
    already: str,
) -> HttpResponse:
    """After a button that queues a `read` of Knox for `job` (a force update's status, an upload's per-device
    results; one at a time per job). htmx gets `region` again, (template partial, its context), which follows the
    read. Without JavaScript, `job`'s page says what happened: `nothing` to read (`read` is None), `asking` (queued
    now) or `already` (one was pending), formatted with `read` and `parts`, its count in words."""
    if request.htmx:
        template, context = region
        return render(request, template, context())
    parts = f"{read.total} part{'s' if read.total != 1 else ''}" if read is not None else ""
    if read is None:
        messages.info(request, nothing)
    elif created:
        messages.success(request, asking.format(read=read, parts=parts))
    else:
        messages.info(request, already.format(read=read, parts=parts))
    return redirect(job.get_absolute_url())


def _get_account_for_user(request: PortalRequest, pk: int) -> KnoxAccount:
    return get_object_or_404(KnoxAccount, pk=pk)


# --- health -------------------------------------------------------------------------------------------------


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the task queue answer, 503 otherwise (for load balancers and monitors)."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        checks["database"] = "ok"
    except Exception as e:
        logger.warning("healthz: database check failed: %s", type(e).__name__)
        checks["database"] = f"error: {type(e).__name__}"
    try:
        from django_q.brokers import get_broker

        checks["queue"] = "ok" if get_broker().ping() else "error: no answer"
    except Exception as e:
        logger.warning("healthz: queue check failed: %s", type(e).__name__)
        checks["queue"] = f"error: {type(e).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503)


# --- dashboard and jobs -------------------------------------------------------------------------------------


@require_perm(ACCESS)
@require_GET
@vary_on_headers("HX-Request")
def dashboard(request: PortalRequest) -> HttpResponse:
    recent = list(Job.objects.select_related("account", "created_by")[:10])
    ctx = {
        "recent_jobs": recent,
        "jobs_polling": any(not job.is_finished for job in recent),
        # Knox jobs only: reading a spreadsheet is not a Knox job, and a refused file is counted on its own.
        "job_counts": dict(Job.objects.knox_jobs().values_list("status").annotate(n=Count("id")).order_by()),
        "files_refused": Job.objects.files_read().filter(status=Job.Status.REFUSED).count(),
        "accounts": KnoxAccount.objects.filter(is_active=True),
        "recent_events": AuditEvent.objects.select_related("actor")[:8],
    }
    if request.htmx:
        return render(request, "portal/dashboard.html#recent-jobs", ctx)
    ctx["panels"] = render_panels(request)
    return render(request, "portal/dashboard.html", ctx)


JOBS_PAGE_SIZE = 50


@require_perm(ACCESS)
@require_GET
def jobs(request: PortalRequest) -> HttpResponse:
    """Every job, newest first: filters and search in the URL, paged by an id cursor (`before`), with the total."""
    form = forms.JobFilterForm(request.GET)
    qs = Job.objects.select_related("account", "created_by").order_by("-id")
    before = None
    if form.is_valid():
        data = form.cleaned_data
        if data["kind"]:
            qs = qs.filter(kind__startswith=data["kind"])
        if data["status"]:
            qs = qs.filter(status=data["status"])
        if data["q"]:
            qs = qs.filter(title__icontains=data["q"])
        before = data["before"]
    else:
        qs = qs.none()
    page = list((qs.filter(id__lt=before) if before else qs)[: JOBS_PAGE_SIZE + 1])
    more = len(page) > JOBS_PAGE_SIZE
    page = page[:JOBS_PAGE_SIZE]
    ctx = {
        "form": form,
        "page": page,
        "kinds": [(k, kind_label(k)) for k in Job.objects.values_list("kind", flat=True).distinct().order_by("kind")],
        **list_context(request, qs, singular="job", cursor="before", next_value=page[-1].pk if more else None),
    }
    return render(request, "portal/jobs.html", ctx)


@require_perm(ACCESS)
@require_GET
@vary_on_headers("HX-Request")
def job_detail(request: PortalRequest, pk: int) -> HttpResponse:
    job = get_job_for_user(request, pk)
    if job.get_absolute_url() != request.path:
        return redirect(job.get_absolute_url())  # the service app's own page shows per-device results
    ctx = {"job": job, "can_cancel": request.user.has_perm(QUEUE) and job.status == Job.Status.QUEUED}
    return render(request, "portal/job_detail.html", ctx)


@require_perm(ACCESS)
@require_GET
@never_cache
def job_progress(request: PortalRequest, pk: int) -> HttpResponse:
    """The polled fragment. One query; 204 when the job has not changed since the version the browser has."""
    form = forms.JobPollForm(request.GET)
    seen = form.cleaned_data.get("v") if form.is_valid() else None
    job = get_object_or_404(Job.objects.only(*JOB_PROGRESS_FIELDS), pk=pk)
    if seen is not None and seen == job.version and not job.is_finished:
        return HttpResponse(status=204)
    response = render(request, "portal/_job_progress.html", {"job": job})
    if job.is_finished and request.htmx:
        # The last poll: tell other regions of the page (per-device results) to refresh once (rule E7).
        trigger_client_event(response, "jobFinished")
    return response


@require_perm(ACCESS)
@require_GET
@never_cache
def lookup_result(request: PortalRequest, pk: int) -> HttpResponse:
    """The answer of a lookup (portal.lookups), fetched by its page's result region once the job ends. Reads the
    database only. Without htmx, the page that asked for it, which shows the same region."""
    job, lookup = get_lookup_for_user(request, pk)
    if not request.htmx:
        return redirect(lookup.page(job))
    ctx = {"lookup_job": job, "lookup": lookup, "lookup_page": lookup.page(job)}
    return render(request, "portal/_lookup_result.html", ctx)


JOB_PROGRESS_FIELDS = (
    "id",
    "kind",
    "title",
    "status",
    "total",
    "succeeded",
    "failed",
    "version",
    "error_summary",
    "created_at",
    "started_at",
    "finished_at",
    "waiting_since",
    "waiting_reason",
    "next_try_at",
)


@require_perm(QUEUE)
@require_POST
def job_cancel(request: PortalRequest, pk: int) -> HttpResponse:
    job = get_job_for_user(request, pk)
    if job.cancel():
        AuditEvent.objects.record("job.cancel", request=request, target=job, summary={"kind": job.kind})
        messages.success(request, f"Job #{job.pk} was cancelled before it started.")
    else:
        messages.error(
            request, f"Job #{job.pk} is already {job.get_status_display().lower()}; only queued jobs can be cancelled."
        )
    return redirect("portal:job_detail", job.pk)


# --- audit --------------------------------------------------------------------------------------------------

AUDIT_PAGE_SIZE = 50


@require_perm(ACCESS)
@require_GET
def audit(request: PortalRequest) -> HttpResponse:
    """The audit log, newest first. Paged by an id cursor (`before`), never by OFFSET, and counted by
    portal.lists.total (exact while cheap, else an estimate), so it stays fast however long the log grows."""
    form = forms.AuditFilterForm(request.GET)
    qs = AuditEvent.objects.select_related("actor").order_by("-id")
    if form.is_valid():
        data = form.cleaned_data
        if data["actor"]:
            qs = qs.filter(actor_name__iexact=data["actor"])
        if data["action"]:
            qs = qs.filter(action__startswith=data["action"])
        start, end = form.bounds()
        if start:
            qs = qs.filter(created_at__gte=start)
        if end:
            qs = qs.filter(created_at__lt=end)
        if data["q"]:
            qs = qs.filter(Q(target_repr__icontains=data["q"]) | Q(target_id=data["q"]))
    else:
        qs = qs.none()
    filtered = qs
    if form.is_valid() and form.cleaned_data["before"]:
        qs = qs.filter(id__lt=form.cleaned_data["before"])
    events = list(qs[: AUDIT_PAGE_SIZE + 1])
    more = len(events) > AUDIT_PAGE_SIZE
    events = events[:AUDIT_PAGE_SIZE]
    ctx = {
        "form": form,
        "events": events,
        "actions": [
            (a, action_label(a))
            for a in AuditEvent.objects.values_list("action", flat=True).distinct().order_by("action")[:200]
        ],
        **list_context(
            request, filtered, singular="event", cursor="before", next_value=events[-1].pk if more else None
        ),
    }
    return render(request, "portal/audit.html", ctx)


# --- my settings --------------------------------------------------------------------------------------------


@require_perm(ACCESS)
@require_http_methods(["GET", "POST"])
def my_settings(request: PortalRequest) -> HttpResponse:
    """What the logged-in user chooses for themselves (email when a job they queued ends: portal.notify)."""
    current = UserSettings.for_user(request.user)
    # An unticked box posts nothing: an empty POST is still a submission.
    form = forms.UserSettingsForm(request.POST if request.method == "POST" else None, instance=current)
    if request.method == "POST" and form.is_valid():
        changed = {name: form.cleaned_data[name] for name in form.changed_data}
        form.save()
        if changed:
            AuditEvent.objects.record("user.settings", request=request, target=request.user, summary=changed)
        messages.success(request, "Your settings were saved.")
        return redirect("portal:my_settings")
    return render(request, "portal/my_settings.html", {"form": form})


# --- Knox accounts ------------------------------------------------------------------------------------------
# The views that handle credentials hide them from error reports: the secret POST fields, and every local variable
# of the view and of everything it calls (the form's cleaned data, keys.json, the Knox client's decrypted secrets).


@require_perm(ACCESS)
@require_GET
def accounts(request: PortalRequest) -> HttpResponse:
    ctx = {"accounts": KnoxAccount.objects.all(), "can_manage": request.user.has_perm(MANAGE_ACCOUNTS)}
    return render(request, "portal/accounts.html", ctx)


@require_perm(ACCESS)
@require_GET
def account_detail(request: PortalRequest, pk: int) -> HttpResponse:
    account = _get_account_for_user(request, pk)
    can_manage = request.user.has_perm(MANAGE_ACCOUNTS)
    ctx = {
        "account": account,
        "can_manage": can_manage,
        "urls": [(label, account.base_url(service)) for service, label in _services(account)],
        "keys_form": forms.KeysUploadForm() if can_manage else None,
        # Opened on a connection test (?job=<pk>) after "Test connection" without JavaScript: its progress and
        # answer (403 for whoever may not run the test).
        **lookup_context(request, CONNECTION_TEST),
    }
    if ctx.get("lookup_job") is not None and ctx["lookup_job"].account_id != account.pk:
        raise Http404("That connection test is another account's")
    return render(request, "portal/account_detail.html", ctx)


def _services(account: KnoxAccount) -> list[tuple[str, str]]:
    from portal.knox.hosts import SERVICE_LABELS

    return [(s, SERVICE_LABELS[s]) for s in (account.kdp_service(), "guard", "efota", "auth")]


@require_perm(MANAGE_ACCOUNTS)
@require_http_methods(["GET", "POST"])
@sensitive_post_parameters(*forms.KnoxAccountForm.SECRET_INPUTS)
@sensitive_variables()
def account_create(request: PortalRequest) -> HttpResponse:
    form = forms.KnoxAccountForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        account = form.save()
        AuditEvent.objects.record("account.create", request=request, target=account, summary=form.changed_summary())
        messages.success(request, f"Knox account “{account}” created.")
        return redirect("portal:account_detail", account.pk)
    return render(request, "portal/account_form.html", {"form": form, "account": None})


@require_perm(MANAGE_ACCOUNTS)
@require_http_methods(["GET", "POST"])
@sensitive_post_parameters(*forms.KnoxAccountForm.SECRET_INPUTS)
@sensitive_variables()
def account_edit(request: PortalRequest, pk: int) -> HttpResponse:
    account = _get_account_for_user(request, pk)
    form = forms.KnoxAccountForm(request.POST or None, request.FILES or None, instance=account)
    if request.method == "POST" and form.is_valid():
        account = form.save()
        AuditEvent.objects.record("account.update", request=request, target=account, summary=form.changed_summary())
        messages.success(request, f"Knox account “{account}” saved.")
        return redirect("portal:account_detail", account.pk)
    return render(request, "portal/account_form.html", {"form": form, "account": account})


@require_perm(MANAGE_ACCOUNTS)
@require_POST
@sensitive_variables()
def account_keys(request: PortalRequest, pk: int) -> HttpResponse:
    account = _get_account_for_user(request, pk)
    form = forms.KeysUploadForm(request.POST, request.FILES)
    if form.is_valid():
        account.set_keys(form.cleaned_data["keys_file"])
        account.save()
        AuditEvent.objects.record(
            "account.keys_upload", request=request, target=account, summary={"identifier": account.key_identifier}
        )
        messages.success(request, "keys.json stored (encrypted). Use “Test connection” to check it against Knox.")
    else:
        for error in form.errors.get("keys_file", []):
            messages.error(request, f"keys.json not stored: {error}")
    return redirect("portal:account_detail", account.pk)


@require_perm(MANAGE_ACCOUNTS)
@require_POST
def account_test(request: PortalRequest, pk: int) -> HttpResponse:
    """Queue a connection test (portal.lookups): the page follows its progress and shows the answer; the request
    never waits on Knox."""
    account = _get_account_for_user(request, pk)
    job = queue_connection_test(account, user=request.user)
    if request.htmx:
        ctx = {"account": account, **lookup_context(request, CONNECTION_TEST, job)}
        return render(request, "portal/account_detail.html#test-results", ctx)
    return redirect(LOOKUPS[CONNECTION_TEST].page(job))


def retry_context(job: Job, failed_by_code: dict[str, int]) -> dict[str, Any]:
    """What a finished job's page says about "Retry the failed devices" (templates/portal/_retry_note.html): how
    many failures a retry can fix (portal.knox.errors.is_retryable), and why the others are left out."""
    retryable, left_out = errors.retry_breakdown(failed_by_code) if job.is_finished else (0, [])
    return {"retryable": retryable, "left_out": left_out}


def retried(request: HttpRequest, original: Job, retry: Job, created: bool, text: str) -> HttpResponse:
    """After "Retry the failed devices": `text` when the retry was queued now; else, since Job.create_retry queues one
    retry per job, which job already retried it. Either way, the retry's page."""
    if created:
        messages.success(request, text)
    else:
        messages.info(
            request,
            f"Job #{original.pk} was already retried as job #{retry.pk} ({retry.get_status_display().lower()}); "
            "nothing new was queued. If devices still fail there, retry them from that job.",
        )
    return redirect(retry.get_absolute_url())


@require_perm(QUEUE)
@require_POST
def upload_row_fix(request: HttpRequest, pk: int, row: int) -> HttpResponse:
    """ "Use 3512...": put a staged row's suggested value in its place (portal.uploads.apply_suggestion). With htmx
    the row and the counts are re-rendered; the whole page is reloaded when the upload turns ready for review (its
    confirm form appears); without JavaScript, back to the preview."""
    staged = get_object_or_404(Upload.objects.select_related("account", "parse_job", "job"), pk=pk)
    if staged.service not in uploads.PREVIEW_PAGES:
        raise Http404
    url_name, template = uploads.PREVIEW_PAGES[staged.service]
    form = forms.RowFixForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest()  # the value comes from the page's hidden field, never typed
    was_ready = staged.status == Upload.Status.READY
    error = ""
    try:
        fixed = uploads.apply_suggestion(staged, row, form.cleaned_data["value"], user=request.user, request=request)
    except uploads.RowFixError as e:
        error = e.message
        fixed = UploadRow.objects.filter(upload=staged, pk=row).first()
    if not request.htmx:
        if error:
            messages.error(request, error)
        else:
            messages.success(request, f"Row {fixed.row_number} now uses {form.cleaned_data['value']}.")
        return redirect(url_name, staged.pk)
    if fixed is None:
        return HttpResponseClientRefresh()  # the file was read again: the row is gone
    if staged.status == Upload.Status.READY and not was_ready:
        return HttpResponseClientRefresh()  # the first valid row: the confirm form appears
    ctx = {
        "upload": staged,
        "row": fixed,
        "row_error": error,
        "can_queue": True,
        "can_fix": uploads.can_fix_rows(staged),
        "oob": True,
    }
    page = render(request, f"{template}#preview-row", ctx).content
    counts = render(request, f"{template}#upload-status", ctx).content
    # The confirm step's figures (the button's count, the typed "LOCK 10") listen for this and re-read themselves.
    return trigger_client_event(HttpResponse(page + counts), "uploadRowsChanged")
