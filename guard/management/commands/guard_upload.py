"""`manage.py guard_upload FILE --account NAME`: upload a spreadsheet's devices to Knox Guard from the command line,
through the same staging, job and audit trail as the web upload, then read Knox Guard's per-device results.

    guard_upload FILE --account NAME [--auto-accept] [--auto-lock] [--apply-sim-control]
                 [--enable-block-factory-reset] [--sheet NAME] [--column HEADER] [--dry-run] [--wait] [--json]

FILE is an Excel or CSV file with an IMEI/serial column and, optionally, an Approve ID column. The four policy
flags are the upload form's (Knox's autoAccept, autoLock, applySimControl, enableBlockFactoryReset); each needs a
permission on the Knox Guard tenant, and without it Knox quietly uses off (seed 003).

1. Check the account (exists, active, has its Knox Guard credentials) and the file.
2. Stage the file into UploadRow records exactly as the web preview does (portal.uploads.stage_upload).
3. --dry-run: report the verdicts and discard the staging; nothing is sent, no job is created.
4. Otherwise guard.models.queue_upload creates the job, writes the audit event and queues guard.tasks.run_upload.
   Management commands run in autocommit, so the job's on_commit hook hands it to django-q2 at once.
5. --wait: also run the upload in this process, then the read of Knox Guard's per-device results that each part
   queued (guard.tasks.read_upload_results), so both finish without a qcluster. A job's lease (Job.claim) keeps
   one worker on it: if a qcluster took one first, this process watches its row instead.

Exit codes, as kdp_upload and guard_action: 0 when every device succeeded (with --wait: Knox Guard accepted every
device and its per-device results, once read, report no failure), when the job was queued (no --wait), or when a
dry run found at least one valid row; 1 when the job ended partial, failed or cancelled, or when Knox Guard's
results report a failed device or could not be read; 2 for unusable input with nothing submitted (unknown account,
account not ready for Knox Guard, a refused file or one without a single valid row). With --json, stdout holds
exactly one JSON object (portal.jobsummary.job_summary plus `knox_results`: the per-device results read from Knox
Guard, null when none were read), also for exit 2, where `error` carries the reason; progress and messages go to
stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import Count

from guard import tasks
from guard.forms import UPLOAD_FLAGS
from guard.models import UPLOAD_RESULTS, GuardUpload, GuardUploadDevice, queue_upload
from portal.jobsummary import FAILURES_LIMIT, wait_until_finished
from portal.management.base import EXIT_FAILED, Unusable
from portal.models import Job, Upload
from portal.spreadsheet_command import SpreadsheetJobCommand

# Knox's flag name -> the option that sets it (kebab case of the same words).
FLAG_OPTIONS = {name: "--" + "".join(f"-{c.lower()}" if c.isupper() else c for c in name) for name in UPLOAD_FLAGS}


class Command(SpreadsheetJobCommand):
    help = "Upload the devices of a spreadsheet to Knox Guard, with its policy flags, and read Knox's results."

    service = "guard"
    service_label = "Knox Guard"
    flags: dict[str, bool] | None = None  # known once the options are parsed
    knox_results: dict[str, Any] | None = None  # Knox Guard's per-device results, once read (--wait)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The spreadsheet: Excel or CSV, an IMEI/serial column, optional Approve ID.")
        parser.add_argument("--account", required=True, metavar="NAME", help="Name of the portal's Knox account.")
        for name, option in FLAG_OPTIONS.items():
            label, help_text = UPLOAD_FLAGS[name]
            parser.add_argument(option, dest=name, action="store_true", help=f"{label} ({name}): {help_text}")
        parser.add_argument("--sheet", default="", metavar="NAME", help="Which sheet of a workbook to read.")
        parser.add_argument("--column", default="", metavar="HEADER", help="Header of the column holding the devices.")
        parser.add_argument("--dry-run", action="store_true", help="Check the file only; send nothing.")
        parser.add_argument("--wait", action="store_true", help="Run the job here, read Knox's results, then exit.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")

    def kind(self) -> str:
        return "guard.upload"

    def run_task(self, job_pk: int) -> None:
        """The upload job, or a read of its results (both run here with --wait)."""
        kind = Job.objects.values_list("kind", flat=True).get(pk=job_pk)
        (tasks.read_upload_results if kind == UPLOAD_RESULTS else tasks.run_upload)(job_pk)

    def summary_extras(self) -> dict[str, Any]:
        # The keys job_summary gives an upload job, in its order, so scripts read a dry run and a job alike.
        return {"flags": self.flags if self.flags is not None else {}, "knox_uploads": []}

    def act(self, *, file: str, account: str, dry_run: bool, wait: bool, sheet: str, column: str, **o: Any) -> None:
        knox_account = self.find_account(account)
        self.flags = {name: bool(o[name]) for name in UPLOAD_FLAGS}
        path = Path(file)
        if not path.is_file():
            raise Unusable(f"Cannot read {file}: there is no such file.")
        upload = self.stage(knox_account, path, operation=Upload.Operation.GUARD_UPLOAD, sheet=sheet, column=column)
        if dry_run:
            self.dry_run(upload)
            return
        job = queue_upload(upload, self.flags, user=None)
        self.follow(job, wait=wait)

    # --- Knox Guard's per-device results ------------------------------------------------------------------------

    def finished_here(self, job: Job) -> None:
        """Run here the reads of per-device results the upload queued (a qcluster that took one first keeps it;
        then its row is watched), and keep what they found for the summary."""
        reads = list(Job.objects.filter(kind=UPLOAD_RESULTS, params__job=job.pk).order_by("id"))
        if not reads:
            return  # no part reached Knox Guard: there is nothing to read
        self.note(f"job {job.pk}: reading Knox Guard's per-device results (job {', '.join(str(r.pk) for r in reads)})")
        for read in reads:
            self.run_here(read)
            wait_until_finished(read)
        self.knox_results = results_summary(job, reads)

    def emit(self, data: dict[str, Any]) -> None:
        super().emit({**data, "knox_results": self.knox_results})
        if not self.as_json and self.knox_results is not None:
            for line in results_lines(self.knox_results):
                self.stdout.write(line)

    def finish(self, job: Job) -> None:
        super().finish(job)  # exit 1 when the upload itself did not succeed
        found = self.knox_results
        if found is not None and (found["failed"] or found["error"]):
            reason = f"Knox Guard reports {found['failed']} of the devices failed"
            if found["error"]:
                reason = f"Knox Guard's results could not all be read: {found['error']}"
            raise CommandError(f"Job {job.pk}: {reason}", returncode=EXIT_FAILED)


def results_summary(job: Job, reads: list[Job]) -> dict[str, Any]:
    """What Knox Guard said per device, for the summary: counts by outcome, the first failures, and why a part's
    results are missing (the reads' reasons) when one is."""
    rows = GuardUploadDevice.objects.filter(job=job)
    counts = dict(rows.values_list("outcome").annotate(n=Count("id")).order_by())
    failed = rows.filter(outcome=GuardUploadDevice.Outcome.FAILED).order_by("id")[:FAILURES_LIMIT]
    unread = GuardUpload.objects.filter(job=job, synced_at__isnull=True).exclude(upload_id="").count()
    for read in reads:
        read.refresh_from_db()
    reasons = [r.error_summary for r in reads if r.error_summary]
    error = None
    if unread:
        why = "; ".join(reasons) or "not read"
        error = f"{unread} part{'s' if unread != 1 else ''} without results: {why}"
    return {
        "read_jobs": [r.pk for r in reads],
        "error": error,
        "succeeded": counts.get(GuardUploadDevice.Outcome.SUCCEEDED, 0),
        "failed": counts.get(GuardUploadDevice.Outcome.FAILED, 0),
        "unknown": counts.get(GuardUploadDevice.Outcome.UNKNOWN, 0),
        "failures": [
            {"identifier": d.device_uid, "row": d.row_number, "code": d.code, "reason": d.explanation()} for d in failed
        ],
    }


def results_lines(found: dict[str, Any], limit: int = 10) -> list[str]:
    lines = [
        f"Knox Guard's per-device results: {found['succeeded']} succeeded, "
        f"{found['failed']} failed, {found['unknown']} not stated"
    ]
    if found["error"]:
        lines.append(f"Not read: {found['error']}")
    failures = found["failures"]
    if failures:
        lines.append(f"Devices Knox Guard refused (first {min(limit, len(failures))} of {found['failed']}):")
        lines += [
            f"  {f['identifier']} (row {f['row'] or '-'}): [{f['code'] or '-'}] {f['reason']}" for f in failures[:limit]
        ]
    return lines
