"""Knox Guard pages: devices (list, detail with the actions their state allows), bulk actions from a spreadsheet
with typed confirmation, uploads to Knox Guard, job pages with per-device results, licences and device syncs.

A mistake here locks a real person's phone, so every action is checked three times in the view before it is
queued: the user's permissions (queue_jobs, plus control_guard_devices for lock/unlock/complete/delete), the
device's state (ActionSpec.allowed_from) and the parameters (guard.client.validate, through the forms).
Every list that can grow to a million rows pages by keyset on id, never COUNT/OFFSET.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from guard import columns, forms
from guard.client import ACTIONS, ActionSpec, GuardValidationError
from guard.constants import KG_CONSOLE_LABELS, KG_DEVICE_STATES
from guard.models import (
    KNOX_UPLOADS_LOOKUP,
    UPLOAD_RESULTS,
    GuardAction,
    GuardDevice,
    GuardLicence,
    GuardUpload,
    GuardUploadDevice,
    action_params_display,
    annotate_refusals,
    check_devices,
    check_staged,
    pending_upload_results,
    queue_action,
    queue_action_matching,
    queue_retry,
    queue_sync,
    queue_upload,
    queue_upload_results,
    refused_rows,
    retry_devices,
    retry_outlook,
    sendable_devices,
    upload_flags_display,
)
from portal import exports, previews
from portal.devicelists import device_list, export_view, outcome_page
from portal.lists import cut_page, list_context
from portal.lookups import lookup_context, queue_lookup
from portal.models import AuditEvent, Job, KnoxAccount, Upload
from portal.schedules import DailySchedule, form_errors, unknown_account
from portal.views import ACCESS, QUEUE, follow_up, get_job_for_user, queued, refused, require_perm, retried

CONTROL = "portal.control_guard_devices"
PAGE_SIZE = 50
TIMELINE_LIMIT = 200
STATE_COUNTS_CACHE_KEY = "guard:device-state-counts"
SYNC_SCHEDULE = DailySchedule(
    "guard.tasks.scheduled_sync",
    "Knox Guard sync: account ",
    page="guard:index",
    audit=("guard.sync_schedule", "guard.sync_unschedule"),
    words=(
        "The Knox Guard devices of {account} will be synced every day at {hour:02d}:00 UTC.",
        "Daily Knox Guard sync removed.",
    ),
    form=forms.ScheduleForm,
)
ACTION_KINDS = tuple(f"guard.{name}" for name in ACTIONS)


# --- access helpers -----------------------------------------------------------------------------------------


def _may_act(request: HttpRequest, spec: ActionSpec) -> bool:
    """Whether the user may queue `spec`: queue_jobs, and control_guard_devices for the actions that lock or
    release an end user's phone."""
    return request.user.has_perm(QUEUE) and (not spec.needs_control or request.user.has_perm(CONTROL))


def _check_may_act(request: HttpRequest, spec: ActionSpec) -> None:
    if not _may_act(request, spec):
        raise PermissionDenied


def _get_device_for_user(request: HttpRequest, pk: int) -> GuardDevice:
    return get_object_or_404(GuardDevice.objects.select_related("account", "pending_job"), pk=pk)


def _account_or_404(pk: Any) -> KnoxAccount:
    return get_object_or_404(KnoxAccount, pk=pk, is_active=True)


def _queue_confirmed(request: HttpRequest, account: KnoxAccount, form: forms.ConfirmedActionForm, **target: Any) -> Job:
    """Queue the action `form` confirmed, with its parameters and the typed text (the audit keeps it), for `target`:
    devices=[pk, ...], or upload= (a staged spreadsheet) with not_sent= (guard.models.queue_action)."""
    confirmation = form.cleaned_data["confirmation"]
    return queue_action(
        account, form.action, form.params, user=request.user, request=request, confirmation=confirmation, **target
    )


def _busy_job(device: GuardDevice) -> Job | None:
    job = device.pending_job
    return job if job is not None and not job.is_finished else None


# --- home ---------------------------------------------------------------------------------------------------


