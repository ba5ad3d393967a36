"""Builders the Knox Guard tests share: a Guard-ready account, local devices, staged files and sandbox call
counts."""

from __future__ import annotations

from django.core.files.base import ContentFile

from guard.models import GuardDevice
from portal.models import KnoxAccount, Upload
from portal.uploads import stage_upload
from tests.base import sandbox_state
from tests.kdp.helpers import make_upload

CONTACT = {"tel": "+44 20 7946 0000"}
KG = "/kcs/v1.1/kg"


def device_in(account, state: str) -> GuardDevice:
    return GuardDevice.objects.filter(account=account, state=state).order_by("id").first()


def guard_account(name: str = "Guard Finance") -> KnoxAccount:
    """An account with every credential Knox Guard needs; the tests that use it never let it call Knox."""
    account = KnoxAccount(name=name, environment=KnoxAccount.Environment.SANDBOX, public_key="cHVibGlj")
    account.set_secret("private_key", "not-a-real-key")
    account.set_secret("client_identifier", "not-a-real-identifier")
    account.save()
    return account


def make_device(account: KnoxAccount, state: str, n: int = 1, **extra: object) -> GuardDevice:
    defaults = {"approve_id": f"LOAN-{n:04d}", "object_id": f"OBJ{n:020d}", "model": "SM-A155F"}
    return GuardDevice.objects.create(
        account=account, device_uid=f"35000000000{n:04d}", state=state, **{**defaults, **extra}
    )


def stage(account, content: bytes, filename: str = "loans.csv", *, operation: str = "guard", user=None) -> Upload:
    return make_upload(account, content, filename, operation=operation, user=user, service="guard")


def imei_csv(imeis) -> bytes:
    return ("IMEI\n" + "".join(f"{i}\n" for i in imeis)).encode()


def calls(server, endpoint: str) -> int:
    """How many requests the sandbox received on a Knox Guard path, e.g. "devices/lock"."""
    return sandbox_state(server)["counters"]["by_path"].get(f"{KG}/{endpoint}", 0)


def guard_upload(account: KnoxAccount, imeis: list[str], name: str = "new-loans.csv") -> Upload:
    upload = Upload(service="guard", account=account, operation=Upload.Operation.GUARD_UPLOAD, filename=name)
    upload.file.save(name, ContentFile(imei_csv(imeis)), save=False)
    upload.save()
    stage_upload(upload)
    assert upload.status == Upload.Status.READY, upload.error
    return upload
