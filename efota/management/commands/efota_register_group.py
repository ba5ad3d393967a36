"""`manage.py efota_register_group --account NAME --group GROUP --license LICENSE [--customer ID] [--json]`:
register a customer's device group to an E-FOTA licence from the command line, through the same job, EfotaCall
and audit trail as the Groups page.

1. Check the account (exists, active, has the E-FOTA client ID, secret and mdmId) and pick the customer ID:
   --customer, or the account's only customer ID the portal knows (from its groups and licences).
2. `efota.models.queue_register` checks E-FOTA's byte limits, records the group and the job, and queues
   efota.tasks.register_group (management commands run in autocommit, so a qcluster may pick it up at once).
3. Run the registration in this process too; the job's lease means exactly one worker does it. Then wait for
   the job row to end.

Exit codes: 0 registered; 1 E-FOTA refused it (the FUD code in words) or could not be reached; 2 unusable input,
nothing sent (unknown or unready account, unknown customer, a value over E-FOTA's byte limits). With --json,
stdout holds exactly one JSON object, whatever the outcome.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from efota.client import EfotaValidationError
from efota.forms import registered_elsewhere
from efota.management import EfotaCommand
from efota.models import EfotaGroup, queue_register
from efota.tasks import register_group
from portal.jobsummary import wait_until_finished
from portal.management.base import EXIT_FAILED, Unusable


class Command(EfotaCommand):
    help = "Register a customer's device group to an E-FOTA licence."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", required=True, help="Name of the portal's Knox account.")
        parser.add_argument("--group", required=True, help="The group ID (at most 50 bytes; upper-cased).")
        # The flag and the JSON key keep Knox's spelling (scripts use them); the code says licence, as the portal does.
        parser.add_argument(
            "--license", dest="licence", required=True, help="The E-FOTA licence key (at most 100 bytes)."
        )
        parser.add_argument("--customer", default="", help="The E-FOTA customer ID (at most 50 bytes).")
        parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")

    def run(self, *, account: str, group: str, licence: str, customer: str, **options: Any) -> int:
        self.data.update(group=group.strip().upper(), license=licence.strip(), job=None, status=None)
        knox_account = self.find_account(account)
        customer_id = self.find_customer(knox_account, customer)
        elsewhere = registered_elsewhere(knox_account, customer_id, group, licence)
        if elsewhere:
            raise Unusable(elsewhere.replace("use “Change licence”", "change its licence on the Groups page"))
        try:
            job = queue_register(knox_account, customer_id, group, licence, user=None)
        except EfotaValidationError as e:
            raise Unusable(" ".join(e.errors.values()), code="VALIDATION") from None
        self.data["job"] = job.pk
        self.note(f"job {job.pk}: {job.title}; running it in this process")
        register_group(job.pk)
        job = wait_until_finished(job)
        record = EfotaGroup.objects.get(pk=job.params["group"])
        self.data.update(status=record.status, job_status=job.status)
        if record.status == EfotaGroup.Status.REGISTERED:
            self.data.update(ok=True)
            self.say(f"Group {record.group_id} is registered to {record.licence} (customer {record.customer_id}).")
            return 0
        code = record.last_code
        self.data.update(code=code or None, error=record.last_error or job.error_summary or "E-FOTA refused the group.")
        self.say(f"Group {record.group_id} was not registered: {self.data['error']}" + (f" [{code}]" if code else ""))
        return EXIT_FAILED