def state_counts() -> dict[str, int]:
    # Counting a million devices by state takes a noticeable moment: reuse the figure for a minute.
    return cache.get_or_set(
        STATE_COUNTS_CACHE_KEY,
        lambda: dict(GuardDevice.objects.values_list("state").annotate(n=Count("id")).order_by()),
        60,
    )


@require_perm(ACCESS)
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    counts = state_counts()
    ctx = {
        "accounts": [(a, a.missing_credentials("guard")) for a in KnoxAccount.objects.filter(is_active=True)],
        "by_state": [(s, KG_CONSOLE_LABELS[s], counts.get(s, 0)) for s in KG_DEVICE_STATES],
        "total": sum(counts.values()),
        "jobs": Job.objects.filter(kind__startswith="guard.").select_related("account", "created_by")[:15],
        "staged": Upload.objects.filter(service="guard").select_related("account")[:10],
        "schedules": SYNC_SCHEDULE.rows(),
        "schedule_form": forms.ScheduleForm(),
        "can_queue": request.user.has_perm(QUEUE),
    }
    return render(request, "guard/index.html", ctx)


@require_perm(QUEUE)
@require_POST
def sync(request: HttpRequest, account_pk: int) -> HttpResponse:
    account = _account_or_404(account_pk)
    if problem := account.cannot_call("guard"):
        return refused(request, problem, "guard:index")
    job = queue_sync(account, user=request.user, request=request)
    return queued(request, job, f"Job #{job.pk} is reading the Knox Guard devices of {account}.")


schedule, unschedule = SYNC_SCHEDULE.views(QUEUE)


# --- devices ------------------------------------------------------------------------------------------------


def _device_page(form: forms.DeviceFilterForm) -> tuple[list[GuardDevice], int | None]:
    """One page, newest first, by keyset: `after` is the last id of the previous page (no COUNT, no OFFSET)."""
    qs = GuardDevice.objects.matching(form.cleaned_data.get("account"), form.filters()).select_related("account")
    after = form.cleaned_data.get("after")
    if after:
        qs = qs.filter(id__lt=after)
    return cut_page(qs.order_by("-id"), PAGE_SIZE)


@require_perm(ACCESS)
@require_GET
@vary_on_headers("HX-Request")
def devices(request: HttpRequest) -> HttpResponse:
    form = forms.DeviceFilterForm(request.GET)
    # The actions this user may take on a selection (the review page checks each device's state).
    offered = [spec for spec in ACTIONS.values() if _may_act(request, spec)]
    return device_list(request, form, GuardDevice.objects, _device_page, "guard/devices.html", offered=offered)


ONE_ACCOUNT_FOR_ALL = (
    "Choose one Knox account in the filter before acting on all matching devices: a job acts for one account."
)


def _selected_devices(request: HttpRequest, data: Any) -> tuple[forms.DeviceSelectionForm, Any, str]:
    """The device list's selection: (the form, (account, devices, filters) or None, why not in words).

    Ticked rows are the devices of those ids that the list's filter still matches; “all matching” is the filter
    itself, never loaded. A job runs against one Knox account, so the selection must be of one."""
    selection = forms.DeviceSelectionForm(data)
    filters = forms.DeviceFilterForm(data)
    if not filters.is_valid():
        return selection, None, form_errors(filters)
    if not selection.is_valid():
        return selection, None, form_errors(selection)
    account = filters.cleaned_data.get("account")
    matching = GuardDevice.objects.matching(account, filters.filters())
    if selection.cleaned_data["scope"] == "selected":
        devices = matching.filter(pk__in=selection.cleaned_data["ids"])
        accounts = list(devices.order_by().values_list("account", flat=True).distinct()[:2])
        if not accounts:
            return selection, None, "None of the ticked devices is in the list any more; tick them again."
        if len(accounts) > 1:
            return (
                selection,
                None,
                (
                    "The ticked devices belong to more than one Knox account; a job acts for one account: "
                    "choose the account in the filter first."
                ),
            )
        account = KnoxAccount.objects.get(pk=accounts[0])
        return selection, (account, devices, {"ids": selection.cleaned_data["ids"]}), ""
    if account is None:
        return selection, None, ONE_ACCOUNT_FOR_ALL
    return selection, (account, matching, filters.filters()), ""


