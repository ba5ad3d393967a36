"""E-FOTA pages: groups registered to licences, licence checks, firmware lookup, force updates with their live
status, and the abnormal-devices report.

Who may do what (docs/efota.md):
- viewers (ACCESS) read every page and run the three E-FOTA *reads* (licence check, firmware lookup, abnormal
  devices): they change nothing at Samsung, each is stored as an EfotaCall and audited;
- operators (QUEUE) register groups, move them to another licence, start force updates and ask for a manual
  status refresh.
No page calls E-FOTA while the request waits: a read is a lookup job (portal.lookups, efota.tasks.lookup_*) whose
progress and answer the page follows, anything that changes E-FOTA's state is a job (efota.tasks), and a force
update's status is followed by its job (efota.tasks.ForceUpdates.poll); the polled status section reads the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from efota import forms
from efota.client import EfotaValidationError
from efota.models import (
    ABNORMAL_LOOKUP,
    FIRMWARE_LOOKUP,
    FORCE_UPDATE_REFRESH,
    LICENCE_LOOKUP,
    EfotaCall,
    EfotaGroup,
    EfotaLicence,
    ForceUpdate,
    ForceUpdateDevice,
    pending_status_refresh,
    queue_abnormal_check,
    queue_firmware_lookup,
    queue_force_update,
    queue_licence_check,
    queue_license_change,
    queue_register,
    queue_status_refresh,
)
from portal.lists import list_context
from portal.lookups import lookup_context
from portal.models import Job, KnoxAccount
from portal.views import ACCESS, QUEUE, follow_up, get_job_for_user, queued, require_perm

DEVICES_SHOWN = 500


def _get_group_for_user(request: HttpRequest, pk: int) -> EfotaGroup:
    return get_object_or_404(EfotaGroup.objects.select_related("account"), pk=pk, account__is_active=True)


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
    known = forms.known_licences() if can_queue else []  # read once, not once per group
    rows = [
        (
            g,
            change if change is not None and change.group.pk == g.pk else None,
            forms.ChangeLicenceForm.options(g, known) if can_queue else [],
        )
        for g in groups
    ]
    return {
        "rows": rows,
        "register": (register or forms.RegisterGroupForm()) if can_queue else None,
        "can_queue": can_queue,
        **list_context(request, EfotaGroup.objects.filter(account__is_active=True), singular="group"),
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
            return queued(request, job)
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
            return queued(request, job)
    return render(request, "efota/groups.html", _groups_context(request, change=form))


# --- the three reads: licence check, firmware lookup, abnormal devices --------------------------------------------


def _lookup_view(
    form_class: type[Form],
    kind: str,
    page: str,
    region: str,
    ask: Callable[[dict[str, Any], Any], Job],
    more: Callable[[HttpRequest], dict[str, Any]] | None = None,
) -> Callable[..., HttpResponse]:
    """A page that asks E-FOTA one question (for viewers: ACCESS) through a lookup job (portal.lookups).

    A valid POST queues the lookup (`ask(cleaned_data, user)`): htmx gets the page's region `page#region` following
    it (progress, then answer); without JavaScript, the page opened on the job (`?job=<pk>`), which shows it with the
    form filled in as it was sent. `more` adds what the whole page shows besides the form (never the region).
    """

    @require_perm(ACCESS)
    @require_http_methods(["GET", "POST"])
    @vary_on_headers("HX-Request")
    def view(request: HttpRequest) -> HttpResponse:
        form = form_class(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            job = ask(form.cleaned_data, request.user)
            if not request.htmx:
                return redirect(job.get_absolute_url())
            return render(request, f"{page}#{region}", {"form": form, **lookup_context(request, kind, job)})
        ctx: dict[str, Any] = {"form": form}
        if request.method == "GET" and (found := lookup_context(request, kind)):
            asked = {"account": found["lookup_job"].account_id, **found["lookup_job"].params}
            if "serials" in asked:
                asked["serials"] = "\n".join(asked["serials"])
            ctx = {**found, "form": form_class(initial=asked)}
        if request.htmx:
            return render(request, f"{page}#{region}", ctx)
        return render(request, page, {**ctx, **(more(request) if more else {})})

    return view


def _checked_licences(request: HttpRequest) -> dict[str, Any]:
    checked = EfotaLicence.objects.select_related("account").filter(account__is_active=True)
    return {"licences": checked, **list_context(request, checked, singular="licence")}


# Known licences and the "check licence" form: how many devices a licence covers and when it expires.
licences = _lookup_view(
    forms.LicenceCheckForm,
    LICENCE_LOOKUP,
    "efota/licences.html",
    "licence-check",
    lambda d, user: queue_licence_check(d["account"], d["customer_id"], d["licence"], user=user),
    more=_checked_licences,
)

# The firmware versions E-FOTA offers for a model and sales code.
firmware = _lookup_view(
    forms.FirmwareForm,
    FIRMWARE_LOOKUP,
    "efota/firmware.html",
    "firmware-result",
    lambda d, user: queue_firmware_lookup(
        d["account"], d["customer_id"], d["licence"], d["model"], d["sales_code"], d["current"], user=user
    ),
)

# Which of the given devices E-FOTA reports as abnormal (not enrolled, blocked for lack of licence, …).
abnormal = _lookup_view(
    forms.AbnormalForm,
    ABNORMAL_LOOKUP,
    "efota/abnormal.html",
    "abnormal-result",
    lambda d, user: queue_abnormal_check(d["account"], d["customer_id"], d["licence"], d["devices"], user=user),
)


# --- force updates ------------------------------------------------------------------------------------------


@require_perm(QUEUE)
@require_http_methods(["GET", "POST"])
def force_update(request: HttpRequest) -> HttpResponse:
    form = forms.ForceUpdateForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            job = queue_force_update(
                d["account"],
                customer_id=d["customer_id"],
                licence=d["licence"],
                model=d["model"],
                sales_code=d["sales_code"],
                serials=d["devices"],
                target=d["target"],
                network_type=d["network_type"],
                user=request.user,
                request=request,
            )
        except EfotaValidationError as e:
            form.add_efota_errors(e)
        else:
            notes = " ".join(getattr(form, "file_notes", []))
            return queued(request, job, f"Job #{job.pk} queued: {job.title}. {notes}".strip())
    ctx = {"form": form, "has_accounts": bool(forms.efota_accounts())}
    return render(request, "efota/force_update.html", ctx)


# --- jobs ---------------------------------------------------------------------------------------------------


def _status_context(request: HttpRequest, job: Job) -> dict[str, Any]:
    """The force update's parts and devices, from the database only. The section polls while the job runs (it
    sends, then follows E-FOTA's status: efota.tasks.ForceUpdates) or while a "Refresh status" job is pending."""
    parts = list(ForceUpdate.objects.filter(job=job).order_by("sequence"))
    devices = ForceUpdateDevice.objects.filter(force_update__job=job).select_related("force_update")
    refresh = pending_status_refresh(job) if job.kind == "efota.force_update" else None
    return {
        "job": job,
        "parts": parts,
        "devices": devices.order_by("serial")[:DEVICES_SHOWN],
        "device_count": devices.count(),
        "devices_shown": DEVICES_SHOWN,
        "polling": not job.is_finished or refresh is not None,
        "refresh": refresh,
        # Devices E-FOTA still counted as processing when the job stopped following them.
        "still_processing": sum(p.processing for p in parts if p.is_in_progress) if job.is_finished else 0,
        "can_queue": request.user.has_perm(QUEUE),
    }


