"""What a Knox Guard job adds to portal.jobsummary.job_summary (registered in GuardConfig.ready): an action job's
action and failed devices, an upload job's Knox uploads and the devices Knox called invalid. Device syncs have
no per-device figures and add nothing."""

from __future__ import annotations

from typing import Any

from guard.models import GuardAction, GuardUpload
from portal.jobsummary import FAILURES_LIMIT, failure_entries, job_upload_figures
from portal.models import Job, UploadRow


def summary_details(job: Job) -> dict[str, Any] | None:
    if not job.kind.startswith("guard."):
        return None
    if job.params.get("action"):
        # Only jobs made by guard.models.queue_action carry an action.
        return _action_details(job)
    if job.kind == "guard.upload" and job.params.get("upload"):
        return _upload_details(job)
    return None


def action_failures(job: Job) -> list[dict[str, Any]]:
    """The first FAILURES_LIMIT devices of a Knox Guard action job that failed, in the job's (spreadsheet) order."""
    failed = GuardAction.objects.filter(job=job, outcome=GuardAction.Outcome.FAILED).order_by("id")
    return failure_entries(failed[:FAILURES_LIMIT], "device_uid")


def _action_details(job: Job) -> dict[str, Any]:
    return {
        **job_upload_figures(job),
        "submitted": job.total,
        "action": job.params["action"],
        "action_params": job.params.get("action_params") or {},
        "failures": action_failures(job),
    }


def _upload_details(job: Job) -> dict[str, Any]:
    """A POST devices/uploads job: the spreadsheet, Knox's uploadID(s) and the devices Knox called invalid."""
    uploads = list(GuardUpload.objects.filter(job=job).order_by("id"))
    invalid = [r for u in uploads for r in u.invalid_reasons if isinstance(r, dict)][:FAILURES_LIMIT]
    uids = [str(r.get("deviceUid")) for r in invalid]
    rows = dict(
        UploadRow.objects.filter(upload_id=job.params["upload"], value__in=uids).values_list("value", "row_number")
    )
    return {
        **job_upload_figures(job),
        "submitted": job.total,
        "flags": job.params.get("flags") or {},
        "knox_uploads": [
            {"upload_id": u.upload_id or None, "status": u.knox_status, "valid": u.valid, "invalid": u.invalid}
            for u in uploads
        ],
        "failures": [_invalid_device(r, rows) for r in invalid],
    }


def _invalid_device(reason: dict[str, Any], rows: dict[str, int]) -> dict[str, Any]:
    """One device Knox called invalid, in the shape of failure_entries (Knox gives no code or message here)."""
    uid = str(reason.get("deviceUid") or "")
    return {
        "identifier": uid,
        "row": rows.get(str(reason.get("deviceUid"))),
        "code": "",
        "message": "",
        "reason": str(reason.get("reason") or ""),
    }