# What a selection carries from the list to its review page and on to the POST: the filter and the selection.
SELECTION_KEYS = frozenset({*forms.DeviceFilterForm.base_fields, *forms.DeviceSelectionForm.base_fields} - {"after"})


def _selection_items(data: Any, keys: frozenset[str] = SELECTION_KEYS) -> list[tuple[str, str]]:
    return [(k, v) for k, values in data.lists() if k in keys for v in values]


def _list_url(data: Any) -> str:
    """The device list with the selection's filter (back from the review, or after a refusal)."""
    keys = frozenset(forms.DeviceFilterForm.base_fields) - {"after"}
    query = urlencode(_selection_items(data, keys))
    return f"{redirect('guard:devices').url}{'?' + query if query else ''}"


def _act_context(
    request: HttpRequest,
    data: Any,
    found: tuple[KnoxAccount, Any, dict[str, Any]],
    spec: ActionSpec,
    form: forms.BulkActionForm | None = None,
) -> dict[str, Any]:
    account, devices, _ = found
    check = check_devices(devices, spec.name)
    return {
        "account": account,
        "spec": spec,
        "check": check,
        "scope": data.get("scope"),
        "confirm": form if form is not None else forms.BulkActionForm(action=spec.name, count=check.sendable),
        "hidden": _selection_items(data),
        "list_url": _list_url(data),
        "missing": account.missing_credentials("guard"),
    }


@require_perm(QUEUE)
@require_http_methods(["GET", "POST"])
def devices_act(request: HttpRequest) -> HttpResponse:
    """An action on the device list's selection (ticked rows, or all matching the filter): GET reviews it (how
    many devices can take the action, why the others cannot, the parameters and the typed confirmation, from the
    URL), POST queues it for the devices that can take it."""
    data = request.POST if request.method == "POST" else request.GET
    selection, found, problem = _selected_devices(request, data)
    if selection.has_error("action") or selection.has_error("scope"):
        return HttpResponseBadRequest("Unknown action or selection")  # the list only offers the actions it shows
    spec = ACTIONS[selection.cleaned_data["action"]]
    _check_may_act(request, spec)
    back = _list_url(data)
    if found is None:
        return refused(request, problem, back)
    account, devices, filters = found
    if request.method == "GET":
        return render(request, "guard/devices_act.html", _act_context(request, data, found, spec))
    check = check_devices(devices, spec.name)
    if not check.sendable:
        return refused(
            request, f"None of these devices can take “{spec.label}” now (the review says why); nothing was sent.", back
        )
    if problem := account.cannot_call("guard"):
        return refused(request, problem, back)
    form = forms.BulkActionForm(data, action=spec.name, count=check.sendable)
    if not form.is_valid():
        return render(request, "guard/devices_act.html", _act_context(request, data, found, spec, form))
    try:
        if "ids" in filters:
            ids = list(sendable_devices(devices, spec.name).order_by("id").values_list("pk", flat=True))
            job = _queue_confirmed(request, account, form, devices=ids)
        else:
            job = queue_action_matching(
                account,
                spec.name,
                form.params,
                filters,
                count=check.sendable,
                user=request.user,
                request=request,
                confirmation=form.cleaned_data["confirmation"],
            )
    except (GuardValidationError, ValueError) as e:
        return refused(request, str(e), back)
    return queued(request, job)


devices_export = export_view(
    forms.DeviceFilterForm, GuardDevice.objects, columns.DEVICE_EXPORT, audit_action="guard.export"
)