def _own_page(request: HttpRequest, job: Job) -> HttpResponse | None:
    """A redirect when `job` is shown elsewhere: another service's job, a lookup (its page), or a status refresh
    (the force update it refreshes)."""
    if job.kind == FORCE_UPDATE_REFRESH:
        return redirect("efota:job", job.params.get("job"))
    page = job.get_absolute_url()
    if page != _job_path(job):
        return redirect(page)
    return None


def _job_path(job: Job) -> str:
    return reverse("efota:job", args=[job.pk])


@require_perm(ACCESS)
@require_GET
@vary_on_headers("HX-Request")
def job(request: HttpRequest, pk: int) -> HttpResponse:
    the_job = get_job_for_user(request, pk)
    elsewhere = _own_page(request, the_job)
    if elsewhere is not None:
        return elsewhere
    ctx = _status_context(request, the_job)
    group_pk = the_job.params.get("group")
    ctx["group"] = EfotaGroup.objects.filter(pk=group_pk).first() if group_pk else None
    ctx["can_cancel"] = request.user.has_perm(QUEUE) and the_job.status == Job.Status.QUEUED
    ctx["network"] = forms.network_label(str(the_job.params.get("network_type", "")))
    if request.htmx and request.htmx.target == "fu-status":
        return render(request, "efota/job.html#fu-status", ctx)
    return render(request, "efota/job.html", ctx)


@require_perm(ACCESS)
@require_GET
@never_cache
def job_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The polled status section: the figures the job (or a status refresh) last read from E-FOTA. Never asks
    E-FOTA: a poll must not wait on it."""
    the_job = get_job_for_user(request, pk)
    elsewhere = _own_page(request, the_job)
    if elsewhere is not None:
        return elsewhere
    return render(request, "efota/job.html#fu-status", _status_context(request, the_job))


# What "Refresh status" says without JavaScript (portal.views.follow_up).
STATUS_REFRESH_WORDS = {
    "nothing": "No part of this force update has started yet; there is no status to ask for.",
    "asking": "Job #{read.pk} queued: asking E-FOTA for the status of {parts}; the figures below change when it answers.",
    "already": "Job #{read.pk} is already asking E-FOTA for the status; the figures below follow it.",
}


@require_perm(QUEUE)
@require_POST
def job_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    """The “Refresh status” button: queue a job that asks E-FOTA for the status of every started part (one at a time per
    force update); the status section follows it."""
    the_job = get_job_for_user(request, pk)
    if the_job.kind != "efota.force_update":
        return redirect(the_job.get_absolute_url())
    refresh, created = queue_status_refresh(the_job, user=request.user)
    region = ("efota/job.html#fu-status", lambda: _status_context(request, the_job))
    return follow_up(request, the_job, refresh, created, region=region, **STATUS_REFRESH_WORDS)
