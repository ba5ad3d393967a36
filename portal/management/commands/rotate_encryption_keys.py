"""Re-encrypt every stored secret with the first key of FIELD_ENCRYPTION_KEYS (see docs/deploy.md)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal.crypto import SecretDecryptionError
from portal.models import AuditEvent, KnoxAccount


class Command(BaseCommand):
    help = "Re-encrypt all stored Knox secrets with the current (first) FIELD_ENCRYPTION_KEYS key."

    def handle(self, *args: Any, **options: Any) -> None:
        rewritten = 0
        with transaction.atomic():
            for account in KnoxAccount.objects.select_for_update():
                try:
                    n = account.rotate_secrets()
                except SecretDecryptionError as e:
                    raise CommandError(f"account “{account}”: {e}; nothing was changed") from None
                # update_fields: rotation must not bump credentials_version (the secrets are unchanged).
                account.save(update_fields=[*KnoxAccount.SECRET_FIELDS.values()])
                rewritten += n
            AuditEvent.objects.record("secrets.rotate", summary={"secrets_rewritten": rewritten})
        self.stdout.write(self.style.SUCCESS(f"{rewritten} secret(s) re-encrypted with the current key."))
