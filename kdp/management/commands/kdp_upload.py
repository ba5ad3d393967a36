"""`manage.py kdp_upload FILE --account NAME --customer ID`: register a spreadsheet's devices with Knox from the
command line, through the same staging, job and audit trail as the web upload.

    kdp_upload FILE --account NAME --customer CUSTOMER_ID [--profile-alias NAME] [--order-no X]
               [--order-date YYYY-MM-DD] [--allow-bad-check-digit] [--sheet NAME] [--column HEADER]
               [--dry-run] [--wait] [--json]

1. Check the account (exists, active, has its KDP credentials), the customer (by its Knox customer ID) and the
   profile alias. A customer or alias not known locally triggers one customer refresh from Knox, run in this
   process, before giving up (never on a dry run, which makes no Knox call).
2. Stage the file into UploadRow records exactly as the web preview does (portal.uploads.stage_upload).
3. --dry-run: report the verdicts and discard the staging; nothing is submitted, no job is created.
4. Otherwise `kdp.models.submit_upload` creates the job, writes the audit event and queues kdp.tasks.run_transfer. Management
   commands run in autocommit, so the job's on_commit hook hands it to django-q2 at once.
5. --wait: also run the transfer in this process, so it finishes without a qcluster. The job's lease
   (Job.claim) guarantees one worker does the work: if a qcluster took it first, run_transfer returns at once and
   this process watches the job row until the job ends.

Exit codes: 0 when every device sent succeeded, when the job was queued (no --wait), or when a dry run found at
least one valid row; 1 when the job ended partial, failed or cancelled; 2 for unusable input with nothing
submitted (unknown account, customer or alias, account not ready for KDP, a refused file or one without a
single valid row). With --json, stdout holds exactly one JSON object (portal.jobsummary.job_summary), also
for exit 2, where `error` carries the reason; progress and messages go to stderr.

`kdp_delete` is this command with the operation set to delete (no alias, order number or order date).
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import traceback
from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser

from kdp import tasks
from kdp.models import Customer, ProfileAlias, queue_customer_sync, submit_upload
from portal.jobsummary import job_summary, progress_line, summary_lines, upload_figures, wait_until_finished
from portal.models import Job, KnoxAccount, Upload
from portal.uploads import stage_upload

EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130


class Unusable(Exception):
    """Input that cannot be submitted; nothing was sent. Carries the staged upload when the file was read."""

    def __init__(self, message: str, upload: Upload | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.upload = upload


class Command(BaseCommand):
    help = "Register the devices of a spreadsheet with Knox Deployment Program for one customer."
    operation = Upload.Operation.UPLOAD

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The spreadsheet: Excel (.xlsx, .xls) or CSV, one device per row.")
        parser.add_argument("--account", required=True, help="Name of the portal's Knox account.")
        parser.add_argument("--customer", required=True, help="The Knox customer ID (a number, e.g. 4650161365).")
        if self.operation == Upload.Operation.UPLOAD:
            parser.add_argument("--profile-alias", default="", help="The customer's KME profile alias to assign.")
            parser.add_argument("--order-no", default="", help="Order number sent with every device.")
            parser.add_argument("--order-date", default="", help="Order date, YYYY-MM-DD.")
        parser.add_argument(
            "--allow-bad-check-digit", action="store_true", help="Accept IMEIs whose check digit is wrong."
        )
        parser.add_argument("--sheet", default="", help="Which sheet of a workbook to read.")
        parser.add_argument("--column", default="", help="Header of the column holding the devices.")
        parser.add_argument("--dry-run", action="store_true", help="Check the file only; submit nothing.")
        parser.add_argument("--wait", action="store_true", help="Run the job here and wait until it ends.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")

    @property
    def kind(self) -> str:
        return f"kdp.{self.operation}"

    def handle(self, *args: Any, **options: Any) -> None:
        self.as_json: bool = options["json"]
        self.options = options
        try:
            self.transfer(**options)
        except Unusable as e:
            data = self.unsubmitted_summary("refused", e.message, e.upload)
            if e.upload is not None:
                discard(e.upload)
            # In words, the reason goes to stderr once (CommandError); the rows' verdicts help when there are any.
            if self.as_json or data["problems"]:
                self.emit(data)
            raise CommandError(e.message, returncode=EXIT_UNUSABLE) from None

    def transfer(
        self,
        *,
        file: str,
        account: str,
        customer: str,
        dry_run: bool,
        wait: bool,
        allow_bad_check_digit: bool,
        sheet: str,
        column: str,
        profile_alias: str = "",
        order_no: str = "",
        order_date: str = "",
        **options: Any,
    ) -> None:
        knox_account = self.find_account(account)
        order_time = parse_order_date(order_date)
        path = Path(file)
        if not path.is_file():
            raise Unusable(f"Cannot read {file}: there is no such file.")
        found, alias = self.find_customer(knox_account, customer.strip(), profile_alias.strip(), dry_run=dry_run)
        upload = self.stage(knox_account, path, sheet=sheet, column=column, allow_bad=allow_bad_check_digit)
        if dry_run:
            data = self.unsubmitted_summary("dry-run", None, upload)
            discard(upload)
            self.emit(data)
            return
        job = submit_upload(
            upload, user=None, customer=found, profile_alias=alias, order_no=order_no.strip(), order_time=order_time
        )
        if not wait:
            self.note(f"job {job.pk} queued: {job.title}; follow it with: manage.py job_status {job.pk} --wait")
            self.finish(job)
            return
        self.note(f"job {job.pk}: {job.title}; running it in this process")
        self.run_here(job)
        self.finish(wait_until_finished(job, report=None if self.as_json else self.progress))

    # --- checks -------------------------------------------------------------------------------------------------

    def find_account(self, name: str) -> KnoxAccount:
        account = KnoxAccount.objects.filter(name=name).first()
        if account is None:
            known = ", ".join(f"“{n}”" for n in KnoxAccount.objects.values_list("name", flat=True)) or "none yet"
            raise Unusable(f"There is no Knox account named “{name}”; the accounts are: {known}.")
        if not account.is_active:
            raise Unusable(f"The Knox account “{name}” is switched off; activate it on its account page first.")
        missing = account.missing_credentials(account.kdp_service())
        if missing:
            raise Unusable(f"The Knox account “{name}” is not ready for KDP: it still needs {'; '.join(missing)}.")
        return account

    def find_customer(
        self, account: KnoxAccount, customer_id: str, alias: str, *, dry_run: bool
    ) -> tuple[Customer, str]:
        """The customer (and the alias, checked) by Knox customer ID, refreshing the list from Knox once if either
        is unknown here: both are often created in the Knox portal minutes before the first upload."""
        customer = self.lookup_customer(account, customer_id)
        if (customer is None or (alias and not has_alias(customer, alias))) and not dry_run:
            self.refresh_customers(account)
            customer = self.lookup_customer(account, customer_id)
        if customer is None:
            known = Customer.objects.filter(account=account, present_in_knox=True)
            if not known.exists():
                hint = "; run the customer refresh first" if dry_run else " (Knox lists none)"
                raise Unusable(f"No customers are synced for the account “{account}”{hint}.")
            listing = ", ".join(str(c) for c in known[:10]) + (", …" if known.count() > 10 else "")
            after = "" if dry_run else " even after refreshing the list from Knox"
            raise Unusable(
                f"The account “{account}” has no customer with Knox customer ID {customer_id}{after}; "
                f"its customers are: {listing}."
            )
        if self.operation == Upload.Operation.UPLOAD and customer.is_pending:
            # The web form refuses the same: Knox rejects every device of a pending customer (40000011).
            raise Unusable(
                f"{customer} is still pending verification in Knox; devices can be registered once Samsung "
                "verifies the customer."
            )
        if alias and not has_alias(customer, alias):
            names = ", ".join(f"“{n}”" for n in customer.aliases.values_list("name", flat=True)) or "none"
            raise Unusable(f"{customer} has no KME profile alias “{alias}”; its aliases are: {names}.")
        return customer, alias

    def lookup_customer(self, account: KnoxAccount, customer_id: str) -> Customer | None:
        return Customer.objects.filter(account=account, customer_id=customer_id, present_in_knox=True).first()

    def refresh_customers(self, account: KnoxAccount) -> None:
        """Run a customer refresh job here (a qcluster that picks up the queued copy finds it leased or done)."""
        job = queue_customer_sync(account, user=None)
        self.note(f"job {job.pk}: refreshing the customer list of “{account}” from Knox")
        tasks.sync_customers(job.pk)
        job = wait_until_finished(job)
        if job.status != Job.Status.SUCCEEDED:
            raise Unusable(f"Could not refresh the customer list from Knox: {job.error_summary or job.status}.")

    def stage(self, account: KnoxAccount, path: Path, *, sheet: str, column: str, allow_bad: bool) -> Upload:
        upload = Upload(
            account=account, created_by=None, operation=self.operation, filename=path.name,
            sheet=sheet.strip(), device_column=column.strip(), allow_bad_check_digit=allow_bad,
        )  # fmt: skip
        # Streamed into media storage, where the web upload keeps its files too (stage_upload reads it there).
        with path.open("rb") as fh:
            upload.file.save(path.name, File(fh), save=False)
        upload.save()
        stage_upload(upload)
        if upload.status == Upload.Status.REFUSED:
            raise Unusable(refusal_message(upload), upload)
        return upload

    # --- running and reporting ------------------------------------------------------------------------------------

    def run_here(self, job: Job) -> None:
        try:
            tasks.run_transfer(job.pk)
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

    def finish(self, job: Job) -> None:
        data = job_summary(job)
        self.emit(data)
        if job.is_finished and job.status != Job.Status.SUCCEEDED:
            reason = f"{job.failed} of {job.total} devices failed"
            if data["error"]:
                reason += f": {data['error']}"
            raise CommandError(f"Job {job.pk} ended {job.status}; {reason}", returncode=EXIT_FAILED)

    def unsubmitted_summary(self, status: str, error: str | None, upload: Upload | None) -> dict[str, Any]:
        """The same keys as job_summary for a kdp job, for a dry run or a refusal (no job exists)."""
        o = self.options
        file_name = Path(o["file"]).name
        data: dict[str, Any] = {
            "job": None, "kind": self.kind, "title": f"Dry run of {file_name}" if status == "dry-run" else "",
            "status": status, "account": o["account"], "created_by": None, "created_at": None, "started_at": None,
            "finished_at": None, "total": 0, "succeeded": 0, "failed": 0, "error": error,
        }  # fmt: skip
        if upload is not None:
            data.update(upload_figures(upload))
        else:
            data.update(dict.fromkeys(("rows", "valid", "invalid", "duplicate", "skipped", "conflicts")))
            data.update(file=file_name, problems=[])
        data.update(submitted=0, customer=o["customer"], failures=[])
        return data

    def emit(self, data: dict[str, Any]) -> None:
        if self.as_json:
            self.stdout.write(json.dumps(data, indent=2))
        else:
            for line in summary_lines(data):
                self.stdout.write(line)

    def note(self, message: str) -> None:
        """Progress for a person: stderr, so --json keeps stdout to the one object; never coloured as an error."""
        if not self.as_json:
            self.stderr.write(message, style_func=str)

    def progress(self, job: Job) -> None:
        self.note(progress_line(job))


def parse_order_date(text: str) -> int | None:
    """The order date as epoch seconds at midnight UTC, as the web form sends it (knox-api.md §3.2)."""
    if not text.strip():
        return None
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise Unusable(f"The order date must be written YYYY-MM-DD, for example 2025-03-31; got “{text}”.") from None
    return calendar.timegm(dt.datetime.combine(day, dt.time.min).timetuple())


def has_alias(customer: Customer, alias: str) -> bool:
    return ProfileAlias.objects.filter(customer=customer, name=alias).exists()


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
