"""What the E-FOTA management commands add to portal.management.base.KnoxCommand: the customer ID, and reporting
(one JSON object on stdout with --json, whatever the outcome; progress on stderr)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError

from efota.forms import known_customer_ids
from portal.management.base import KnoxCommand, Unusable
from portal.models import KnoxAccount


class EfotaCommand(KnoxCommand):
    """Runs `run(**options) -> exit code`, which fills `self.data`; prints it (one JSON object with --json)."""

    service = "efota"
    service_label = "E-FOTA"

    def act(self, **options: Any) -> None:
        self.data: dict[str, Any] = {
            "ok": False,
            "account": options["account"],
            "customer": options["customer"] or None,
        }
        self.data.update(code=None, error=None)
        exit_code = self.run(**options)
        if self.as_json:
            self.stdout.write(json.dumps(self.data, indent=2, default=str))
        if exit_code:
            raise CommandError(self.data["error"] or "E-FOTA refused the request.", returncode=exit_code)

    def refused(self, e: Unusable) -> None:
        self.data.update(ok=False, code=e.code, error=e.message)
        if self.as_json:
            self.stdout.write(json.dumps(self.data, indent=2))

    def run(self, **options: Any) -> int:
        """Each command's work: fill self.data and return the exit code. Every subclass defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define run()")

    def find_customer(self, account: KnoxAccount, given: str) -> str:
        """--customer, else the one customer ID the portal knows for the account (from groups and licences)."""
        if given.strip():
            customer_id = given.strip()
        else:
            known = known_customer_ids(account)
            if len(known) != 1:
                listing = f"; the portal knows: {', '.join(known)}" if known else ""
                raise Unusable(
                    f"Give the E-FOTA customer ID with --customer: the account “{account}” has "
                    f"{'no customer ID on record' if not known else f'{len(known)} customer IDs'}{listing}."
                )
            customer_id = known[0]
            self.note(f"customer ID {customer_id} (the only one on record for “{account}”)")
        self.data["customer"] = customer_id
        return customer_id

    def say(self, line: str) -> None:
        if not self.as_json:
            self.stdout.write(line)
