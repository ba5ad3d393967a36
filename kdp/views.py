"""KDP pages: spreadsheet → preview → customer and profile alias → job with live results; devices, customers,
transactions and reconcile reports.

Every list that can grow to a million rows pages by keyset (an id or identifier cursor), never OFFSET; its total
comes from portal.lists.total (a bounded count, else an estimate).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

from django.contrib import messages
from django.core.cache import cache
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from kdp import columns, forms
from kdp.models import (
    Customer,
    Device,
    ProfileAlias,
    ReconcileItem,
    Transaction,
    TransactionDevice,
    can_choose_again,
    failed_by_code,
    file_customers,
    mismatch_sample,
    queue_customer_sync,
    queue_delete_matching,
    queue_reconcile,
    queue_retry,
    recorded_customers,
    submit_targets,
    upload_jobs,
)
from kdp.tasks import DASHBOARD_STATE_CACHE_KEY
from portal import exports, previews
from portal.charts import bar_chart_svg, daily_series
from portal.devicelists import device_list, export_view, outcome_page
from portal.forms import MAX_ID
from portal.lists import cut_page, list_context
from portal.models import AuditEvent, Job, KnoxAccount, Upload
from portal.schedules import DailySchedule, form_errors, unknown_account
from portal.views import (
    ACCESS,
    QUEUE,
    get_job_for_user,
    queued,
    refused,
    require_perm,
    retried,
    retry_context,
)

PAGE_SIZE = 50
KDP_JOB_KINDS = ("kdp.upload", "kdp.delete", "kdp.parse", "kdp.customers", "kdp.reconcile")


def _account_or_404(pk: Any) -> KnoxAccount:
    return get_object_or_404(KnoxAccount, pk=pk, is_active=True)


def _id_or_none(value: Any) -> int | None:
    """A posted id or page cursor as a number, or None when it is not one any database could hold.

    Not str.isdigit(): it is true for "²", which int() refuses; and a number past MAX_ID overflows SQLite.
    """
    text = str(value or "")
    return int(text) if text.isascii() and text.isdigit() and int(text) <= MAX_ID else None


# --- home ---------------------------------------------------------------------------------------------------


@require_perm(ACCESS)
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    ctx = {
        "accounts": [(a, a.missing_credentials(a.kdp_service())) for a in KnoxAccount.objects.filter(is_active=True)],
        "jobs": Job.objects.filter(kind__in=KDP_JOB_KINDS).select_related("account", "created_by")[:15],
        "uploads": Upload.objects.filter(service="kdp").select_related("account", "job")[:10],
        "can_queue": request.user.has_perm(QUEUE),
    }
    return render(request, "kdp/index.html", ctx)


# --- upload → preview → confirm -----------------------------------------------------------------------------


@require_perm(QUEUE)
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    form = forms.UploadForm(
        request.POST or None, request.FILES or None, initial={"operation": request.GET.get("operation", "upload")}
    )
    if request.method == "POST" and form.is_valid():
        staged = previews.stage_spreadsheet(
            request,
            form.cleaned_data["file"],
            service="kdp",
            account=form.cleaned_data["account"],
            operation=form.cleaned_data["operation"],
            allow_bad_check_digit=form.cleaned_data["allow_bad_check_digit"],
        )
        return redirect("kdp:upload_detail", staged.pk)
    ctx = {"form": form, "has_accounts": bool(form.fields["account"].queryset.exists())}
    return render(request, "kdp/upload.html", ctx)


TEMPLATE_DOWNLOADS = {
    "xlsx": (exports.device_template_xlsx, exports.XLSX_CONTENT_TYPE),
    "csv": (exports.device_template_csv, exports.CSV_CONTENT_TYPE),
}


@require_perm(ACCESS)
@require_GET
def template(request: HttpRequest, fmt: str) -> HttpResponse:
    """The upload template, an example row under the headers the upload reads (kdp/urls.py: one URL per format)."""
    content, content_type = TEMPLATE_DOWNLOADS[fmt]
    response = HttpResponse(content(), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="knox-devices-template.{fmt}"'
    return response


Confirm = forms.ConfirmForm | forms.MultiConfirmForm


def _preview_context(
    request: HttpRequest, staged: Upload, confirm: Confirm | None = None, *, checks: bool = True
) -> dict[str, Any]:
    """Everything the preview page shows; shared by the page and by a confirm that failed validation.

    A spreadsheet with a customer column is confirmed per customer (MultiConfirmForm); a delete shows who the
    portal's records have the devices registered to, and which rows a chosen customer would see refused.
    """
    # `checks`: the customer groups and the delete's recorded customers read every valid row; the fragments that
    # poll or page the rows (checks=False) do not show them.
    reviewable = checks and staged.status in (Upload.Status.READY, Upload.Status.SUBMITTED)
    groups = file_customers(staged) if reviewable else None
    if confirm is None and staged.status == Upload.Status.READY and checks:
        confirm = forms.MultiConfirmForm(upload=staged, groups=groups) if groups else forms.ConfirmForm(upload=staged)
    single = confirm if isinstance(confirm, forms.ConfirmForm) else None
    chosen = _id_or_none(single.data.get("customer")) if single is not None and single.is_bound else None
    ctx = {
        **previews.preview_rows(request, staged),
        "confirm": confirm,
        "groups": groups,
        "multi": isinstance(confirm, forms.MultiConfirmForm),
        # After a failed confirm the alias list is rebuilt for the customer already chosen.
        "aliases": list(ProfileAlias.objects.filter(customer_id=chosen).values_list("name", flat=True))
        if chosen is not None
        else None,
        "chosen_alias": single.data.get("profile_alias", "") if single is not None and single.is_bound else "",
        "ambiguous": len(staged.sheets) > 1 or len(staged.columns) > 1,
        "jobs": list(upload_jobs(staged)) if staged.status == Upload.Status.SUBMITTED else [],
        "choose_again": checks and can_choose_again(staged),
    }
    if (
        reviewable
        and staged.operation == Upload.Operation.DELETE
        and staged.status == Upload.Status.READY
        and not groups
    ):
        ctx["recorded"] = recorded_customers(staged)
        ctx.update(_customer_check(staged, chosen if chosen is not None else _id_or_none(request.GET.get("customer"))))
    return ctx


def _customer_check(staged: Upload, customer_pk: int | None) -> dict[str, Any]:
    """For a delete: the rows whose device the portal has registered to another customer than the one chosen."""
    customer = Customer.objects.filter(account=staged.account, pk=customer_pk).first() if customer_pk else None
    if customer is None:
        return {"checked_customer": None}
    n, sample = mismatch_sample(staged, customer)
    return {"checked_customer": customer, "mismatch_count": n, "mismatches": sample}


@require_perm(ACCESS)
@require_GET
@vary_on_headers("HX-Request")
def upload_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The preview: counts, the per-row table (filterable, paged by row number) and the confirm form."""
    staged = previews.get_staged(pk, "kdp")
    # The polled regions need no customer checks: those read every valid row.
    ctx = _preview_context(request, staged, checks=previews.htmx_target(request) not in previews.PREVIEW_REGIONS)
    return previews.preview_response(request, staged, "kdp/upload_detail.html", ctx, regions=("customer-check",))


