"""One JSON-ready description of a job, the same for every job kind: `manage.py job_status --json` prints it and
the upload/delete commands print it when they end (the web UI can serve it too).

Every job gets the generic figures from its `portal.models.Job` row. KDP upload/delete jobs and Knox Guard action
and upload jobs add what only they have: the spreadsheet's figures and the devices Knox (or the portal) refused.
Portal may not import kdp, guard or efota (dependencies flow toward portal, style §1), so each app registers the
dotted path of a `summary_details(job) -> dict | None` function in its AppConfig.ready(), as dashboard panels are
registered; a deployment without them still gets the generic summary. The helpers below are what those functions
share: the spreadsheet's figures and the list of failed devices, in one shape for every service.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.utils.module_loading import import_string

from portal.models import Job

# Enough to act on from a terminal or a script; the full lists are in the web UI and its CSV exports.
FAILURES_LIMIT = 100
PROBLEMS_LIMIT = 100

# Dotted paths of `summary_details(job) -> dict | None`, one per service app, asked in order: the first that
# answers (not None) adds its keys to the summary. None means the job is not of that app's kinds.
DETAILS: list[str] = []

# The spreadsheet figures of a job that had no spreadsheet behind it (devices chosen in a list, a retry).
FIGURE_KEYS = ("file", "rows", "valid", "invalid", "duplicate", "skipped", "conflicts")


def register_details(path: str) -> None:
    if path not in DETAILS:
        DETAILS.append(path)


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
    for path in DETAILS:
        details = import_string(path)(job)
        if details is not None:
            data.update(details)
            break
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


def job_upload_figures(job: Job, named_upload: int | None = None) -> dict[str, Any]:
    """upload_figures of the spreadsheet behind a job: the Upload that names the job, else `named_upload` (the
    upload a job names in its params, e.g. one job per customer of one spreadsheet); blank figures when there is
    none (devices chosen in a list, a retry of failed devices)."""
    from portal.models import Upload

    upload = Upload.objects.filter(job=job).first()
    if upload is None and named_upload is not None:
        upload = Upload.objects.filter(pk=named_upload).first()
    if upload is not None:
        return upload_figures(upload)
    figures: dict[str, Any] = dict.fromkeys(FIGURE_KEYS)
    figures["problems"] = []
    return figures


def failure_entries(failed: Iterable[Any], identifier: str) -> list[dict[str, Any]]:
    """The failed devices of a job, one dict each, in the order given. Each row has `row_number`, `code`,
    `message` and `explanation()` (a KDP TransactionDevice, a Knox Guard GuardAction); `identifier` names the
    attribute that holds the device."""
    return [
        {
            "identifier": getattr(d, identifier),
            "row": d.row_number,
            "code": d.code,
            "message": d.message,
            "reason": d.explanation(),
        }
        for d in failed
    ]


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
