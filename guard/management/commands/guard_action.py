"""`manage.py guard_action ACTION FILE --account NAME`: one Knox Guard action on the devices of a spreadsheet, from
the command line, through the same staging, job and audit trail as the web pages.

    guard_action ACTION FILE --account NAME [--message TEXT] [--tel T] [--email E] [--interval S]
                 [--quiet-hours FROM-TO] [--quiet-days FROM-TO] [--approve-id X] [--comment C]
                 [--sheet NAME] [--column HEADER] [--dry-run] [--wait] [--json]

ACTION is one of guard.client.ACTIONS: approve, reject, lock, unlock, blink, stop-blink, message, complete, delete.
FILE is an Excel or CSV file with an IMEI/serial column and, optionally, an Approve ID column: approve assigns
each device the approve ID of its row (Knox Guard needs a different one per device).

1. Check the account (exists, active, has its Knox Guard credentials), the action and its parameters with
   guard.client.validate. Every problem is reported in words, with the option to change. An option the action
   does not use (say --interval with lock) is refused too: on a command that locks phones, a silently ignored
   option is worse than an error.
2. When the portal holds no Knox Guard device of the account yet, read them from Knox first, in this process
   (never on a dry run): the job checks every device's state against these records before anything is sent.
3. Stage the file into UploadRow records exactly as the web preview does (portal.uploads.stage_upload).
4. --dry-run: report the verdicts and discard the staging; nothing is sent, no job is created.
5. Otherwise guard.models.queue_action creates the job, writes the audit event and queues guard.tasks.run_actions.
   Management commands run in autocommit, so the job's on_commit hook hands it to django-q2 at once.
6. --wait: also run the job in this process, so it finishes without a qcluster. The job's lease (Job.claim) keeps
   one worker on it: if a qcluster took it first, run_actions returns at once and this process watches the row.

Exit codes, as kdp_upload: 0 when every device succeeded, when the job was queued (no --wait), or when a dry run
found at least one valid row; 1 when the job ended partial, failed or cancelled; 2 for unusable input with
nothing submitted (unknown account or action, account not ready for Knox Guard, invalid parameters, a refused
file or one without a single valid row). With --json, stdout holds exactly one JSON object
(portal.jobsummary.job_summary: job, status, rows, valid, invalid, submitted, succeeded, failed, action,
failures, ...), also for exit 2, where `error` carries the reason; progress and messages go to stderr.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from guard import tasks
from guard.client import ACTIONS, ActionParams, GuardValidationError, validate
from guard.models import GuardDevice, queue_action, queue_sync
from portal.jobsummary import wait_until_finished
from portal.management.base import Unusable
from portal.models import Job, KnoxAccount, Upload
from portal.spreadsheet_command import SpreadsheetJobCommand

# ActionParams field -> the option that sets it, to say which option to change.
OPTIONS = {
    "message": "--message",
    "tel": "--tel",
    "email": "--email",
    "interval": "--interval",
    "time_limit": "--quiet-hours",
    "days_limit": "--quiet-days",
    "approve_id": "--approve-id",
    "approve_comment": "--comment",
}


def used_fields(action: str) -> set[str]:
    """The ActionParams fields `action` sends to Knox (guard.client.action_body)."""
    fields: set[str] = set()
    if ACTIONS[action].uses_message:
        fields |= {"message", "tel", "email"}
    if action == "blink":
        fields |= {"interval", "time_limit", "days_limit"}
    if action == "approve":
        fields |= {"approve_id", "approve_comment"}
    return fields


class Command(SpreadsheetJobCommand):
    help = "Run one Knox Guard action (approve, lock, blink, ...) on the devices of a spreadsheet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", help=f"One of: {', '.join(ACTIONS)}.")
        parser.add_argument("file", help="The spreadsheet: Excel or CSV, an IMEI/serial column, optional Approve ID.")
        parser.add_argument("--account", required=True, metavar="NAME", help="Name of the portal's Knox account.")
        parser.add_argument(
            "--message", default="", metavar="TEXT", help="What the phone shows (lock, blink, message); max 200."
        )
        parser.add_argument(
            "--tel", default="", metavar="T", help="Phone number the user can call (lock, blink, message)."
        )
        parser.add_argument(
            "--email", default="", metavar="E", help="Email address the user can write to (lock, blink, message)."
        )
        parser.add_argument("--interval", default="", metavar="S", help="blink: seconds between reminders, 3 to 86400.")
        parser.add_argument(
            "--quiet-hours", default="", metavar="FROM-TO", help="blink: no reminders between these hours, e.g. 22-7."
        )
        parser.add_argument(
            "--quiet-days",
            default="",
            metavar="FROM-TO",
            help="blink: with --quiet-hours, no reminders from the first day at the first hour to the second day at "
            "the second hour (0 = Sunday): --quiet-days 0-1 --quiet-hours 6-7 is 06:00 Sunday to 07:00 Monday.",
        )
        parser.add_argument(
            "--approve-id", default="", metavar="X", help="approve: the approve ID to assign (one device only)."
        )
        parser.add_argument("--comment", default="", metavar="C", help="approve: a comment, max 1000 characters.")
        parser.add_argument("--sheet", default="", metavar="NAME", help="Which sheet of a workbook to read.")
        parser.add_argument("--column", default="", metavar="HEADER", help="Header of the column holding the devices.")
        parser.add_argument("--dry-run", action="store_true", help="Check the file and parameters only; send nothing.")
        parser.add_argument("--wait", action="store_true", help="Run the job here and wait until it ends.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")

    service = "guard"
    service_label = "Knox Guard"
    params: ActionParams | None = None  # known once the options are parsed; a refusal may come first

    def kind(self) -> str:
        return f"guard.{self.options['action']}"

    def run_task(self, job_pk: int) -> None:
        tasks.run_actions(job_pk)

    def summary_extras(self) -> dict[str, Any]:
        params = self.params.summary() if self.params is not None else {}
        return {"action": self.options["action"], "action_params": params}

    def act(
        self, *, action: str, file: str, account: str, dry_run: bool, wait: bool, sheet: str, column: str, **o: Any
    ) -> None:
        knox_account = self.find_account(account)
        params = self.params = self.parse_params(action, o)
        path = Path(file)
        if not path.is_file():
            raise Unusable(f"Cannot read {file}: there is no such file.")
        if not dry_run:
            self.sync_if_empty(knox_account)
        upload = self.stage(knox_account, path, operation=Upload.Operation.GUARD_ACTION, sheet=sheet, column=column)
        if params.approve_id and upload.valid > 1:
            raise Unusable(
                f"--approve-id gives one approve ID, and Knox Guard needs a different one per device; "
                f"{upload.filename} holds {upload.valid} devices. Put each device's approve ID in an Approve ID "
                "column instead, or approve them without one.",
                upload,
            )
        if dry_run:
            self.dry_run(upload)
            return
        job = queue_action(knox_account, action, params, user=None, upload=upload)
        self.follow(job, wait=wait)

    # --- checks -------------------------------------------------------------------------------------------------

    def parse_params(self, action: str, o: dict[str, Any]) -> ActionParams:
        """ActionParams from the options, or Unusable naming every problem with the option to change."""
        if action not in ACTIONS:
            raise Unusable(f"There is no Knox Guard action “{action}”; the actions are: {', '.join(ACTIONS)}.")
        problems: dict[str, str] = {}
        given = {
            "message": o["message"],
            "tel": o["tel"],
            "email": o["email"],
            "interval": o["interval"],
            "time_limit": o["quiet_hours"],
            "days_limit": o["quiet_days"],
            "approve_id": o["approve_id"],
            "approve_comment": o["comment"],
        }
        for name in sorted(set(given) - used_fields(action), key=list(OPTIONS).index):
            if given[name]:
                problems[name] = f"{action} does not use this option; leave it out."
        interval: int | None = None
        if given["interval"].strip():
            try:
                interval = int(given["interval"].strip())
            except ValueError:
                problems["interval"] = (
                    f"Give the interval in whole seconds, for example 3600; got “{given['interval']}”."
                )
        pairs: dict[str, tuple[int, ...] | None] = {}
        for name, example in (("time_limit", "22-7"), ("days_limit", "6-0")):
            text = given[name].strip()
            pairs[name] = None
            if not text:
                continue
            try:
                pairs[name] = tuple(int(part) for part in text.split("-"))
            except ValueError:
                problems[name] = f"Write it as two whole numbers FROM-TO, for example {example}; got “{text}”."
        params = ActionParams(
            message=given["message"] if "message" in used_fields(action) else "",
            email=given["email"].strip() if "email" in used_fields(action) else "",
            tel=given["tel"].strip() if "tel" in used_fields(action) else "",
            interval=interval if action == "blink" else None,
            time_limit=pairs["time_limit"] if action == "blink" else None,  # type: ignore[arg-type]
            days_limit=pairs["days_limit"] if action == "blink" else None,  # type: ignore[arg-type]
            approve_id=given["approve_id"].strip() if action == "approve" else "",
            approve_comment=given["approve_comment"] if action == "approve" else "",
        )
        try:
            validate(action, params)
        except GuardValidationError as e:
            # A problem found while reading an option (not a number, say) says more than validate's.
            problems = {**e.errors, **problems}
        if problems:
            lines = [f"{OPTIONS.get(name, name)}: {text}" for name, text in problems.items()]
            noun = "problem" if len(lines) == 1 else "problems"
            raise Unusable(
                f"Nothing was sent: “{ACTIONS[action].label}” has {len(lines)} {noun} to fix:\n  " + "\n  ".join(lines)
            )
        return params

    def sync_if_empty(self, account: KnoxAccount) -> None:
        """Read the account's devices from Knox when the portal has none yet (a new account, a fresh database):
        without them every state check before sending would be skipped. Run here; a qcluster that picks up the
        queued copy finds the job leased or finished."""
        if GuardDevice.objects.filter(account=account).exists():
            return
        job = queue_sync(account, user=None)
        self.note(f"job {job.pk}: reading the Knox Guard devices of “{account}” from Knox first")
        try:
            tasks.sync_devices(job.pk)
        except Exception:
            # run_job has already ended the job as failed with a reason.
            self.stderr.write(traceback.format_exc())
        job = wait_until_finished(job)
        if job.status != Job.Status.SUCCEEDED:
            raise Unusable(
                f"Could not read the Knox Guard devices of “{account}” from Knox: {job.error_summary or job.status}."
            )
