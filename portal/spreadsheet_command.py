"""What every "act on a spreadsheet" management command shares (kdp_upload/kdp_delete, guard_action/guard_upload).

A subclass sets `service` (the Knox service whose credentials it needs), `run_task()` (the django-q2 task that runs
its jobs, run in-process with --wait) and fills `act()`; it may add keys to the summary in `summary_extras()`. The
base class gives the same handling everywhere: unusable input raises portal.management.base.Unusable (exit 2,
nothing submitted, the staged file discarded), a job that ends partial/failed exits 1, and --json prints exactly
one object with the keys of portal.jobsummary.job_summary.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.management.base import CommandError

from portal.jobsummary import job_summary, progress_line, summary_lines, upload_figures, wait_until_finished
from portal.management.base import EXIT_FAILED, EXIT_INTERRUPTED, KnoxCommand, Unusable
from portal.models import Job, KnoxAccount, Upload
from portal.uploads import stage_upload


class SpreadsheetJobCommand(KnoxCommand):
    """A KnoxCommand whose input is a spreadsheet staged as an Upload and whose work is a job."""

    # Each command defines: act(**options) (its flow), kind() (the job kind), run_task(job_pk) (its django-q2
    # task, run in-process with --wait) and summary_extras() (keys it adds to the summary). `service` is also
    # the Upload.service.
    def kind(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} must define kind()")

    def run_task(self, job_pk: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define run_task()")

    def summary_extras(self) -> dict[str, Any]:
        return {}

    # --- the common flow ----------------------------------------------------------------------------------------

    def refused(self, e: Unusable) -> None:
        data = self.unsubmitted_summary("refused", e.message, e.upload)
        if e.upload is not None:
            discard(e.upload)
        # In words, the reason goes to stderr once (CommandError); the rows' verdicts help when there are any.
        if self.as_json or data["problems"]:
            self.emit(data)

    def stage(
        self, account: KnoxAccount, path: Path, *, operation: str, sheet: str, column: str, allow_bad: bool = False
    ) -> Upload:
        upload = Upload(
            service=self.service,
            account=account,
            created_by=None,
            operation=operation,
            filename=path.name,
            sheet=sheet.strip(),
            device_column=column.strip(),
            allow_bad_check_digit=allow_bad,
        )
        # Streamed into media storage, where the web upload keeps its files too (stage_upload reads it there).
        with path.open("rb") as fh:
            upload.file.save(path.name, File(fh), save=False)
        upload.save()
        stage_upload(upload)
        if upload.status == Upload.Status.REFUSED:
            raise Unusable(refusal_message(upload), upload)
        return upload

    def dry_run(self, upload: Upload) -> None:
        data = self.unsubmitted_summary("dry-run", None, upload)
        discard(upload)
        self.emit(data)

    def run_here(self, job: Job) -> None:
        try:
            self.run_task(job.pk)
        except KeyboardInterrupt:
            # The job keeps its lease and records; portal.tasks.resume_stale_jobs resumes it after the lease ends.
            raise CommandError(
                f"Interrupted. Job {job.pk} stops here and resumes on a worker once its lease expires; "
                f"follow it with: manage.py job_status {job.pk} --wait",
                returncode=EXIT_INTERRUPTED,
            ) from None
        except Exception:
            # run_job has already ended the job as failed with a reason; show the details, then report the job.
            self.stderr.write(traceback.format_exc())

    def follow(self, job: Job, *, wait: bool) -> None:
        """Report a queued job: without --wait as queued, with how to follow it; with --wait, run it in this process
        and report it finished (after `finished_here`, where a command may do more in this process)."""
        if not wait:
            self.note(f"job {job.pk} queued: {job.title}; follow it with: manage.py job_status {job.pk} --wait")
            self.finish(job)
            return
        self.note(f"job {job.pk}: {job.title}; running it in this process")
        self.run_here(job)
        job = wait_until_finished(job, report=None if self.as_json else self.progress)
        self.finished_here(job)
        self.finish(job)

    def finished_here(self, job: Job) -> None:
        """After a job ran here with --wait, before its summary (guard_upload reads Knox Guard's results here)."""

    def finish(self, job: Job) -> None:
        data = job_summary(job)
        self.emit(data)
        if job.is_finished and job.status != Job.Status.SUCCEEDED:
            reason = f"{job.failed} of {job.total} devices failed"
            if data["error"]:
                reason += f": {data['error']}"
            raise CommandError(f"Job {job.pk} ended {job.status}; {reason}", returncode=EXIT_FAILED)

    def unsubmitted_summary(self, status: str, error: str | None, upload: Upload | None) -> dict[str, Any]:
        """The same keys as job_summary, for a dry run or a refusal (no job exists)."""
        file_name = Path(self.options["file"]).name
        data: dict[str, Any] = {
            "job": None,
            "kind": self.kind(),
            "title": f"Dry run of {file_name}" if status == "dry-run" else "",
            "status": status,
            "account": self.options["account"],
            "created_by": None,
            "created_at": None,
            "started_at": None,
            "finished_at": None,
            "total": 0,
            "succeeded": 0,
            "failed": 0,
            "error": error,
        }
        if upload is not None:
            data.update(upload_figures(upload))
        else:
            data.update(dict.fromkeys(("rows", "valid", "invalid", "duplicate", "skipped", "conflicts")))
            data.update(file=file_name, problems=[])
        data.update(submitted=0, **self.summary_extras(), failures=[])
        return data

    def emit(self, data: dict[str, Any]) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(data, indent=2))
        else:
            for line in summary_lines(data):
                self.stdout.write(line)

    def progress(self, job: Job) -> None:
        self.note(progress_line(job))


def refusal_message(upload: Upload) -> str:
    """Why a staged file cannot be submitted, as one sentence (the web page shows the rows instead)."""
    if upload.rows_total == upload.skipped:
        return upload.error or f"{upload.filename} holds no devices."
    figures = upload_figures(upload)
    first = figures["problems"][0] if figures["problems"] else None
    message = f"No row of {upload.filename} holds a device that can be submitted ({figures['rows']} rows read)"
    if first is None:
        return message + "."
    return f"{message}; row {first['row']}: {first['reason']}."


def discard(upload: Upload) -> None:
    """Remove a staging that will never be submitted (dry run or refusal): no file or rows are left behind."""
    upload.file.delete(save=False)
    upload.delete()
