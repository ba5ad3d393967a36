"""What the E-FOTA management commands share: finding the account and the customer ID, exit codes, and
reporting (one JSON object on stdout with --json, whatever the outcome; progress on stderr)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from efota.forms import known_customer_ids
from portal.models import KnoxAccount

EXIT_FAILED = 1
EXIT_UNUSABLE = 2


class Unusable(Exception):
    """Input that cannot be sent to E-FOTA; nothing was sent."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class EfotaCommand(BaseCommand):
    """Runs `run(**options) -> exit code`, which fills `self.data`; prints it (one JSON object with --json)."""

    def handle(self, *args: Any, **options: Any) -> None:
        self.as_json: bool = options["json"]
        self.data: dict[str, Any] = {
            "ok": False,
            "account": options["account"],
            "customer": options["customer"] or None,
        }
        self.data.update(code=None, error=None)
        try:
            exit_code = self.run(**options)
        except Unusable as e:
            self.data.update(ok=False, code=e.code, error=e.message)
            if self.as_json:
                self.stdout.write(json.dumps(self.data, indent=2))
            raise CommandError(e.message, returncode=EXIT_UNUSABLE) from None
        if self.as_json:
            self.stdout.write(json.dumps(self.data, indent=2, default=str))
        if exit_code:
            raise CommandError(self.data["error"] or "E-FOTA refused the request.", returncode=exit_code)

    def run(self, **options: Any) -> int:
        """Each command's work: fill self.data and return the exit code. Every subclass defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define run()")

    def find_account(self, name: str) -> KnoxAccount:
        account = KnoxAccount.objects.filter(name=name).first()
        if account is None:
            known = ", ".join(f"“{n}”" for n in KnoxAccount.objects.values_list("name", flat=True)) or "none yet"
            raise Unusable(f"There is no Knox account named “{name}”; the accounts are: {known}.")
        if not account.is_active:
            raise Unusable(f"The Knox account “{name}” is switched off; activate it on its account page first.")
        missing = account.missing_credentials("efota")
        if missing:
            raise Unusable(f"The Knox account “{name}” is not ready for E-FOTA: it still needs {'; '.join(missing)}.")
        return account

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

    def note(self, message: str) -> None:
        """Progress for a person: stderr, so --json keeps stdout to the one object."""
        if not self.as_json:
            self.stderr.write(message, style_func=str)
