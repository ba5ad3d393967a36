"""What every Knox management command shares (kdp_upload/kdp_delete, guard_action/guard_upload through
portal.spreadsheet_command.SpreadsheetJobCommand; efota_* through efota.management.EfotaCommand).

One exception for input that cannot be sent (`Unusable`: exit 2, nothing sent), the exit codes, the account
lookup with the same sentences for every service, and stderr for progress so that --json keeps stdout to one
object. Each subclass says in `refused()` what it prints for an Unusable before the command exits.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from portal.models import KnoxAccount, Upload

EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130


class Unusable(Exception):
    """Input that cannot be sent to Knox; nothing was sent. `upload`: the staged spreadsheet, when the file was
    read (the spreadsheet commands discard it); `code`: a short machine-readable reason for --json ("VALIDATION")."""

    def __init__(self, message: str, upload: Upload | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.upload = upload
        self.code = code


class KnoxCommand(BaseCommand):
    """Runs `act(**options)`; an Unusable it raises is reported by `refused()` and ends the command with exit 2."""

    service = ""  # the Knox service whose credentials the command needs ("kdp", "guard", "efota")
    service_label = ""  # the service in words, for the sentences ("KDP", "Knox Guard", "E-FOTA")

    def handle(self, *args: Any, **options: Any) -> None:
        self.as_json: bool = options["json"]
        self.options = options
        try:
            self.act(**options)
        except Unusable as e:
            self.refused(e)
            raise CommandError(e.message, returncode=EXIT_UNUSABLE) from None

    def act(self, **options: Any) -> None:
        """Each command's work. Every subclass defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define act()")

    def refused(self, e: Unusable) -> None:
        """Report input that could not be used, before the command exits 2 with the message on stderr."""

    def account_service(self, account: KnoxAccount) -> str:
        """The service whose credentials `find_account` checks (KDP's depends on the account's generation)."""
        return self.service

    def find_account(self, name: str) -> KnoxAccount:
        account = KnoxAccount.objects.filter(name=name).first()
        if account is None:
            known = ", ".join(f"“{n}”" for n in KnoxAccount.objects.values_list("name", flat=True)) or "none yet"
            raise Unusable(f"There is no Knox account named “{name}”; the accounts are: {known}.")
        if not account.is_active:
            raise Unusable(f"The Knox account “{name}” is switched off; activate it on its account page first.")
        missing = account.missing_credentials(self.account_service(account))
        if missing:
            raise Unusable(
                f"The Knox account “{name}” is not ready for {self.service_label}: it still needs {'; '.join(missing)}."
            )
        return account

    def note(self, message: str) -> None:
        """Progress for a person: stderr, so --json keeps stdout to the one object; never coloured as an error."""
        if not self.as_json:
            self.stderr.write(message, style_func=str)
