"""E-FOTA pages: groups registered to licences, licence checks, firmware lookup, force updates with their live
status, and the abnormal-devices report.

Who may do what (docs/efota.md):
- viewers (ACCESS) read every page and run the three E-FOTA *reads* (licence check, firmware lookup, abnormal
  devices): they change nothing at Samsung, each is stored as an EfotaCall and audited;
- operators (QUEUE) register groups, move them to another licence, start force updates and ask for a manual
  status refresh (unthrottled E-FOTA calls).
A read runs while the page waits; anything that changes E-FOTA's state is a job (efota.tasks).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from efota import forms
from efota.client import EfotaClient, EfotaValidationError, explain, fud_category
from efota.models import (
    EfotaCall,
    EfotaGroup,
    EfotaLicence,
    ForceUpdate,
    ForceUpdateDevice,
    check_licence,
    queue_force_update,
    queue_license_change,
    queue_register,
)
from efota.tasks import log_call, refresh_force_update
from portal.knox.errors import KnoxError
from portal.models import AuditEvent, Job, KnoxAccount
from portal.views import ACCESS, QUEUE, require_perm

# The polled status section asks E-FOTA about a part at most this often, however many pages poll it.
STATUS_REFRESH_SECONDS = 5
DEVICES_SHOWN = 500


def _get_efota_job_for_user(request: HttpRequest, pk: int) -> Job:
    return get_object_or_404(Job.objects.select_related("account", "created_by"), pk=pk)


def _get_group_for_user(request: HttpRequest, pk: int) -> EfotaGroup:
    return get_object_or_404(EfotaGroup.objects.select_related("account"), pk=pk, account__is_active=True)


def _knox_failure(e: KnoxError) -> dict[str, str]:
    """What a page shows for a refused call: the sentence, the FUD code and its category."""
    return {"message": explain(e), "code": e.code, "category": fud_category(e.code) if e.code else ""}


# --- home ---------------------------------------------------------------------------------------------------


@require_perm(ACCESS)
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    ctx = {
        "accounts": [(a, a.missing_credentials("efota")) for a in KnoxAccount.objects.filter(is_active=True)],
        "groups": EfotaGroup.objects.select_related("account")[:50],
        "licences": EfotaLicence.objects.select_related("account")[:50],
        "jobs": Job.objects.filter(kind__startswith="efota.").select_related("account", "created_by")[:15],
        "calls": EfotaCall.objects.select_related("account", "actor")[:15],
        "can_queue": request.user.has_perm(QUEUE),
    }
    return render(request, "efota/index.html", ctx)


# --- groups -------------------------------------------------------------------------------------------------


def _groups_context(
    request: HttpRequest,
    register: forms.RegisterGroupForm | None = None,
    change: forms.ChangeLicenceForm | None = None,
) -> dict[str, Any]:
    """The groups page; a form that failed validation is shown again in place, with its errors."""
    can_queue = request.user.has_perm(QUEUE)
    groups = list(EfotaGroup.objects.select_related("account").filter(account__is_active=True))
    rows = [(g, change if change is not None and change.group.pk == g.pk else None) for g in groups]
    return {
        "rows": rows,
        "register": (register or forms.RegisterGroupForm()) if can_queue else None,
        "customer_ids": forms.known_customer_ids(),
        "can_queue": can_queue,
    }


@require_perm(ACCESS)
@require_GET
def groups(request: HttpRequest) -> HttpResponse:
    return render(request, "efota/groups.html", _groups_context(request))


@require_perm(QUEUE)
@require_POST
def group_register(request: HttpRequest) -> HttpResponse:
    form = forms.RegisterGroupForm(request.POST)
    if form.is_valid():
        d = form.cleaned_data
        try:
            job = queue_register(
                d["account"], d["customer_id"], d["group_id"], d["licence"], user=request.user, request=request
            )
        except EfotaValidationError as e:
            form.add_efota_errors(e)
        else:
            messages.success(request, f"Job #{job.pk} queued: {job.title}.")
            return redirect("efota:job", job.pk)
    return render(request, "efota/groups.html", _groups_context(request, register=form))


@require_perm(QUEUE)
@require_POST
def group_license_change(request: HttpRequest, pk: int) -> HttpResponse:
    group = _get_group_for_user(request, pk)
    form = forms.ChangeLicenceForm(request.POST, group=group)
    if form.is_valid():
        try:
            job = queue_license_change(group, form.cleaned_data["licence"], user=request.user, request=request)
        except EfotaValidationError as e:
            form.add_error("licence", list(e.errors.values()))
        else:
            messages.success(request, f"Job #{job.pk} queued: {job.title}.")
            return redirect("efota:job", job.pk)
    return render(request, "efota/groups.html", _groups_context(request, change=form))


# --- licences -----------------------------------------------------------------------------------------------


@require_perm(ACCESS)
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def licences(request: HttpRequest) -> HttpResponse:
    """Known licences and the "check licence" form; a check asks E-FOTA now and stores the answer."""
    form = forms.LicenceCheckForm(request.POST or None)
    ctx: dict[str, Any] = {"form": form, "checked": None, "failure": None, "customer_ids": forms.known_customer_ids()}
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            ctx["checked"] = check_licence(
                d["account"], d["customer_id"], d["licence"], user=request.user, request=request
            )
        except EfotaValidationError as e:
            form.add_efota_errors(e)
        except KnoxError as e:
            ctx["failure"] = _knox_failure(e)
    if request.htmx:
        return render(request, "efota/licences.html#licence-check", ctx)
    ctx["licences"] = EfotaLicence.objects.select_related("account").filter(account__is_active=True)
    return render(request, "efota/licences.html", ctx)


# --- firmware -----------------------------------------------------------------------------------------------


@require_perm(ACCESS)
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def firmware(request: HttpRequest) -> HttpResponse:
    form = forms.FirmwareForm(request.POST or None)
    ctx: dict[str, Any] = {"form": form, "versions": None, "failure": None, "customer_ids": forms.known_customer_ids()}
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        account: KnoxAccount = d["account"]
        what = f"{d['model'].upper()}/{d['sales_code'].upper()}" + (f" after {d['current']}" if d["current"] else "")
        error: Exception | None = None
        try:
            ctx["versions"] = EfotaClient(account).firmware_list(
                d["customer_id"], d["licence"], d["model"], d["sales_code"], d["current"]
            )
        except EfotaValidationError as e:
            error = e
            form.add_efota_errors(e)
        except KnoxError as e:
            error = e
            ctx["failure"] = _knox_failure(e)
        log_call(None, account.pk, "firmwareList", what, error, request.user.pk)
        AuditEvent.objects.record(
            "efota.firmware_list",
            request=request,
            target=account,
            summary={
                "customer_id": d["customer_id"], "licence": d["licence"], "model": d["model"].upper(),
                "sales_code": d["sales_code"].upper(), "current": d["current"], "ok": error is None,
                "code": getattr(error, "code", "") if error else "", "versions": len(ctx["versions"] or []),
            },
        )  # fmt: skip
    if request.htmx:
        return render(request, "efota/firmware.html#firmware-result", ctx)
    return render(request, "efota/firmware.html", ctx)


# --- abnormal devices ---------------------------------------------------------------------------------------


@require_perm(ACCESS)
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def abnormal(request: HttpRequest) -> HttpResponse:
    """Which of the given devices E-FOTA reports as abnormal (not enrolled, blocked for lack of licence, …)."""
    form = forms.AbnormalForm(request.POST or None, request.FILES or None)
    ctx: dict[str, Any] = {
        "form": form, "report": None, "asked": 0, "failure": None, "customer_ids": forms.known_customer_ids()
    }  # fmt: skip
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        account: KnoxAccount = d["account"]
        devices = d["devices"]
        error: Exception | None = None
        try:
            found = EfotaClient(account).abnormal_devices(d["customer_id"], d["licence"], devices)
            ctx["report"] = sorted(found.items())
            ctx["asked"] = len(devices)
        except EfotaValidationError as e:
            error = e
            form.add_efota_errors(e)
        except KnoxError as e:
            error = e
            ctx["failure"] = _knox_failure(e)
        log_call(None, account.pk, "abnormalDeviceList", f"{len(devices)} devices", error, request.user.pk)
        AuditEvent.objects.record(
            "efota.abnormal_devices",
            request=request,
            target=account,
            summary={
                "customer_id": d["customer_id"], "licence": d["licence"], "devices": len(devices),
                "ok": error is None, "code": getattr(error, "code", "") if error else "",
                "abnormal": sum(len(v) for v in dict(ctx["report"] or []).values()),
            },
        )  # fmt: skip
    if request.htmx:
        return render(request, "efota/abnormal.html#abnormal-result", ctx)
    return render(request, "efota/abnormal.html", ctx)


# --- force updates ------------------------------------------------------------------------------------------


@require_perm(QUEUE)
@require_http_methods(["GET", "POST"])
def force_update(request: HttpRequest) -> HttpResponse:
    form = forms.ForceUpdateForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            job = queue_force_update(
                d["account"], customer_id=d["customer_id"], licence=d["licence"], model=d["model"],
                sales_code=d["sales_code"], serials=d["devices"], target=d["target"], network_type=d["network_type"],
                user=request.user, request=request,
            )  # fmt: skip
        except EfotaValidationError as e:
            form.add_efota_errors(e)
        else:
            notes = " ".join(getattr(form, "file_notes", []))
            messages.success(request, f"Job #{job.pk} queued: {job.title}. {notes}".strip())
            return redirect("efota:job", job.pk)
    ctx = {"form": form, "customer_ids": forms.known_customer_ids(), "has_accounts": bool(forms.efota_accounts())}
    return render(request, "efota/force_update.html", ctx)


# --- jobs ---------------------------------------------------------------------------------------------------


def _status_context(request: HttpRequest, job: Job) -> dict[str, Any]:
    """The force update's parts and devices. The section keeps polling while the job is still sending, or
    while E-FOTA still counts devices as processing (and the last status check was not refused for good)."""
    parts = list(ForceUpdate.objects.filter(job=job).order_by("sequence"))
    devices = ForceUpdateDevice.objects.filter(force_update__job=job).select_related("force_update")
    polling = not job.is_finished or any(_part_in_progress(p) for p in parts)
    return {
        "job": job,
        "parts": parts,
        "devices": devices.order_by("serial")[:DEVICES_SHOWN],
        "device_count": devices.count(),
        "devices_shown": DEVICES_SHOWN,
        "polling": polling,
        "can_queue": request.user.has_perm(QUEUE),
    }


def _part_in_progress(fu: ForceUpdate) -> bool:
    refused_for_good = bool(fu.last_code) and fud_category(fu.last_code) == "processing"
    return bool(fu.force_update_id) and fu.processing > 0 and not refused_for_good


@require_perm(ACCESS)
@require_GET
@vary_on_headers("HX-Request")
def job(request: HttpRequest, pk: int) -> HttpResponse:
    the_job = _get_efota_job_for_user(request, pk)
    if not the_job.kind.startswith("efota."):
        return redirect(the_job.get_absolute_url())  # another service's job: its own page
    ctx = _status_context(request, the_job)
    group_pk = the_job.params.get("group")
    ctx["group"] = EfotaGroup.objects.filter(pk=group_pk).first() if group_pk else None
    ctx["can_cancel"] = request.user.has_perm(QUEUE) and the_job.status == Job.Status.QUEUED
    if request.htmx and request.htmx.target == "fu-status":
        return render(request, "efota/job.html#fu-status", ctx)
    return render(request, "efota/job.html", ctx)


@require_perm(ACCESS)
@require_GET
@never_cache
def job_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The polled status section. Each part still in progress is asked about at most once per
    STATUS_REFRESH_SECONDS, however many browsers poll: the part is claimed with a conditional update of
    `checked_at` first, so two polls arriving together make one call."""
    the_job = _get_efota_job_for_user(request, pk)
    if not the_job.kind.startswith("efota."):
        return redirect(the_job.get_absolute_url())
    now = timezone.now()
    due = Q(checked_at__isnull=True) | Q(checked_at__lt=now - timedelta(seconds=STATUS_REFRESH_SECONDS))
    for fu in ForceUpdate.objects.filter(job=the_job).select_related("account").order_by("sequence"):
        if _part_in_progress(fu) and ForceUpdate.objects.filter(due, pk=fu.pk).update(checked_at=now) == 1:
            _refresh_part(request, the_job, fu)
    return render(request, "efota/job.html#fu-status", _status_context(request, the_job))