@require_perm(QUEUE)
@require_POST
def upload_restage(request: HttpRequest, pk: int) -> HttpResponse:
    staged = previews.get_staged(pk, "kdp")
    form = forms.RestageForm(request.POST)
    if staged.file_deleted_at:
        return refused(request, staged.file_deleted_notice, "kdp:upload_detail", staged.pk)
    if staged.status == Upload.Status.SUBMITTED and not can_choose_again(staged):
        return refused(
            request,
            "This spreadsheet was already submitted and its job has not ended with failed devices; upload it again "
            "to change how it is read.",
            "kdp:upload_detail",
            staged.pk,
        )
    if not form.is_valid():
        return refused(
            request, "The sheet or column name is too long; choose one from the lists.", "kdp:upload_detail", staged.pk
        )
    staged.sheet = form.cleaned_data["sheet"]
    staged.device_column = form.cleaned_data["device_column"]
    staged.allow_bad_check_digit = form.cleaned_data["allow_bad_check_digit"]
    staged.save(update_fields=["sheet", "device_column", "allow_bad_check_digit"])
    staged.start_parsing(request.user)
    return redirect("kdp:upload_detail", staged.pk)


@require_perm(QUEUE)
@require_POST
def upload_confirm(request: HttpRequest, pk: int) -> HttpResponse:
    """A staged spreadsheet confirmed: one job for the chosen customer, or one per customer of its customer column."""
    staged = previews.get_staged(pk, "kdp")
    if problem := previews.cannot_submit(staged, staged.account.kdp_service()):
        return refused(request, problem, "kdp:upload_detail", staged.pk)
    groups = file_customers(staged)
    form: Confirm = (
        forms.MultiConfirmForm(request.POST, upload=staged, groups=groups)
        if groups
        else forms.ConfirmForm(request.POST, upload=staged)
    )
    if not form.is_valid():
        return render(request, "kdp/upload_detail.html", _preview_context(request, staged, form))
    try:
        jobs = submit_targets(
            staged,
            form.targets(),
            user=request.user,
            order_no=form.cleaned_data.get("order_no", ""),
            order_time=form.order_time(),
            request=request,
        )
    except ValueError as e:
        return refused(request, str(e), "kdp:upload_detail", staged.pk)
    if len(jobs) == 1:
        return queued(request, jobs[0])
    messages.success(
        request, f"{len(jobs)} jobs queued, one per customer: " + "; ".join(f"#{j.pk} {j.title}" for j in jobs) + "."
    )
    return redirect("kdp:upload_detail", staged.pk)