def _detail_context(
    request: HttpRequest, device: GuardDevice, bound: forms.ConfirmedActionForm | None = None
) -> dict[str, Any]:
    """The device page; `bound` replaces the empty form of its action after a POST that failed validation.

    Only the actions the device's state allows *and* the user may queue get a form: the template is given
    nothing else to show (permissions are decided here, never in the template).
    """
    action_forms = [
        bound
        if bound is not None and bound.action == spec.name
        else forms.ConfirmedActionForm(action=spec.name, count=1)
        for spec in device.allowed_actions()
        if _may_act(request, spec)
    ]
    history = list(device.actions.select_related("job", "actor").order_by("-id")[: TIMELINE_LIMIT + 1])
    return {
        "device": device,
        "busy_job": _busy_job(device),
        "licence": GuardLicence.objects.filter(account=device.account, key=device.licence).first()
        if device.licence
        else None,
        "history": history[:TIMELINE_LIMIT],
        "history_cut": len(history) > TIMELINE_LIMIT,
        "action_forms": action_forms,
        "can_queue": request.user.has_perm(QUEUE),
        "missing": device.account.missing_credentials("guard"),
    }


@require_perm(ACCESS)
@require_GET
def device_detail(request: HttpRequest, pk: int) -> HttpResponse:
    device = _get_device_for_user(request, pk)
    return render(request, "guard/device_detail.html", _detail_context(request, device))


@require_perm(QUEUE)
@require_POST
def device_act(request: HttpRequest, pk: int) -> HttpResponse:
    """One action on one device: permission, state, parameters, then a job (which sends it to Knox)."""
    device = _get_device_for_user(request, pk)
    choice = forms.ActionChoiceForm(request.POST)
    if not choice.is_valid():
        return HttpResponseBadRequest("Unknown action")  # the page only posts the actions it shows
    spec = choice.spec
    _check_may_act(request, spec)
    if not device.allows(spec.name):
        return refused(
            request,
            f"“{spec.label}” is not possible now: the device is {device.console_state}; "
            f"it is possible only while a device is {spec.allowed_label}. Nothing was sent.",
            "guard:device_detail",
            device.pk,
        )
    busy = _busy_job(device)
    if busy is not None:
        return refused(
            request,
            f"Job #{busy.pk} is already acting on this device; wait for it to finish.",
            "guard:device_detail",
            device.pk,
        )
    if problem := device.account.cannot_call("guard"):
        return refused(request, problem, "guard:device_detail", device.pk)
    form = forms.ConfirmedActionForm(request.POST, action=spec.name, count=1)
    if not form.is_valid():
        return render(request, "guard/device_detail.html", _detail_context(request, device, form))
    try:
        job = _queue_confirmed(request, device.account, form, devices=[device.pk])
    except (GuardValidationError, ValueError) as e:
        return refused(request, str(e), "guard:device_detail", device.pk)
    return queued(request, job, f"Job #{job.pk} queued: {spec.label} on {device.device_uid}.")


# --- spreadsheets: bulk actions and uploads to Knox Guard -----------------------------------------------------


def _stage(request: HttpRequest, form: forms.StagingForm, operation: str) -> Upload:
    data = form.cleaned_data
    return previews.stage_spreadsheet(
        request, data["file"], service="guard", account=data["account"], operation=operation
    )


@require_perm(QUEUE)
@require_http_methods(["GET", "POST"])
def bulk_new(request: HttpRequest) -> HttpResponse:
    form = forms.StagingForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        staged = _stage(request, form, Upload.Operation.GUARD_ACTION)
        return redirect("guard:bulk_detail", staged.pk)
    ctx = {
        "form": form,
        "operation": "guard",
        "has_accounts": form.fields["account"].queryset.exists(),
        "flag_names": [],
    }
    return render(request, "guard/stage.html", ctx)


@require_perm(QUEUE)
@require_http_methods(["GET", "POST"])
def upload_new(request: HttpRequest) -> HttpResponse:
    form = forms.UploadToGuardForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        staged = _stage(request, form, Upload.Operation.GUARD_UPLOAD)
        # The flags travel to the preview, where they are shown again (still editable) next to the confirm button.
        chosen = {k: "on" for k, v in form.flags().items() if v}
        url = redirect("guard:bulk_detail", staged.pk).url
        return redirect(f"{url}?{urlencode(chosen)}" if chosen else url)
    ctx = {
        "form": form,
        "operation": "guard-upload",
        "has_accounts": form.fields["account"].queryset.exists(),
        "flag_names": list(forms.UPLOAD_FLAGS),
    }
    return render(request, "guard/stage.html", ctx)


