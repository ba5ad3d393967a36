"""One JSON-ready description of a job, the same for every job kind: `manage.py job_status --json` prints it and
the upload/delete commands print it when they end (the web UI can serve it too).

Every job gets the generic figures from its `portal.models.Job` row. KDP upload/delete jobs and Knox Guard action
and upload jobs add what only they have: the spreadsheet's figures and the devices Knox (or the portal) refused.
Those come from the kdp and guard apps, which are imported inside the functions that need them, keyed on the job's
kind: portal must not depend on a service app at import time (style §1, dependencies flow toward portal), and a
deployment without them still gets the generic summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from portal.models import Job

# Enough to act on from a terminal or a script; the full lists are in the web UI and its CSV exports.
FAILURES_LIMIT = 100
PROBLEMS_LIMIT = 100

KDP_TRANSFER_KINDS = ("kdp.upload", "kdp.delete")
GUARD_PREFIX = "guard."


def job_summary(job: Job) -> dict[str, Any]:
    """The job's state and figures as plain JSON values (ids, strings, numbers, ISO 8601 times, lists)."""
    data: dict[str, Any] = {
        "job": job.pk,
        "kind": job.kind,
        "title": job.title,
        "status": job.status,
        "account": job.account.name if job.account_id else None,
        "created_by": job.created_by.get_username() if job.created_by_id else None,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "total": job.total,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "error": job.error_summary or None,
    }
    if job.kind in KDP_TRANSFER_KINDS:
        data.update(_kdp_transfer_details(job))
    elif job.kind.startswith(GUARD_PREFIX) and job.params.get("action"):
        # Only jobs made by guard.models.queue_action carry an action; device syncs have no per-device figures.
        data.update(_guard_action_details(job))
    elif job.kind == "guard.upload" and job.params.get("upload"):
        data.update(_guard_upload_details(job))
    return data


def upload_figures(upload: Any) -> dict[str, Any]:
    """What a staged spreadsheet (a `portal.models.Upload`, any service) holds, for job summaries and dry-runs.

    `rows` counts the data rows read without the blank ones; `invalid` counts every row that will not be sent
    (malformed, duplicated in the file, or refused by the portal's own records), so rows = valid + invalid.
    """
    from portal.models import UploadRow

    not_sent = (UploadRow.Status.INVALID, UploadRow.Status.DUPLICATE, *UploadRow.CONFLICTS)
    problems = [
        {"row": row.row_number, "value": row.raw, "status": row.status, "reason": row.reason}
        for row in upload.rows.filter(status__in=not_sent).order_by("row_number")[:PROBLEMS_LIMIT]
    ]
    return {
        "file": upload.filename,
        "rows": upload.rows_total - upload.skipped,
        "valid": upload.valid,
        "invalid": upload.invalid + upload.duplicate + upload.conflicts,
        "duplicate": upload.duplicate,
        "skipped": upload.skipped,
        "conflicts": upload.conflicts,
        "problems": problems,
    }


def transfer_failures(job: Job) -> list[dict[str, Any]]:
    """The first FAILURES_LIMIT devices Knox (or the portal) refused in an upload/delete job, in sending order."""
    from kdp.models import TransactionDevice

    failed = TransactionDevice.objects.filter(job=job, outcome=TransactionDevice.Outcome.FAILED).order_by("id")
    return [
        {
            "identifier": d.identifier,
            "row": d.row_number,
            "code": d.code,
            "message": d.message,
            "reason": d.explanation(),
        }
        for d in failed[:FAILURES_LIMIT]
    ]


def _kdp_transfer_details(job: Job) -> dict[str, Any]:
    from kdp.models import Customer, Transaction
    from portal.models import Upload

    # A spreadsheet with several customers is submitted as one job per customer, all naming it in their params.
    upload = Upload.objects.filter(job=job).first() or (
        Upload.objects.filter(pk=job.params["upload"]).first() if "upload" in job.params else None
    )
    if upload is not None:
        figures = upload_figures(upload)
    else:
        # A retry of failed devices or a "delete all matching" from the device list: no spreadsheet behind it.
        figures = dict.fromkeys(("file", "rows", "valid", "invalid", "duplicate", "skipped", "conflicts"))
        figures["problems"] = []
    customer_pk = job.params.get("customer")
    if customer_pk is None:
        # Retries and device-list deletes name their customers per chunk; report the first chunk's.
        first = Transaction.objects.filter(job=job).order_by("sequence").first()
        customer_pk = first.customer_id if first else None
    customer = Customer.objects.filter(pk=customer_pk).values_list("customer_id", flat=True).first()
    return {**figures, "submitted": job.total, "customer": customer, "failures": transfer_failures(job)}


def guard_action_failures(job: Job) -> list[dict[str, Any]]:
    """The first FAILURES_LIMIT devices of a Knox Guard action job that failed, in the job's (spreadsheet) order."""
    from guard.models import GuardAction

    failed = GuardAction.objects.filter(job=job, outcome=GuardAction.Outcome.FAILED).order_by("id")
    return [
        {
            "identifier": a.device_uid,
            "row": a.row_number,
            "code": a.code,
            "message": a.message,
            "reason": a.explanation(),
        }
        for a in failed[:FAILURES_LIMIT]
    ]