upload_invalid_xlsx = previews.problem_rows_view("kdp", what="invalid rows", last_columns=(columns.ORDER_NUMBER,))


@require_perm(ACCESS)
@require_GET
def aliases(request: HttpRequest) -> HttpResponse:
    """HTMX: the profile-alias options of the chosen customer."""
    form = forms.AliasesForm(request.GET)
    if not request.GET.get("customer"):
        names: list[str] = []  # no customer chosen (yet): an empty list, which the fragment explains
    elif not form.is_valid():
        return HttpResponseBadRequest("Unknown customer")
    else:
        names = list(ProfileAlias.objects.filter(customer=form.cleaned_data["customer"]).values_list("name", flat=True))
    return render(request, "kdp/_alias_select.html", {"aliases": names, "chosen": request.GET.get("profile_alias", "")})


# --- jobs ---------------------------------------------------------------------------------------------------


@require_perm(ACCESS)
@require_GET
@vary_on_headers("HX-Request")
def job(request: HttpRequest, pk: int) -> HttpResponse:
    the_job = get_job_for_user(request, pk, KDP_JOB_KINDS)
    results = TransactionDevice.objects.filter(job=the_job)
    page = outcome_page(forms.ResultsFilterForm(request.GET), results, PAGE_SIZE)
    retry = retry_context(the_job, failed_by_code(the_job) if the_job.failed else {})
    upload = (
        Upload.objects.filter(pk=the_job.params["upload"], service="kdp").first()
        if the_job.kind in ("kdp.upload", "kdp.delete") and "upload" in the_job.params
        else Upload.objects.filter(parse_job=the_job).first()
    )
    ctx = {
        "job": the_job,
        **page,
        "outcomes": TransactionDevice.Outcome.choices,
        "transactions": Transaction.objects.filter(job=the_job).select_related("customer").order_by("sequence")[:200],
        "upload": upload,
        # Knox refused the devices (e.g. another customer's): the spreadsheet can be read again and resubmitted.
        "choose_again": upload is not None and request.user.has_perm(QUEUE) and can_choose_again(upload),
        "drift": [
            (ReconcileItem.Drift(value).label, n)
            for value, n in ReconcileItem.objects.filter(job=the_job)
            .values_list("drift")
            .annotate(n=Count("id"))
            .order_by("drift")
        ]
        if the_job.kind == "kdp.reconcile"
        else None,
        "can_queue": request.user.has_perm(QUEUE),
        "can_cancel": request.user.has_perm(QUEUE) and the_job.status == Job.Status.QUEUED,
        "retry": retry,
        "can_retry": request.user.has_perm(QUEUE) and retry["retryable"] > 0,
    }
    if request.htmx and request.htmx.target == "job-results":
        return render(request, "kdp/job.html#job-results", ctx)
    return render(request, "kdp/job.html", ctx)