def _preview_context(
    request: HttpRequest,
    staged: Upload,
    confirm: forms.BulkActionForm | forms.UploadFlagsForm | None = None,
    *,
    counts: bool = True,
) -> dict[str, Any]:
    """Everything the preview shows; shared by the page and by a confirm that failed validation.

    For a bulk action, each valid row is checked against the portal's record of its device for the chosen action
    (guard.models.check_staged): the rows Knox would refuse (device unknown, state that does not allow it, another
    job on it) are counted and named per row, and only the others are sent and counted in the typed confirmation.
    """
    ready = staged.status == Upload.Status.READY
    is_action = staged.operation == Upload.Operation.GUARD_ACTION
    # The actions this user may queue in bulk; each is chosen with ?action=, then its parameters are asked.
    offered = [spec for spec in ACTIONS.values() if _may_act(request, spec)] if is_action else []
    chosen_action = confirm.action if isinstance(confirm, forms.BulkActionForm) else ""
    if not chosen_action and ready and is_action:
        chosen = forms.ActionChoiceForm(request.GET)
        if chosen.is_valid() and chosen.spec in offered:
            chosen_action = chosen.spec.name
    # Without an action chosen yet, the rows are still checked for devices the portal does not have.
    # (`counts` False: a page of rows only, which needs no count of the whole file.)
    check = check_staged(staged, chosen_action) if ready and is_action and counts else None
    if confirm is None and check is not None and chosen_action:
        confirm = forms.BulkActionForm(action=chosen_action, count=check.sendable)
    if confirm is None and ready and not is_action and request.user.has_perm(QUEUE):
        confirm = forms.UploadFlagsForm(initial={k: k in request.GET for k in forms.UPLOAD_FLAGS})
    ctx = {
        **previews.preview_rows(request, staged),
        "is_action": is_action,
        "offered": offered if ready else [],
        "confirm": confirm,
        "check": check,
        "chosen_action": chosen_action,
    }
    # “Show only these rows”: the valid rows the chosen action will not be sent to (the status filter cannot find
    # them: they are valid rows, refused for this action only).
    ctx["show_refused"] = bool(chosen_action and request.GET.get("show") == "refused")
    if ctx["show_refused"]:
        after = (ctx["filters"].cleaned_data.get("after") or 0) if ctx["filters"].is_valid() else 0
        not_sent = refused_rows(staged, chosen_action, after=after, limit=previews.PREVIEW_PAGE_SIZE + 1)
        ctx["rows"], ctx["next_after"] = cut_page(not_sent, previews.PREVIEW_PAGE_SIZE, lambda row: row.row_number)
    if is_action:
        annotate_refusals(staged, ctx["rows"], chosen_action or None)
    return ctx


