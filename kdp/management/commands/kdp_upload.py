"""`manage.py kdp_upload FILE --account NAME [--customer ID]`: register a spreadsheet's devices with Knox from the
command line, through the same staging, job and audit trail as the web upload.

    kdp_upload FILE --account NAME [--customer CUSTOMER_ID] [--profile-alias NAME | CUSTOMER=NAME ...]
               [--order-no X] [--order-date YYYY-MM-DD] [--skip-unusable-customers] [--allow-bad-check-digit]
               [--sheet NAME] [--column HEADER] [--dry-run] [--wait] [--json]

1. Check the account (exists, active, has its KDP credentials), the customer (by its Knox customer ID) and the
   profile alias. A customer or alias not known locally triggers one customer refresh from Knox, run in this
   process, before giving up (never on a dry run, which makes no Knox call).
2. Stage the file into UploadRow records exactly as the web preview does (portal.uploads.stage_upload).
3. A file with a customer column (a Knox customer ID or customer name per row) needs no --customer: its rows are
   grouped by customer as the web preview does (kdp.models.file_customers) and one job is queued per customer.
   `--profile-alias CUSTOMER=NAME` (repeatable; CUSTOMER is the ID or the name) picks each customer's alias, a bare
   `--profile-alias NAME` applies to every customer. Rows whose customer cannot be used (unknown, a name two
   customers share, pending verification, blank) stop the command unless --skip-unusable-customers is given.
   Giving --customer for such a file, or neither, is refused with the reason.
4. --dry-run: report the verdicts (and the customers of the file) and discard the staging; nothing is submitted.
5. Otherwise `kdp.models.submit_targets` creates the job(s), writes the audit events and queues
   kdp.tasks.run_transfer. Management commands run in autocommit, so the on_commit hook hands them to django-q2.
6. --wait: also run the transfer(s) in this process, so they finish without a qcluster. The job's lease
   (Job.claim) guarantees one worker does the work: if a qcluster took it first, run_transfer returns at once and
   this process watches the job row until the job ends.

Exit codes: 0 when every device sent succeeded, when the job was queued (no --wait), or when a dry run found at
least one valid row; 1 when a job ended partial, failed or cancelled; 2 for unusable input with nothing
submitted (unknown account, customer or alias, account not ready for KDP, a refused file or one without a
single valid row). With --json, stdout holds exactly one JSON object (portal.jobsummary.job_summary), also
for exit 2, where `error` carries the reason; progress and messages go to stderr. For a file with a customer
column the object is {"kind", "status", "error", "customers": [...], "jobs": [one job_summary per customer]}.

`kdp_delete` is this command with the operation set to delete (no alias, order number or order date).
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from kdp import tasks
from kdp.models import (
    Customer,
    CustomerGroup,
    ProfileAlias,
    Target,
    file_customers,
    mismatch_refusal,
    queue_customer_sync,
    submit_targets,
    submit_upload,
)
from kdp.models import recorded_customers as recorded_customers_of
from portal.jobsummary import job_summary, summary_lines, wait_until_finished
from portal.management.base import EXIT_FAILED, Unusable
from portal.models import Job, KnoxAccount, Upload
from portal.spreadsheet_command import SpreadsheetJobCommand, discard


class Command(SpreadsheetJobCommand):
    help = "Register the devices of a spreadsheet with Knox Deployment Program for one customer."
    operation = Upload.Operation.UPLOAD
    service = "kdp"
    service_label = "KDP"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The spreadsheet: Excel (.xlsx, .xls) or CSV, one device per row.")
        parser.add_argument("--account", required=True, help="Name of the portal's Knox account.")
        parser.add_argument(
            "--customer",
            default="",
            help="The Knox customer ID (a number, e.g. 4650161365). Not needed when the file has a customer column.",
        )
        parser.add_argument(
            "--skip-unusable-customers",
            action="store_true",
            help="For a file with a customer column: send the rows of the customers that can be used, leave out the "
            "others (unknown, ambiguous, pending verification, blank).",
        )
        if self.operation == Upload.Operation.DELETE:
            parser.add_argument(
                "--recorded-customers",
                action="store_true",
                help="Delete each device from the customer the portal's records have it registered to (one job per "
                "customer) instead of from --customer.",
            )
        if self.operation == Upload.Operation.UPLOAD:
            parser.add_argument(
                "--profile-alias",
                action="append",
                default=[],
                help="The KME profile alias to assign; for a file with a customer column, CUSTOMER=NAME per customer "
                "(repeat it), or NAME for all.",
            )
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
        return {"customer": self.options["customer"] or None}

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
        skip_unusable_customers: bool = False,
        recorded_customers: bool = False,
        profile_alias: list[str] | str = "",
        order_no: str = "",
        order_date: str = "",
        **options: Any,
    ) -> None:
        knox_account = self.find_account(account)
        order_time = parse_order_date(order_date)
        aliases = [profile_alias] if isinstance(profile_alias, str) else list(profile_alias)
        path = Path(file)
        if not path.is_file():
            raise Unusable(f"Cannot read {file}: there is no such file.")
        found, alias = None, ""
        if recorded_customers and customer.strip():
            raise Unusable("Give either --customer or --recorded-customers, not both.")
        if customer.strip():
            if len(aliases) > 1 or any("=" in a for a in aliases):
                raise Unusable(
                    "With --customer, give one --profile-alias NAME (CUSTOMER=NAME is for a customer column)."
                )
            found, alias = self.find_customer(
                knox_account, customer.strip(), (aliases[-1] if aliases else "").strip(), dry_run=dry_run
            )
        upload = self.stage(
            knox_account, path, operation=self.operation, sheet=sheet, column=column, allow_bad=allow_bad_check_digit
        )
        if recorded_customers:
            self.act_per_recorded_customer(upload, dry_run, wait)
            return
        groups = file_customers(upload)
        if groups is not None:
            if found is not None:
                raise Unusable(
                    f"{upload.filename} has a customer column, so each row names its customer; leave out --customer, "
                    "or remove the column to send every device to one customer.",
                    upload,
                )
            self.act_per_customer(upload, groups, aliases, skip_unusable_customers, order_no, order_time, dry_run, wait)
            return
        if found is None:
            raise Unusable(
                f"{upload.filename} has no customer column: give --customer CUSTOMER_ID, or add a “Customer” column "
                "holding each device's Knox customer ID (or customer name).",
                upload,
            )
        refusal = mismatch_refusal(upload, found) if self.operation == Upload.Operation.DELETE else ""
        if refusal:
            raise Unusable(f"{refusal} (--recorded-customers).", upload)
        if dry_run:
            self.dry_run(upload)
            return
        job = submit_upload(
            upload, user=None, customer=found, profile_alias=alias, order_no=order_no.strip(), order_time=order_time
        )
        self.follow(job, wait=wait)

    # --- delete from the recorded customers ----------------------------------------------------------------------

    def act_per_recorded_customer(self, upload: Upload, dry_run: bool, wait: bool) -> None:
        """One delete job per customer the portal's records have the file's devices registered to."""
        recorded = recorded_customers_of(upload)
        if not recorded.by_customer:
            raise Unusable(
                "The portal's records show none of these devices registered to a customer; give --customer.", upload
            )
        if recorded.unregistered:
            self.note(f"{recorded.unregistered} device(s) the portal has no registration for are left out")
        if dry_run:
            self.dry_run(upload)
            return
        targets = [Target(c, n, rows={"recorded_customer": True}) for c, n in recorded.by_customer]
        jobs = submit_targets(upload, targets, user=None)
        self.run_and_finish(jobs, [], wait)

    # --- a file with a customer column ----------------------------------------------------------------------------

    def act_per_customer(
        self,
        upload: Upload,
        groups: list[CustomerGroup],
        aliases: list[str],
        skip: bool,
        order_no: str,
        order_time: int | None,
        dry_run: bool,
        wait: bool,
    ) -> None:
        """One job per customer of the file, each with its alias; nothing is queued if any check fails."""
        if not dry_run and self.needs_refresh(groups, aliases):
            # Customers and aliases are often created in the Knox portal minutes before the first upload.
            self.refresh_customers(upload.account)
            groups = file_customers(upload) or groups
        if dry_run:
            data = self.unsubmitted_summary("dry-run", None, upload)
            data["customers"] = customers_of(groups)
            discard(upload)
            self.emit(data)
            if not self.as_json:
                for line in group_lines(groups):
                    self.stdout.write(line)
            return
        held = [g for g in groups if g.problem]
        sendable = [g for g in groups if g.customer is not None and not g.problem]
        if not sendable:
            raise Unusable("No customer of the file can be used: " + problems_text(held), upload)
        if held and not skip:
            raise Unusable(
                f"The rows of {len(held)} customer{'s' if len(held) != 1 else ''} of the file cannot be sent: "
                f"{problems_text(held)}. Fix the file, or add --skip-unusable-customers to send the others.",
                upload,
            )
        chosen = self.aliases_for(upload, sendable, aliases)
        parse_job = upload.parse_job_id or 0
        targets = [
            Target(
                g.customer,
                g.rows,
                chosen.get(g.customer.pk, ""),
                rows={"file_customer": g.texts, "parse_job": parse_job},
            )
            for g in sendable
            if g.customer is not None
        ]
        jobs = submit_targets(upload, targets, user=None, order_no=order_no.strip(), order_time=order_time)
        self.run_and_finish(jobs, groups, wait)

    def run_and_finish(self, jobs: list[Job], groups: list[CustomerGroup], wait: bool) -> None:
        for job in jobs:
            self.note(f"job {job.pk} queued: {job.title}")
        if wait:
            for job in jobs:
                self.note(f"job {job.pk}: {job.title}; running it in this process")
                self.run_here(job)
            jobs = [wait_until_finished(job, report=None if self.as_json else self.progress) for job in jobs]
        self.finish_many(jobs, groups)

    def needs_refresh(self, groups: list[CustomerGroup], aliases: list[str]) -> bool:
        unknown = any(g.customer is None and g.texts for g in groups)
        return unknown or any(
            not has_alias(g.customer, name)
            for g in groups
            if g.customer is not None
            for name in self.parse_aliases(aliases, [g]).values()
        )

    def parse_aliases(self, aliases: list[str], groups: list[CustomerGroup]) -> dict[int, str]:
        """CUSTOMER=NAME and bare NAME entries as {customer pk: alias} for the given groups (unmatched ignored)."""
        out: dict[int, str] = {}
        for entry in (a.strip() for a in aliases):
            if not entry:
                continue
            who, sep, name = entry.rpartition("=")
            for g in groups:
                if g.customer is not None and (not sep or matches(g, who)):
                    out[g.customer.pk] = name.strip()
        return out

    def aliases_for(self, upload: Upload, groups: list[CustomerGroup], aliases: list[str]) -> dict[int, str]:
        for entry in (a.strip() for a in aliases):
            who, sep, _ = entry.rpartition("=")
            if sep and not any(matches(g, who) for g in groups):
                names = ", ".join(f"“{g.label}”" for g in groups)
                raise Unusable(
                    f"--profile-alias names the customer “{who.strip()}”, which has no rows to send in the file; "
                    f"its customers are: {names}.",
                    upload,
                )
        chosen = self.parse_aliases(aliases, groups)
        for g in groups:
            name = chosen.get(g.customer.pk, "") if g.customer is not None else ""
            if name and g.customer is not None and not has_alias(g.customer, name):
                names = ", ".join(f"“{n}”" for n in g.customer.aliases.values_list("name", flat=True)) or "none"
                raise Unusable(f"{g.customer} has no KME profile alias “{name}”; its aliases are: {names}.", upload)
        return chosen

    def finish_many(self, jobs: list[Any], groups: list[CustomerGroup]) -> None:
        summaries = [job_summary(job) for job in jobs]
        ended_badly = [j for j in jobs if j.is_finished and j.status != Job.Status.SUCCEEDED]
        status = "failed" if ended_badly else ("succeeded" if all(j.is_finished for j in jobs) else "queued")
        if self.as_json:
            data = {
                "kind": self.kind(),
                "status": status,
                "error": None,
                "customers": customers_of(groups),
                "jobs": summaries,
            }
            self.stdout.write(json.dumps(data, indent=2))
        else:
            for line in group_lines(groups):
                self.stdout.write(line)
            for data in summaries:
                for line in summary_lines(data):
                    self.stdout.write(line)
        if ended_badly:
            which = ", ".join(f"job {j.pk} ended {j.status}" for j in ended_badly)
            raise CommandError(
                f"{len(ended_badly)} of {len(jobs)} jobs did not succeed: {which}", returncode=EXIT_FAILED
            )

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


def matches(group: CustomerGroup, who: str) -> bool:
    """Whether a --profile-alias CUSTOMER= names this group's customer (its ID, its name or its text in the file)."""
    key = who.strip().casefold()
    c = group.customer
    names = {t.casefold() for t in group.texts}
    if c is not None:
        names |= {c.customer_id.casefold(), c.name.strip().casefold()}
    return key in names


def problems_text(groups: list[CustomerGroup]) -> str:
    return "; ".join(f"{g.label} ({g.rows} row{'s' if g.rows != 1 else ''}): {g.problem}" for g in groups)


def customers_of(groups: list[CustomerGroup]) -> list[dict[str, Any]]:
    return [
        {
            "customer": g.customer.customer_id if g.customer else None,
            "name": g.customer.name if g.customer else None,
            "written_as": g.texts,
            "rows": g.rows,
            "problem": g.problem or None,
        }
        for g in groups
    ]


def group_lines(groups: list[CustomerGroup]) -> list[str]:
    if not groups:
        return []
    lines = ["Customers in the file:"]
    for g in groups:
        lines.append(
            f"  {g.label}: {g.rows} row{'s' if g.rows != 1 else ''}" + (f", not sent: {g.problem}" if g.problem else "")
        )
    return lines