def _upload_figures_of(job: Job) -> dict[str, Any]:
    from portal.models import Upload

    upload = Upload.objects.filter(job=job).first()
    if upload is not None:
        return upload_figures(upload)
    # Chosen in the device list rather than from a spreadsheet.
    figures: dict[str, Any] = dict.fromkeys(("file", "rows", "valid", "invalid", "duplicate", "skipped", "conflicts"))
    figures["problems"] = []
    return figures


def _guard_action_details(job: Job) -> dict[str, Any]:
    return {
        **_upload_figures_of(job),
        "submitted": job.total,
        "action": job.params["action"],
        "action_params": job.params.get("action_params") or {},
        "failures": guard_action_failures(job),
    }


def _guard_upload_details(job: Job) -> dict[str, Any]:
    """A POST devices/uploads job: the spreadsheet, Knox's uploadID(s) and the devices Knox called invalid."""
    from guard.models import GuardUpload
    from portal.models import UploadRow

    uploads = list(GuardUpload.objects.filter(job=job).order_by("id"))
    invalid = [r for u in uploads for r in u.invalid_reasons if isinstance(r, dict)][:FAILURES_LIMIT]
    rows = dict(
        UploadRow.objects.filter(
            upload_id=job.params["upload"], value__in=[str(r.get("deviceUid")) for r in invalid]
        ).values_list("value", "row_number")
    )
    return {
        **_upload_figures_of(job),
        "submitted": job.total,
        "flags": job.params.get("flags") or {},
        "knox_uploads": [
            {"upload_id": u.upload_id or None, "status": u.knox_status, "valid": u.valid, "invalid": u.invalid}
            for u in uploads
        ],
        "failures": [
            {"identifier": str(r.get("deviceUid") or ""), "row": rows.get(str(r.get("deviceUid"))), "code": "",
             "message": "", "reason": str(r.get("reason") or "")}
            for r in invalid
        ],
    }  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- waiting and describing (used by the management commands) ----------------------------------------------

POLL_SECONDS = 0.5


def wait_until_finished(
    job: Job,
    *,
    report: Callable[[Job], None] | None = None,
    idle: Callable[[Job], None] | None = None,
    interval: float = POLL_SECONDS,
) -> Job:
    """Re-read the job row every `interval` seconds until it ends; `report(job)` runs whenever it moved and
    `idle(job)` after every read that found nothing new.

    Only the row is read: whichever worker holds the job (a qcluster, or this process a moment ago) writes it.
    """
    last: tuple[Any, ...] | None = None
    while True:
        job.refresh_from_db()
        seen = (job.status, job.total, job.succeeded, job.failed)
        if seen != last:
            if report is not None:
                report(job)
        elif idle is not None:
            idle(job)
        last = seen
        if job.is_finished:
            return job
        time.sleep(interval)


def progress_line(job: Job) -> str:
    return f"job {job.pk}: {job.processed}/{job.total} done, {job.failed} failed ({job.get_status_display().lower()})"


def summary_lines(data: dict[str, Any], *, limit: int = 10) -> list[str]:
    """A summary (from job_summary, or a dry-run's equivalent) in a few lines for a terminal."""
    lines = []
    if data["job"] is None:
        lines.append(f"{data['title'] or data['kind']}: nothing was submitted to Knox.")
    else:
        lines.append(f"Job {data['job']} ({data['kind']}): {data['title']}")
        lines.append(
            f"Status: {data['status']}; {data['succeeded'] + data['failed']} of {data['total']} done, "
            f"{data['succeeded']} succeeded, {data['failed']} failed"
        )
        who = data["created_by"] or "the command line or a schedule"
        lines.append(f"Account: {data['account'] or '-'}; created {data['created_at']} by {who}")
    if data.get("rows") is not None:
        # Knox Guard summaries have no customer (the account is the tenant).
        customer = f"; customer {data['customer']}" if "customer" in data else ""
        lines.append(
            f"File {data['file']}: {data['rows']} rows, {data['valid']} valid, {data['invalid']} not sendable "
            f"({data['duplicate']} duplicate, {data['conflicts']} already registered or busy), "
            f"{data['skipped']} blank skipped{customer}"
        )
    if data["error"]:
        lines.append(f"Error: {data['error']}")
    failures = data.get("failures") or []
    if failures:
        lines.append(f"Failed devices (first {min(limit, len(failures))} of {data['failed']}):")
        lines += [f"  {f['identifier']} (row {f['row'] or '-'}): [{f['code']}] {f['reason']}" for f in failures[:limit]]
    problems = data.get("problems") or []
    if problems:
        lines.append(f"Rows not sent (first {min(limit, len(problems))} of {data['invalid']}):")
        lines += [f"  row {p['row']}: {p['value'] or '(empty)'}: {p['reason']}" for p in problems[:limit]]
    return lines