@require_perm(QUEUE)
@require_POST
def job_retry(request: HttpRequest, pk: int) -> HttpResponse:
    the_job = get_job_for_user(request, pk, KDP_JOB_KINDS)
    try:
        retry, created = queue_retry(the_job, user=request.user, request=request)
    except ValueError as e:
        return refused(request, str(e), "kdp:job", the_job.pk)
    return retried(request, the_job, retry, created, f"Job #{retry.pk} queued for the {retry.total} failed devices.")


@require_perm(ACCESS)
@require_GET
def job_report(request: HttpRequest, pk: int) -> HttpResponse:
    the_job = get_job_for_user(request, pk, KDP_JOB_KINDS)
    rows = TransactionDevice.objects.filter(job=the_job).select_related("transaction").order_by("id")
    AuditEvent.objects.record("kdp.export", request=request, target=the_job, summary={"what": "job report"})
    if the_job.kind == "kdp.reconcile":
        items = ReconcileItem.objects.filter(job=the_job).order_by("drift", "identifier").iterator()
        return exports.xlsx_response(columns.DRIFT, items, f"reconcile-{the_job.pk}.xlsx", "Drift")
    return exports.xlsx_response(
        columns.RESULTS, rows.iterator(chunk_size=2000), f"job-{the_job.pk}-report.xlsx", "Results"
    )


# --- devices ------------------------------------------------------------------------------------------------


def _device_page(form: forms.DeviceFilterForm) -> tuple[list[Device], str | None]:
    """One page of the device list by keyset: `after` is the last id (or identifier) of the previous page."""
    qs = Device.objects.matching(form.cleaned_data.get("account"), form.filters()).select_related("customer")
    sort = form.cleaned_data.get("sort") or ("identifier" if form.cleaned_data.get("q") else "newest")
    after = form.cleaned_data.get("after") or ""
    if sort == "identifier":
        # An identifier is unique per account only, so the cursor is "identifier:id" and ties break on id.
        ident, _, last_id = after.rpartition(":")
        if ident and (last_pk := _id_or_none(last_id)) is not None:
            qs = qs.filter(Q(identifier__gt=ident) | Q(identifier=ident, id__gt=last_pk))
        qs = qs.order_by("identifier", "id")
        key = "cursor"
    elif sort == "oldest":
        if (after_pk := _id_or_none(after)) is not None:
            qs = qs.filter(id__gt=after_pk)
        qs = qs.order_by("id")
        key = "pk"
    else:
        if (after_pk := _id_or_none(after)) is not None:
            qs = qs.filter(id__lt=after_pk)
        qs = qs.order_by("-id")
        key = "pk"
    return cut_page(qs, PAGE_SIZE, (lambda d: f"{d.identifier}:{d.pk}") if key == "cursor" else (lambda d: str(d.pk)))


@require_perm(ACCESS)
@require_GET
@vary_on_headers("HX-Request")
def devices(request: HttpRequest) -> HttpResponse:
    form = forms.DeviceFilterForm(request.GET)
    can_queue = request.user.has_perm(QUEUE)
    return device_list(request, form, Device.objects, _device_page, "kdp/devices.html", can_queue=can_queue)


