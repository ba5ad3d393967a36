"""`manage.py efota_license_info --account NAME --license LICENSE [--customer ID] [--json]`: ask E-FOTA now how
many devices a licence covers and when it expires (the Licences page's "check licence", with its EfotaLicence
record, EfotaCall and audit event).

Exit codes: 0 E-FOTA described the licence (even an expired one); 1 E-FOTA refused the question (the FUD code in
words, e.g. FUD_3018 for a licence that is not active) or could not be reached; 2 unusable input, nothing sent
(unknown or unready account, unknown customer, a value over E-FOTA's byte limits). With --json, stdout holds
exactly one JSON object, whatever the outcome.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from efota.client import EfotaValidationError, Ids, check_ids, explain
from efota.management import EfotaCommand
from efota.models import check_licence
from portal.knox.errors import KnoxError
from portal.management.base import EXIT_FAILED, Unusable


class Command(EfotaCommand):
    help = "Show how many devices an E-FOTA licence covers and when it expires."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", required=True, help="Name of the portal's Knox account.")
        # The flag and the JSON key keep Knox's spelling (scripts use them); the code says licence, as the portal does.
        parser.add_argument(
            "--license", dest="licence", required=True, help="The E-FOTA licence key (at most 100 bytes)."
        )
        parser.add_argument("--customer", default="", help="The E-FOTA customer ID (at most 50 bytes).")
        parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")

    def run(self, *, account: str, licence: str, customer: str, **options: Any) -> int:
        self.data.update(license=licence.strip(), max_devices=None, expiration_date=None, expired=None)
        knox_account = self.find_account(account)
        customer_id = self.find_customer(knox_account, customer)
        # Checked before check_licence, which would otherwise keep a record of the unusable key.
        try:
            check_ids(Ids(knox_account.efota_mdm_id, customer_id, licence).normalised())
        except EfotaValidationError as e:
            raise Unusable(" ".join(e.errors.values()), code="VALIDATION") from None
        try:
            record = check_licence(knox_account, customer_id, licence, user=None)
        except EfotaValidationError as e:
            raise Unusable(str(e), code="VALIDATION") from None
        except KnoxError as e:
            self.data.update(code=e.code or type(e).__name__, error=explain(e))
            self.say(
                f"E-FOTA refused to describe licence {licence.strip()}: {explain(e)}"
                + (f" [{e.code}]" if e.code else "")
            )
            return EXIT_FAILED
        expires = record.expiration_date.isoformat() if record.expiration_date else None
        self.data.update(ok=True, max_devices=record.max_devices, expiration_date=expires, expired=record.is_expired)
        self.say(f"Licence {record.key} (customer {record.customer_id})")
        self.say(f"  Max devices: {record.max_devices if record.max_devices is not None else 'not given'}")
        self.say(f"  Expires:     {expires or 'not given'}")
        self.say(f"  Expired:     {'yes' if record.is_expired else 'no'}")
        return 0
