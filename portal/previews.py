"""The steps every service's spreadsheet flow shares: staging the file, the preview's rows, the preview page with
its htmx regions, and the export of the rows that will not be sent.

KDP (kdp.views.upload, upload_detail) and Knox Guard (guard.views.bulk_new, upload_new, bulk_detail) stage their
spreadsheets in the same table (portal.models.Upload, told apart by `service`) and show the same preview regions
(templates/portal/_preview_status.html, _preview_rows.html): what differs is passed in, never copied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseClientRefresh

from portal import exports, forms, uploads
from portal.lists import cut_page
from portal.models import AuditEvent, KnoxAccount, Upload, UploadRow
from portal.views import ACCESS, QUEUE, require_perm

# What every service's confirm says when its spreadsheet cannot be submitted (any more).
NOT_READY = "This spreadsheet is not ready to submit (it was refused, is still being read, or was already submitted)."

# The regions every preview page defines (as template partials) and re-renders on their own.
PREVIEW_REGIONS = ("upload-status", "preview-rows")


def get_staged(pk: int, service: str) -> Upload:
    """The staged spreadsheet `pk` of `service` (404 otherwise: KDP and Knox Guard stage theirs in the same table)."""
    return get_object_or_404(Upload.objects.select_related("account", "parse_job", "job"), pk=pk, service=service)


def cannot_submit(staged: Upload, service: str) -> str:
    """Why the staged spreadsheet cannot be submitted to `service` now, or "" when it can: it is not ready (refused,
    still being read, already submitted), or its account cannot call the service yet."""
    if staged.status != Upload.Status.READY:
        return NOT_READY
    return staged.account.cannot_call(service)


def stage_spreadsheet(
    request: HttpRequest,
    file: UploadedFile,
    *,
    service: str,
    account: KnoxAccount,
    operation: str,
    **fields: Any,
) -> Upload:
    """Store a posted spreadsheet as a staged Upload of `service`, start reading it and audit it.

    The file is only read by the parse job (Upload.start_parsing), never while the request waits. `fields` are the
    service's own Upload fields (KDP: allow_bad_check_digit). The audit action is `<service>.file_upload`, the name
    portal.words describes.
    """
    staged = Upload(
        service=service,
        account=account,
        created_by=request.user,
        operation=operation,
        filename=file.name[:255],
        **fields,
    )
    staged.file.save(file.name, file, save=False)
    staged.save()
    staged.start_parsing(request.user)
    AuditEvent.objects.record(
        f"{service}.file_upload",
        request=request,
        target=staged,
        summary={"file": file.name, "bytes": file.size, "operation": staged.operation},
    )
    return staged


PREVIEW_PAGE_SIZE = 50


def preview_rows(request: HttpRequest, staged: Upload) -> dict[str, Any]:
    """The rows part of a staged spreadsheet's preview, the same for every service: filtered by status (or
    "problems"), paged by row number, and shown once the file was read (a refused file shows its reasons too)."""
    filters = forms.PreviewFilterForm(request.GET)
    rows = staged.read_rows()
    after, status = 0, ""
    if filters.is_valid():
        status = filters.cleaned_data["status"]
        if status == "problems":
            rows = rows.exclude(status__in=(UploadRow.Status.VALID, UploadRow.Status.SKIPPED))
        elif status:
            rows = rows.filter(status=status)
        after = filters.cleaned_data["after"] or 0
    page, next_after = cut_page(
        rows.filter(row_number__gt=after).order_by("row_number"), PREVIEW_PAGE_SIZE, lambda row: row.row_number
    )
    return {
        "upload": staged,
        "rows": page,
        "next_after": next_after,
        "filters": filters,
        "status_filter": status,
        "can_queue": request.user.has_perm(QUEUE),
        "can_fix": request.user.has_perm(QUEUE) and uploads.can_fix_rows(staged),
        "show_rows": staged.status in (Upload.Status.READY, Upload.Status.SUBMITTED)
        or (staged.status == Upload.Status.REFUSED and bool(staged.rows_total)),
    }


def htmx_target(request: HttpRequest) -> str | None:
    """The id of the region an htmx request asks for; None for a plain page view."""
    return request.htmx.target if request.htmx else None  # type: ignore[attr-defined]


def preview_response(
    request: HttpRequest, staged: Upload, template: str, ctx: dict[str, Any], *, regions: tuple[str, ...] = ()
) -> HttpResponse:
    """A staged spreadsheet's preview page, or the one region an htmx request targets.

    The status region polls itself while the file is read; once parsing has ended the whole page is reloaded,
    because the rows and the confirm step appear only then. `regions` are the service's own partials (beyond
    PREVIEW_REGIONS) that re-render on their own.
    """
    target = htmx_target(request)
    if target == "upload-status" and staged.status != Upload.Status.PARSING:
        return HttpResponseClientRefresh()
    if target in (*PREVIEW_REGIONS, *regions):
        return render(request, f"{template}#{target}", ctx)
    return render(request, template, ctx)


def problem_rows_xlsx(
    request: HttpRequest,
    staged: Upload,
    *,
    audit_action: str,
    what: str,
    value_columns: tuple[exports.Column, ...] = (),
    last_columns: tuple[exports.Column, ...] = (),
) -> HttpResponse:
    """The rows of a staged spreadsheet that will not be sent (all but the valid and the empty ones) as an Excel
    file to fix them at the source, audited as an export (`what` names it in the audit log). `value_columns`
    follow the file's value (Knox Guard: the Approve ID), `last_columns` end each row (KDP: the order number)."""
    rows = staged.read_rows().exclude(status__in=(UploadRow.Status.VALID, UploadRow.Status.SKIPPED))
    columns = [
        exports.Column("Row", "row_number", "number", 8),
        exports.Column("Value in the file", "raw", "identifier", 24),
        *value_columns,
        exports.Column("Problem", lambda r: r.get_status_display(), "text", 22),
        exports.Column("Reason", "reason", "text", 70),
        exports.Column("Suggested value", "suggestion", "identifier", 20),
        *last_columns,
    ]
    AuditEvent.objects.record(audit_action, request=request, target=staged, summary={"what": what})
    filename = f"{staged.filename}-problems.xlsx"
    return exports.xlsx_response(columns, rows.order_by("row_number").iterator(), filename, "Problems")


def problem_rows_view(service: str, *, what: str, **columns: tuple[exports.Column, ...]) -> Callable[..., HttpResponse]:
    """A service's download of a staged spreadsheet's problem rows (GET, for viewers): problem_rows_xlsx with the
    service's own `columns` (value_columns, last_columns), audited as `<service>.export`."""

    @require_perm(ACCESS)
    @require_GET
    def problem_rows(request: HttpRequest, pk: int) -> HttpResponse:
        staged = get_staged(pk, service)
        return problem_rows_xlsx(request, staged, audit_action=f"{service}.export", what=what, **columns)

    return problem_rows