MAX_SELECTED = 500

devices_export = export_view(forms.DeviceFilterForm, Device.objects, columns.DEVICE_EXPORT, audit_action="kdp.export")


@require_perm(QUEUE)
@require_POST
def devices_delete(request: HttpRequest) -> HttpResponse:
    """Delete the selected devices, or all registered devices matching the filter, as one KDP delete job."""
    filters_form = forms.DeviceFilterForm(request.POST)
    action = forms.DeleteDevicesForm(request.POST)
    if not filters_form.is_valid() or not action.is_valid():
        return HttpResponseBadRequest("Invalid selection")
    account = filters_form.cleaned_data.get("account")
    if account is None:
        return refused(
            request,
            "Choose one Knox account in the filter before deleting: a delete job runs against one account.",
            "kdp:devices",
        )
    filters = filters_form.filters()
    if action.cleaned_data["scope"] == "selected":
        ids = action.cleaned_data["ids"]
        if not ids:
            return refused(request, "Select at least one device, or choose “all matching”.", "kdp:devices")
        if len(ids) > MAX_SELECTED:
            return refused(
                request,
                f"At most {MAX_SELECTED} devices can be selected at once; use “all matching this filter” for more.",
                "kdp:devices",
            )
        filters = {"ids": ids}
    try:
        job = queue_delete_matching(account, filters, user=request.user, request=request)
    except ValueError as e:
        return refused(request, str(e), "kdp:devices")
    return queued(request, job)


@require_perm(ACCESS)
@require_GET
def device_detail(request: HttpRequest, pk: int) -> HttpResponse:
    device = get_object_or_404(
        Device.objects.select_related("account", "customer", "pending_job", "last_transaction"), pk=pk
    )
    history = (
        TransactionDevice.objects.filter(identifier=device.identifier, transaction__account=device.account)
        .select_related("transaction", "transaction__customer", "job", "job__created_by")
        .order_by("-id")[:100]
    )
    job_ids = {str(h.job_id) for h in history}
    events = AuditEvent.objects.filter(
        target_type__in=("portal.job", "kdp.device"), target_id__in=[*job_ids, str(device.pk)]
    ).order_by("-id")[:100]
    timeline = sorted(
        [("knox", h.transaction.submitted_at or h.transaction.created_at, h) for h in history]
        + [("audit", e.created_at, e) for e in events],
        key=lambda item: item[1],
        reverse=True,
    )
    return render(request, "kdp/device_detail.html", {"device": device, "timeline": timeline})


# --- customers ----------------------------------------------------------------------------------------------


@require_perm(ACCESS)
@require_GET
def customers(request: HttpRequest) -> HttpResponse:
    accounts = KnoxAccount.objects.filter(is_active=True)
    ctx = {
        "accounts": [
            (a, Customer.objects.filter(account=a).prefetch_related("aliases"), a.missing_credentials(a.kdp_service()))
            for a in accounts
        ],
        "can_queue": request.user.has_perm(QUEUE),
    }
    return render(request, "kdp/customers.html", ctx)


@require_perm(QUEUE)
@require_POST
def customers_refresh(request: HttpRequest, account_pk: int) -> HttpResponse:
    """Queue a customer refresh. From a spreadsheet's preview (`upload` posted) the staff stay there: with htmx the
    preview's refresh region shows the job's progress and re-reads the customer choices when it ends; without
    JavaScript the preview is shown again with a message. From the customers page: the job page."""
    account = _account_or_404(account_pk)
    form = forms.RefreshCustomersForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Unknown spreadsheet")  # the preview posts its own id
    staged = None
    if form.cleaned_data["upload"] is not None:
        staged = get_object_or_404(Upload, pk=form.cleaned_data["upload"], service="kdp", account=account)
    error = account.cannot_call(account.kdp_service())
    if error and staged is None:
        return refused(request, error, "kdp:customers")
    if error:
        if request.htmx:
            ctx = {"upload": staged, "refresh_error": error}
            return render(request, "kdp/upload_detail.html#customer-refresh", ctx)
        return refused(request, error, "kdp:upload_detail", staged.pk)
    job = queue_customer_sync(account, user=request.user, request=request)
    if staged is not None:
        if request.htmx:
            return render(request, "kdp/upload_detail.html#customer-refresh", {"upload": staged, "refresh_job": job})
        messages.success(
            request, f"Job #{job.pk} is refreshing the customers of {account} from Knox; reload this page when it ends."
        )
        return redirect("kdp:upload_detail", staged.pk)
    return queued(request, job, f"Job #{job.pk} is refreshing the customers of {account} from Knox.")


