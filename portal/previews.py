"""The steps every service's spreadsheet flow shares: staging the file, and the preview page with its htmx regions.

KDP (kdp.views.upload, upload_detail) and Knox Guard (guard.views.bulk_new, upload_new, bulk_detail) stage their
spreadsheets in the same table (portal.models.Upload, told apart by `service`) and show the same preview regions
(templates/portal/_preview_status.html, _preview_rows.html): what differs is passed in, never copied.
"""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_htmx.http import HttpResponseClientRefresh

from portal import exports
from portal.models import AuditEvent, KnoxAccount, Upload, UploadRow

# What every service's confirm says when its spreadsheet cannot be submitted (any more).
NOT_READY = "This spreadsheet is not ready to submit (it was refused, is still being read, or was already submitted)."

# The regions every preview page defines (as template partials) and re-renders on their own.
PREVIEW_REGIONS = ("upload-status", "preview-rows")


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
