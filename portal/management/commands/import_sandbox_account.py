"""Create or update a portal Knox account from a Knox sandbox's credentials.json and keys.json.

Everything goes through `KnoxAccountForm`, the form staff use on the account page, so keys.json gets exactly the
validation a user's upload gets. If credentials.json also carries a Gen1 key, a second account "<name> (Gen1)" is
set up for it: Samsung never lets one account mix KDP generations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal.forms import KnoxAccountForm
from portal.knox.hosts import SERVICE_PREFIXES
from portal.models import AuditEvent, KnoxAccount


class Command(BaseCommand):
    help = "Create or update a Knox account wired to a Knox sandbox (reads DIR/credentials.json and DIR/keys.json)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("state_dir", help="The sandbox's --state-dir (holds credentials.json and keys.json).")
        parser.add_argument("--name", default="Sandbox", help="Account name (default: Sandbox).")

    def handle(self, *args: Any, state_dir: str, name: str, **options: Any) -> None:
        folder = Path(state_dir)
        try:
            creds = json.loads((folder / "credentials.json").read_text())
        except FileNotFoundError:
            raise CommandError(
                f"{folder / 'credentials.json'} does not exist; start the sandbox once to create it"
            ) from None
        except ValueError as e:
            raise CommandError(f"{folder / 'credentials.json'} is not valid JSON: {e}") from None
        keys_path = Path(creds.get("keys_file") or folder / "keys.json")
        if not keys_path.is_absolute():
            keys_path = folder / keys_path
        try:
            keys_bytes = keys_path.read_bytes()
        except OSError as e:
            raise CommandError(f"cannot read keys.json at {keys_path}: {e.strerror}") from None

        with transaction.atomic():
            account = self.upsert(name, creds, keys_bytes, generation="gen2")
            self.stdout.write(
                self.style.SUCCESS(f"Knox account “{account}” (#{account.pk}) wired to {creds.get('base_url')}")
            )
            if creds.get("gen1_api_key"):
                gen1 = self.upsert(f"{name} (Gen1)", creds, keys_bytes, generation="gen1")
                self.stdout.write(self.style.SUCCESS(f"Knox account “{gen1}” (#{gen1.pk}) for the Gen1 API"))

    def upsert(self, name: str, creds: dict[str, Any], keys_bytes: bytes, *, generation: str) -> KnoxAccount:
        instance = KnoxAccount.objects.filter(name=name).first()
        base_url = str(creds.get("base_url") or settings.KNOX_SANDBOX_URL).rstrip("/")
        efota = creds.get("efota") or {}
        oauth = creds.get("oauth") or {}
        data: dict[str, Any] = {
            "name": name,
            "environment": KnoxAccount.Environment.SANDBOX,
            "region": (instance.region if instance else settings.KNOX_REGION),
            "kdp_generation": generation,
            "auth_mode": "gen1_key" if generation == "gen1" else "knox_token",
            "reseller_id": creds.get("gen1_reseller_id")
            if generation == "gen1" and creds.get("gen1_reseller_id")
            else creds.get("reseller_id", ""),
            "vendor_id": "",
            "oauth_client_id": oauth.get("client_id", ""),
            "oauth_scopes": "kdp.devices kdp.profilealias kdp.customers",
            "efota_client_id": efota.get("client_id", ""),
            "efota_mdm_id": efota.get("mdm_id", ""),
            "is_active": "on",
            "client_identifier": creds.get("client_identifier", ""),
            "oauth_client_secret": oauth.get("client_secret", ""),
            "efota_client_secret": efota.get("client_secret", ""),
            "gen1_api_key": creds.get("gen1_api_key", "") if generation == "gen1" else "",
        }
        # A sandbox elsewhere than KNOX_SANDBOX_URL gets explicit per-service URLs.
        if base_url != settings.KNOX_SANDBOX_URL:
            for service, field in (
                ("kdp", "kdp_url"),
                ("kdp_gen1", "kdp_gen1_url"),
                ("guard", "guard_url"),
                ("efota", "efota_url"),
                ("auth", "auth_url"),
            ):
                data[field] = base_url + SERVICE_PREFIXES[service]
        files = {"keys_file": SimpleUploadedFile("keys.json", keys_bytes, content_type="application/json")}
        form = KnoxAccountForm(data, files, instance=instance)
        if not form.is_valid():
            problems = "; ".join(f"{field}: {' '.join(errs)}" for field, errs in form.errors.items())
            raise CommandError(f"the sandbox credentials were refused: {problems}")
        account = form.save()
        AuditEvent.objects.record(
            "account.update" if instance else "account.create",
            target=account,
            summary={"via": "import_sandbox_account", **form.changed_summary()},
        )
        return account