# --- transactions -------------------------------------------------------------------------------------------


def _transactions_matching(search: str) -> QuerySet[Transaction]:
    """The transactions the list's search matches, whatever its page (portal.lists counts them)."""
    qs = Transaction.objects.all()
    return qs.filter(transaction_id__startswith=search.lower()) if search else qs


@require_perm(ACCESS)
@require_GET
def transactions(request: HttpRequest) -> HttpResponse:
    qs = Transaction.objects.select_related("customer", "account", "job").order_by("-id")
    form = forms.TransactionFilterForm(request.GET)
    before, search = (form.cleaned_data["before"], form.cleaned_data["q"].strip()) if form.is_valid() else (None, "")
    if before:
        qs = qs.filter(id__lt=before)
    if search:
        qs = qs.filter(transaction_id__startswith=search.lower())
    page, next_before = cut_page(qs, PAGE_SIZE)
    ctx = {
        "transactions": page,
        "next_before": next_before,
        "q": search,
        **list_context(request, _transactions_matching(search), singular="transaction"),
    }
    return render(request, "kdp/transactions.html", ctx)


@require_perm(ACCESS)
@require_GET
def transaction_detail(request: HttpRequest, pk: int) -> HttpResponse:
    tx = get_object_or_404(Transaction.objects.select_related("customer", "account", "job"), pk=pk)
    failures = tx.devices.filter(outcome=TransactionDevice.Outcome.FAILED).order_by("id")[:500]
    # Knox's answer as indented JSON (its own words), not as a Python dict.
    raw_status = json.dumps(tx.raw_status, indent=2, ensure_ascii=False) if tx.raw_status else ""
    return render(request, "kdp/transaction_detail.html", {"tx": tx, "failures": failures, "raw_status": raw_status})


# --- reconcile ----------------------------------------------------------------------------------------------

RECONCILE_SCHEDULE = DailySchedule(
    "kdp.tasks.scheduled_reconcile",
    "KDP reconcile: account ",
    page="kdp:reconcile",
    audit=("kdp.reconcile_schedule", "kdp.reconcile_unschedule"),
    words=("{account} will be reconciled with Knox every day at {hour:02d}:00 UTC.", "Daily reconcile removed."),
    form=forms.ScheduleForm,
)


@require_perm(ACCESS)
@require_GET
def reconcile(request: HttpRequest) -> HttpResponse:
    ctx = {
        "jobs": Job.objects.filter(kind="kdp.reconcile").select_related("account", "created_by")[:30],
        "accounts": KnoxAccount.objects.filter(is_active=True),
        "schedules": RECONCILE_SCHEDULE.rows(),
        "schedule_form": forms.ScheduleForm(),
        "can_queue": request.user.has_perm(QUEUE),
    }
    return render(request, "kdp/reconcile.html", ctx)


RECONCILE_PAGE_SIZE = 50


