"""The lists of devices every service shows the same way: its device list (filtered, paged, counted, exported) and
a job's per-device results (filtered by outcome, paged by id with portal.lists.cut_page).

KDP (kdp.views.devices, devices_export, job) and Knox Guard (guard.views.devices, devices_export, _job_context)
pass their own model, form, columns and words; the steps are here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from django.db.models import QuerySet
from django.forms import Form
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.utils import timezone

from portal import exports
from portal.lists import cut_page, list_context
from portal.models import AuditEvent
from portal.previews import htmx_target

EXPORT_FORMATS = ("csv", "xlsx")


class DeviceFilter(Protocol):
    """A service's DeviceFilterForm: an account field and the list's other filters as one dict."""

    cleaned_data: dict[str, Any]

    def is_valid(self) -> bool: ...

    def filters(self) -> dict[str, Any]: ...


class DeviceManager(Protocol):
    def matching(self, account: Any, filters: dict[str, Any]) -> QuerySet[Any]: ...

    def none(self) -> QuerySet[Any]: ...


def matching(form: DeviceFilter, devices: DeviceManager) -> QuerySet[Any]:
    """The devices the list's filters match, whatever its page (portal.lists counts them); none for bad filters."""
    if not form.is_valid():
        return devices.none()
    return devices.matching(form.cleaned_data.get("account"), form.filters())


def device_list(
    request: HttpRequest,
    form: DeviceFilter,
    devices: DeviceManager,
    page_of: Callable[[Any], tuple[list[Any], Any]],
    template: str,
    **extra: Any,
) -> HttpResponse:
    """A device list page, or its table alone for htmx (#device-table): `page_of(form)` cuts one page of the
    matching devices, the total comes from portal.lists, and the other pages' links keep every filter but the
    position. `extra` is what the service's page adds."""
    rows, next_after = page_of(form) if form.is_valid() else ([], None)
    query = request.GET.copy()
    query.pop("after", None)
    ctx = {
        "form": form,
        "devices": rows,
        "next_after": next_after,
        "query": query.urlencode(),
        **extra,
        **list_context(request, matching(form, devices), singular="device"),
    }
    if htmx_target(request) == "device-table":
        return render(request, f"{template}#device-table", ctx)
    return render(request, template, ctx)


def export_view(
    filter_form: Callable[[Any], DeviceFilter], devices: DeviceManager, export: exports.Export, *, audit_action: str
) -> Callable[..., HttpResponse]:
    """A service's device export view (GET, for viewers): `device_export` of the list's filters."""
    from django.views.decorators.http import require_GET

    from portal.views import ACCESS, require_perm

    @require_perm(ACCESS)
    @require_GET
    def devices_export(request: HttpRequest, fmt: str) -> HttpResponse:
        return device_export(request, fmt, filter_form(request.GET), devices, export, audit_action=audit_action)

    return devices_export


def device_export(
    request: HttpRequest,
    fmt: str,
    form: DeviceFilter,
    devices: DeviceManager,
    export: exports.Export,
    *,
    audit_action: str,
) -> HttpResponse:
    """Every device matching the list's filters as a streamed CSV or an Excel file named `<export.name>-<time>`,
    audited with the filters (an export carries devices out of the portal)."""
    if not form.is_valid() or fmt not in EXPORT_FORMATS:
        return HttpResponseBadRequest("Invalid filter")
    filters = form.filters()
    AuditEvent.objects.record(
        audit_action, request=request, summary={"what": "devices", "format": fmt, "filter": filters}
    )
    filename = f"{export.name}-{timezone.now().strftime('%Y%m%d-%H%M')}.{fmt}"
    rows = matching(form, devices).select_related(export.related).order_by("id").iterator(chunk_size=2000)
    if fmt == "csv":
        return exports.stream_csv(export.columns, rows, filename)
    return exports.xlsx_response(export.columns, rows, filename, export.sheet)


def outcome_page(filters: Form, results: QuerySet[Any], size: int) -> dict[str, Any]:
    """One page of a job's per-device results: the service's results filter (`outcome`, `after`) applied, paged
    by id. Bad filters show the first page of every outcome."""
    outcome, after = "", 0
    if filters.is_valid():
        outcome, after = filters.cleaned_data["outcome"], filters.cleaned_data["after"] or 0
    if outcome:
        results = results.filter(outcome=outcome)
    rows, next_after = cut_page(results.filter(id__gt=after).order_by("id"), size)
    return {"results": rows, "next_after": next_after, "outcome": outcome, "after": after}
