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
from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from kdp import tasks
from kdp.models import Customer, ProfileAlias, queue_customer_sync, submit_upload
from portal.jobsummary import wait_until_finished
from portal.models import Job, KnoxAccount, Upload
from portal.spreadsheet_command import SpreadsheetJobCommand, Unusable


class Command(SpreadsheetJobCommand):
    help = "Register the devices of a spreadsheet with Knox Deployment Program for one customer."
    operation = Upload.Operation.UPLOAD
    service = "kdp"
    service_label = "KDP"

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

    def kind(self) -> str:
        return f"kdp.{self.operation}"

    def account_service(self, account: KnoxAccount) -> str:
        return account.kdp_service()

    def run_task(self, job_pk: int) -> None:
        tasks.run_transfer(job_pk)

    def summary_extras(self) -> dict[str, Any]:
        return {"customer": self.options["customer"]}

    def act(
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
        upload = self.stage(
            knox_account, path, operation=self.operation, sheet=sheet, column=column, allow_bad=allow_bad_check_digit
        )
        if dry_run:
            self.dry_run(upload)
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