@require_perm(ACCESS)
@require_GET
@vary_on_headers("HX-Request")
def bulk_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The preview: counts, the per-row table (filterable, paged by row number), then the action or the flags."""
    staged = previews.get_staged(pk, "guard")
    # A page of rows needs no check of the whole file; the status region shows the check's counts.
    ctx = _preview_context(request, staged, counts=previews.htmx_target(request) != "preview-rows")
    return previews.preview_response(request, staged, "guard/staged.html", ctx, regions=("bulk-action",))


@require_perm(QUEUE)
@require_POST
def bulk_confirm(request: HttpRequest, pk: int) -> HttpResponse:
    """A staged spreadsheet confirmed: its bulk action for the rows that can take it, or its upload to Knox Guard."""
    staged = previews.get_staged(pk, "guard")
    if problem := previews.cannot_submit(staged, "guard"):
        return refused(request, problem, "guard:bulk_detail", staged.pk)
    if staged.operation == Upload.Operation.GUARD_UPLOAD:
        return _confirm_upload(request, staged)
    choice = forms.ActionChoiceForm(request.POST)
    if not choice.is_valid():
        return HttpResponseBadRequest("Unknown action")
    spec = choice.spec
    _check_may_act(request, spec)
    check = check_staged(staged, spec.name)
    if not check.sendable:
        return refused(
            request,
            f"None of the {check.total} valid rows can succeed for “{spec.label}” (each row says why); "
            "nothing was sent. Sync devices from Knox, or choose another action.",
            f"{redirect('guard:bulk_detail', staged.pk).url}?action={spec.name}",
        )
    form = forms.BulkActionForm(request.POST, action=spec.name, count=check.sendable)
    if not form.is_valid():
        return render(request, "guard/staged.html", _preview_context(request, staged, form))
    try:
        job = _queue_confirmed(request, staged.account, form, upload=staged, not_sent=check.refused)
    except (GuardValidationError, ValueError) as e:
        return refused(request, str(e), "guard:bulk_detail", staged.pk)
    return queued(request, job)


def _confirm_upload(request: HttpRequest, staged: Upload) -> HttpResponse:
    form = forms.UploadFlagsForm(request.POST)
    if not form.is_valid():
        return render(request, "guard/staged.html", _preview_context(request, staged, form))
    try:
        job = queue_upload(staged, form.flags(), user=request.user, request=request)
    except ValueError as e:
        return refused(request, str(e), "guard:bulk_detail", staged.pk)
    return queued(request, job)


bulk_problems = previews.problem_rows_view("guard", what="problem rows", value_columns=(columns.APPROVE_ID,))


# --- jobs ---------------------------------------------------------------------------------------------------


@require_perm(ACCESS)
@require_GET
@vary_on_headers("HX-Request")
def job(request: HttpRequest, pk: int) -> HttpResponse:
    the_job = get_job_for_user(request, pk)
    if the_job.kind == UPLOAD_RESULTS:  # a read of an upload's results: shown on the upload's page
        return redirect("guard:job", the_job.params.get("job"))
    if not the_job.kind.startswith("guard."):
        return redirect(the_job.get_absolute_url())  # another service's job: its own page
    ctx = _job_context(request, the_job)
    if request.htmx and request.htmx.target == "job-results":
        return render(request, "guard/job.html#job-results", ctx)
    if request.htmx and request.htmx.target == "upload-results" and ctx["is_upload"]:
        return render(request, "guard/job.html#upload-results", ctx)
    return render(request, "guard/job.html", ctx)


def _job_context(request: HttpRequest, the_job: Job, retry_form: forms.RetryForm | None = None) -> dict[str, Any]:
    is_upload = the_job.kind == "guard.upload"
    filters = forms.ResultsFilterForm(request.GET)
    if is_upload:  # an upload's per-device results have outcomes of their own
        filters.fields["outcome"].choices = [("", "All"), *GuardUploadDevice.Outcome.choices]
    results = GuardAction.objects.filter(job=the_job).select_related("device")
    page = outcome_page(filters, results, PAGE_SIZE)
    spec = ACTIONS.get(the_job.params.get("action", "")) if the_job.kind in ACTION_KINDS else None
    retry = retry_outlook(the_job) if spec is not None else {"retryable": 0, "left_out": []}
    can_retry = spec is not None and _may_act(request, spec) and retry["retryable"] > 0
    if can_retry and retry_form is None and spec is not None:
        retry_form = forms.RetryForm(action=spec.name, count=retry["retryable"])
    ctx = {
        "job": the_job,
        "spec": spec,
        "is_action": spec is not None,
        "is_upload": is_upload,
        **page,
        "outcomes": GuardAction.Outcome.choices,
        "upload": Upload.objects.filter(job=the_job).first() or Upload.objects.filter(parse_job=the_job).first(),
        "can_cancel": request.user.has_perm(QUEUE) and the_job.status == Job.Status.QUEUED,
        "retry": retry,
        "can_retry": can_retry,
        "retry_form": retry_form if can_retry else None,
        "action_params": action_params_display(the_job.params.get("action_params") or {}),
        # A job on “all matching the filter” of the device list: that list, filtered as it was.
        "filter_url": _list_url(QueryDict(urlencode({**the_job.params["filter"], "account": the_job.account_id})))
        if isinstance(the_job.params.get("filter"), dict) and "ids" not in the_job.params["filter"]
        else "",
        "flags": upload_flags_display(the_job.params.get("flags") or {}),
    }
    if is_upload:
        ctx.update(_upload_results_context(request, the_job, page["outcome"], page["after"]))
    return ctx


def _upload_results_context(request: HttpRequest, job: Job, outcome: str, after: int) -> dict[str, Any]:
    """An upload job's parts (uploadID, Knox's status, how many of Knox's per-device results say what) and one page
    of those results, from the database only: Knox is read by a job (guard.tasks.read_upload_results)."""
    parts = list(GuardUpload.objects.filter(job=job).order_by("sequence")[:100])
    counts: dict[int, dict[str, int]] = {p.pk: {} for p in parts}
    by_outcome = (
        GuardUploadDevice.objects.filter(upload__in=parts).values_list("upload", "outcome").annotate(n=Count("id"))
    )
    for upload_pk, result, n in by_outcome.order_by():
        counts[upload_pk][result] = n
    for p in parts:
        p.result_counts = counts[p.pk]  # type: ignore[attr-defined]
    rows = GuardUploadDevice.objects.filter(job=job)
    if outcome:
        rows = rows.filter(outcome=outcome)
    device_results, next_after = cut_page(rows.filter(id__gt=after).select_related("upload").order_by("id"), PAGE_SIZE)
    reading = pending_upload_results(job)
    return {
        "guard_uploads": parts,
        "device_results": device_results,
        "results_next_after": next_after,
        "result_outcomes": GuardUploadDevice.Outcome.choices,
        "reading": reading,
        "last_read": Job.objects.filter(kind=UPLOAD_RESULTS, params__job=job.pk).order_by("-id").first(),
        "results_polling": not job.is_finished or reading is not None,
        "can_refresh": request.user.has_perm(QUEUE) and any(p.upload_id for p in parts),
    }


# What "Refresh results" says without JavaScript (portal.views.follow_up).
RESULTS_READ_WORDS = {
    "nothing": "No part of this upload has a Knox upload ID yet; there are no results to read.",
    "asking": "Job #{read.pk} queued: reading Knox Guard's per-device results of {parts}; the table below changes "
    "when it has them.",
    "already": "Job #{read.pk} is already reading Knox Guard's results; the table below follows it.",
}


@require_perm(QUEUE)
@require_POST
def job_refresh_results(request: HttpRequest, pk: int) -> HttpResponse:
    """“Refresh results”: queue a job that reads Knox Guard's per-device results of every part of the upload (a
    worker asks Knox, never this request); the results section follows it."""
    the_job = get_job_for_user(request, pk)
    if the_job.kind != "guard.upload":
        return HttpResponseBadRequest("Only Knox Guard upload jobs have per-device results to read")
    read, created = queue_upload_results(the_job, user=request.user, request=request)
    region = ("guard/job.html#upload-results", lambda: _refresh_context(request, the_job))
    return follow_up(request, the_job, read, created, region=region, **RESULTS_READ_WORDS)


def _refresh_context(request: HttpRequest, job: Job) -> dict[str, Any]:
    return {"job": job, "is_upload": True, "outcome": "", "after": 0, **_upload_results_context(request, job, "", 0)}


@require_perm(QUEUE)
@require_POST
def job_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue the job's action again for its failed devices that the portal still knows, once per job
    (guard.models.queue_retry); the devices' count is typed to confirm a lock, complete or delete."""
    the_job = get_job_for_user(request, pk)
    if the_job.kind not in ACTION_KINDS:
        return HttpResponseBadRequest("Only Knox Guard action jobs can be retried")
    spec = ACTIONS[the_job.params["action"]]
    _check_may_act(request, spec)
    form = forms.RetryForm(request.POST, action=spec.name, count=retry_devices(the_job).count())
    # A second click (or another tab) is told of the retry already queued rather than asked to type again.
    if form.count and not form.is_valid() and not the_job.retries.exists():
        return render(request, "guard/job.html", _job_context(request, the_job, form))
    confirmation = form.cleaned_data.get("confirmation", "") if form.count else ""
    try:
        retry, created, skipped = queue_retry(the_job, user=request.user, request=request, confirmation=confirmation)
    except (GuardValidationError, ValueError) as e:
        return refused(request, str(e), "guard:job", the_job.pk)
    return retried(request, the_job, retry, created, _retry_queued(retry, skipped))


