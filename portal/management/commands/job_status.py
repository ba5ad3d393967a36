"""`manage.py job_status JOB [--wait] [--json]`: the state of any job (KDP, Knox Guard, E-FOTA) from a terminal.

The summary is portal.jobsummary.job_summary, the same object for every job kind (KDP upload/delete jobs add
their spreadsheet figures and failed devices, Knox Guard jobs their action and per-device failures). --wait re-reads the job row every half second until the job ends;
it does not run the job, so a queued job needs a worker (`manage.py qcluster`) to move.

Exit codes: 0 when the job succeeded, or is still queued/running (without --wait); 1 when it ended partial,
failed or cancelled; 2 when there is no such job.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.jobsummary import job_summary, progress_line, summary_lines, wait_until_finished
from portal.management.base import EXIT_FAILED, EXIT_INTERRUPTED
from portal.models import Job

EXIT_UNKNOWN = 2  # no such job (the other commands' "unusable input")
# A job queued this long with --wait probably has no worker to run it: say so once.
QUEUED_HINT_SECONDS = 10


class Command(BaseCommand):
    help = "Show a job's status and figures; --wait until it ends; --json for scripts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job", help="The job's number, as shown in the portal and by kdp_upload.")
        parser.add_argument("--wait", action="store_true", help="Wait until the job has ended.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.as_json: bool = options["json"]
        job = self.find(options["job"])
        if options["wait"] and not job.is_finished:
            job = self.wait(job)
        data = job_summary(job)
        if self.as_json:
            self.stdout.write(json.dumps(data, indent=2))
        else:
            for line in summary_lines(data):
                self.stdout.write(line)
        if job.is_finished and job.status != Job.Status.SUCCEEDED:
            raise CommandError(f"Job {job.pk} ended {job.status}.", returncode=EXIT_FAILED)

    def wait(self, job: Job) -> Job:
        started = time.monotonic()
        hinted = False

        def idle(current: Job) -> None:
            nonlocal hinted
            if current.status == Job.Status.QUEUED and not hinted and time.monotonic() - started > QUEUED_HINT_SECONDS:
                hinted = True
                self.note(f"job {current.pk} is still queued; is a worker running (manage.py qcluster)?")

        try:
            return wait_until_finished(job, report=lambda current: self.note(progress_line(current)), idle=idle)
        except KeyboardInterrupt:
            raise CommandError(
                f"Stopped waiting; job {job.pk} carries on without this command.", returncode=EXIT_INTERRUPTED
            ) from None

    def find(self, text: str) -> Job:
        pk = text.strip().lstrip("#")
        if not pk.isdigit():
            self.refuse(f"A job is named by its number, such as 12; got “{text}”.")
        job = Job.objects.select_related("account", "created_by").filter(pk=int(pk)).first()
        if job is None:
            self.refuse(f"There is no job {pk}.")
        return job

    def refuse(self, message: str) -> None:
        if self.as_json:
            self.stdout.write(json.dumps({"job": None, "status": "not_found", "error": message}, indent=2))
        raise CommandError(message, returncode=EXIT_UNKNOWN)

    def note(self, message: str) -> None:
        if not self.as_json:
            self.stderr.write(message, style_func=str)