@require_perm(QUEUE)
@require_POST
def job_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask E-FOTA now for the status of every started part of a force update."""
    the_job = _get_efota_job_for_user(request, pk)
    if the_job.kind != "efota.force_update":
        return redirect(the_job.get_absolute_url())
    parts = [fu for fu in ForceUpdate.objects.filter(job=the_job).select_related("account") if fu.force_update_id]
    failures = [f for f in (_refresh_part(request, the_job, fu) for fu in parts) if f]
    AuditEvent.objects.record(
        "efota.force_update_refresh",
        request=request,
        target=the_job,
        summary={"parts": len(parts), "failed": len(failures), "codes": sorted({f["code"] for f in failures})},
    )
    if request.htmx:
        return render(request, "efota/job.html#fu-status", _status_context(request, the_job))
    if not parts:
        messages.info(request, "No part of this force update has started yet; there is no status to ask for.")
    for failure in failures:
        messages.error(request, failure["message"] + (f" [{failure['code']}]" if failure["code"] else ""))
    if parts and not failures:
        messages.success(request, f"Status of {len(parts)} part{'s' if len(parts) != 1 else ''} refreshed from E-FOTA.")
    return redirect("efota:job", the_job.pk)


def _refresh_part(request: HttpRequest, job: Job, fu: ForceUpdate) -> dict[str, str] | None:
    """refresh_force_update for one part, its outcome stored as an EfotaCall; the failure, if any, for the page."""
    try:
        fu = refresh_force_update(fu)
    except KnoxError as e:
        log_call(job, fu.account_id, "forceUpdateSummary", fu.force_update_id, e, request.user.pk)
        # Kept on the part so the page says why the figures are stale, and polling stops on a permanent refusal.
        ForceUpdate.objects.filter(pk=fu.pk).update(last_code=e.code[:20], last_error=explain(e)[:400])
        return _knox_failure(e)
    figures = f"{fu.force_update_id}: {fu.downloaded} downloaded, {fu.failed} failed, {fu.processing} processing"
    log_call(job, fu.account_id, "forceUpdateSummary", figures, None, request.user.pk)
    if fu.last_code and fu.force_update_id:
        ForceUpdate.objects.filter(pk=fu.pk).update(last_code="", last_error="")
    return None