def _retry_queued(retry: Job, skipped: int) -> str:
    devices = f"{retry.total} failed device{'s' if retry.total != 1 else ''}"
    if skipped <= 0:
        return f"Job #{retry.pk} queued for {devices}."
    rows = f"{skipped} failed row{'s' if skipped != 1 else ''}"
    return f"Job #{retry.pk} queued for {devices}. {rows} without a device in the portal were left out."


@require_perm(ACCESS)
@require_GET
def job_report(request: HttpRequest, pk: int) -> HttpResponse:
    the_job = get_job_for_user(request, pk)
    if the_job.kind not in ACTION_KINDS:
        return redirect(the_job.get_absolute_url())  # no per-device report for this job
    rows = GuardAction.objects.filter(job=the_job).select_related("device").order_by("id")
    AuditEvent.objects.record("guard.export", request=request, target=the_job, summary={"what": "job report"})
    return exports.xlsx_response(
        columns.RESULTS, rows.iterator(chunk_size=2000), f"guard-job-{the_job.pk}-report.xlsx", "Results"
    )


# --- uploads to Knox Guard and licences -----------------------------------------------------------------------


def _uploads_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    return {
        "uploads": GuardUpload.objects.select_related("account", "job")[:100],
        **list_context(request, GuardUpload.objects.all(), singular="upload"),
        "staged": Upload.objects.filter(service="guard", operation=Upload.Operation.GUARD_UPLOAD).select_related(
            "account", "job"
        )[:10],
        "account_form": forms.AccountForm(),
        "can_queue": request.user.has_perm(QUEUE),
        **extra,
    }