@require_perm(ACCESS)
@require_GET
@vary_on_headers("HX-Request")
def reconcile_job(request: HttpRequest, pk: int) -> HttpResponse:
    """One reconcile report's differences on screen: filtered by kind and identifier prefix, paged by (kind,
    identifier) cursor, all in the URL; the counts per kind come from one GROUP BY on the report's index. A job that
    is not a reconcile has no differences: its own page."""
    the_job = get_job_for_user(request, pk, KDP_JOB_KINDS)
    if the_job.kind != "kdp.reconcile":
        return redirect("kdp:job", the_job.pk)
    form = forms.ReconcileFilterForm(request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest("Unknown filter or position")  # the page only links valid ones
    drift, q, after = form.cleaned_data["drift"], form.cleaned_data["q"], form.cleaned_data["after"]
    items = ReconcileItem.objects.filter(job=the_job)
    by_kind = dict(items.values_list("drift").annotate(n=Count("id")).order_by())
    if drift:
        items = items.filter(drift=drift)
    if q:
        items = items.filter(identifier__startswith=q)
    matching = by_kind.get(drift, 0) if drift and not q else (sum(by_kind.values()) if not q else items.count())
    if after is not None:
        items = items.filter(Q(drift__gt=after[0]) | Q(drift=after[0], identifier__gt=after[1]))
    page = list(items.order_by("drift", "identifier")[: RECONCILE_PAGE_SIZE + 1])
    last = page[RECONCILE_PAGE_SIZE - 1] if len(page) > RECONCILE_PAGE_SIZE else None
    ctx = {
        "job": the_job,
        "form": form,
        "items": page[:RECONCILE_PAGE_SIZE],
        "kinds": [(value, label, by_kind.get(value, 0)) for value, label in ReconcileItem.Drift.choices],
        "total": sum(by_kind.values()),
        "matching": matching,
        "filtered": bool(drift or q),
        "first_page": after is None,
        "query": {"drift": drift, "q": q},
        "next_after": f"{last.drift}:{last.identifier}" if last is not None else None,
    }
    if request.htmx and request.htmx.target == "differences":
        return render(request, "kdp/reconcile_job.html#differences", ctx)
    return render(request, "kdp/reconcile_job.html", ctx)


@require_perm(QUEUE)
@require_POST
def reconcile_run(request: HttpRequest) -> HttpResponse:
    form = forms.ReconcileRunForm(request.POST)
    if not form.is_valid():
        if unknown_account(form):
            return HttpResponseBadRequest("Unknown account")  # the page only offers existing accounts
        return refused(request, form_errors(form), "kdp:reconcile")
    account = form.cleaned_data["account"]
    job = queue_reconcile(account, user=request.user, request=request)
    return queued(request, job, f"Job #{job.pk} is comparing {account} with Knox.")


reconcile_schedule, reconcile_unschedule = RECONCILE_SCHEDULE.views(QUEUE)


# --- dashboard panel (portal.dashboard calls this; see kdp/apps.py) -----------------------------------------

CHART_DAYS = 30


def dashboard_panel(request: HttpRequest) -> str:
    """KDP figures for the dashboard: devices by state and by customer, and registrations per day as SVG."""
    # Counting a million devices by state takes a noticeable moment: reuse the figure for a minute.
    by_state = cache.get_or_set(
        DASHBOARD_STATE_CACHE_KEY,
        lambda: dict(Device.objects.values_list("state").annotate(n=Count("id")).order_by()),
        60,
    )
    top_customers = Customer.objects.filter(device_count__gt=0).select_related("account").order_by("-device_count")[:8]
    start = timezone.localdate() - timedelta(days=CHART_DAYS - 1)
    per_day = (
        Transaction.objects.filter(operation="upload", completed_at__date__gte=start)
        .annotate(day=TruncDate("completed_at"))
        .values("day")
        .annotate(n=Sum("succeeded"))
        .order_by()
    )
    counts: dict[date, int] = {row["day"]: row["n"] or 0 for row in per_day}
    chart = bar_chart_svg(daily_series(counts, start, timezone.localdate()), title="Devices registered per day")
    ctx = {
        "by_state": [(label, by_state.get(value, 0)) for value, label in Device.State.choices],
        "top_customers": top_customers,
        "chart": chart,
    }
    return render_to_string("kdp/_dashboard_panel.html", ctx, request=request)