@require_perm(ACCESS)
@require_GET
def uploads(request: HttpRequest) -> HttpResponse:
    # Opened on a read of Knox's list (?job=<pk>) after "Read from Knox" without JavaScript: its progress and
    # answer (403 for whoever may not ask for it).
    ctx = _uploads_context(request, **lookup_context(request, KNOX_UPLOADS_LOOKUP))
    if "lookup_job" in ctx:
        ctx["account_form"] = forms.AccountForm(initial={"account": ctx["lookup_job"].account_id})
    return render(request, "guard/uploads.html", ctx)


@require_perm(QUEUE)
@require_POST
def uploads_from_knox(request: HttpRequest) -> HttpResponse:
    """Knox's own list of uploads (every channel), read on request by a worker (portal.lookups): never on a plain
    page view, never while the request waits."""
    form = forms.AccountForm(request.POST)
    if unknown_account(form):
        return HttpResponseBadRequest("Unknown account")
    if not form.is_valid():
        return refused(request, form_errors(form), "guard:uploads")
    account = form.cleaned_data["account"]
    job = queue_lookup(
        KNOX_UPLOADS_LOOKUP, account=account, user=request.user, params={}, title=f"Knox Guard uploads of {account}"
    )
    if not request.htmx:
        return redirect(job.get_absolute_url())
    ctx = {"account_form": form, "can_queue": True, **lookup_context(request, KNOX_UPLOADS_LOOKUP, job)}
    return render(request, "guard/uploads.html#knox-uploads", ctx)


@require_perm(ACCESS)
@require_GET
def licences(request: HttpRequest) -> HttpResponse:
    licences = list(GuardLicence.objects.select_related("account").order_by("account__name", "key")[:500])
    # How many devices staff recorded with each key (Knox gives none): one grouped query on the licence index.
    counts = dict(
        ((account, key), n)
        for account, key, n in GuardDevice.objects.filter(licence__in={lic.key for lic in licences})
        .values_list("account", "licence")
        .annotate(n=Count("id"))
        .order_by()
    )
    for lic in licences:
        lic.device_count = counts.get((lic.account_id, lic.key), 0)  # type: ignore[attr-defined]
    return render(request, "guard/licences.html", {"licences": licences})
