"""Builders the KDP tests share: accounts, staged uploads, spreadsheets and finished jobs.

One home for them, so that a test module never imports another test module (which would also collect its tests
twice in a reader's head) and no builder exists in two copies that drift apart."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import python_calamine
from django.contrib.auth.models import User
from django.core.files.base import ContentFile

from kdp.models import Customer, Device, Transaction, TransactionDevice
from portal.models import Job, KnoxAccount, Upload
from portal.uploads import stage_upload

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"  # a copy of ../shared/samples


def make_upload(account, content: bytes, filename: str, *, operation: str = "upload", user=None, **extra) -> Upload:
    upload = Upload(account=account, filename=filename, operation=operation, created_by=user, **extra)
    upload.file.save(filename, ContentFile(content), save=False)
    upload.save()
    return stage_upload(upload)


def imei_csv(imeis) -> bytes:
    out = io.StringIO()
    out.write("IMEI,Order No\n")
    for i in imeis:
        out.write(f"{i},PO-1\n")
    return out.getvalue().encode()


def ready_account(name: str = "Acme Mobile") -> KnoxAccount:
    """A Gen2 OAuth account with every credential KDP needs; the tests using it never let it call Knox."""
    account = KnoxAccount(
        name=name,
        environment=KnoxAccount.Environment.SANDBOX,
        auth_mode=KnoxAccount.AuthMode.OAUTH,
        oauth_client_id="portal-tests",
        reseller_id="4612345678",
    )
    account.set_secret("oauth_client_secret", "not-a-real-secret")
    account.save()
    return account


def xlsx_rows(content: bytes) -> list[list[object]]:
    return python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(content)).get_sheet_by_index(0).to_python()


def two_customers(account) -> tuple[Customer, Customer]:
    """Contoso and Fabrikam, two verified customers of `account` (the preview and delete-check tests)."""
    contoso = Customer.objects.create(
        account=account, customer_id="4611111111", name="Contoso Logistics", status="Verified"
    )
    fabrikam = Customer.objects.create(
        account=account, customer_id="4622222222", name="Fabrikam Health", status="Verified"
    )
    return contoso, fabrikam


ALREADY_REGISTERED = ("4092100", "DEVICE_ALREADY_EXISTS", "device already exists for another customer")


def finished_job(
    customer: Customer,
    *,
    user: User | None = None,
    succeeded: Sequence[str] = (),
    failed: Sequence[str] = (),
    kind: str = "kdp.upload",
    transaction_id: str = "",
    failure: tuple[str, str, str] = ALREADY_REGISTERED,
) -> Job:
    """The records a finished one-chunk upload job leaves: job counters, a Transaction, per-device outcomes and
    the devices themselves."""
    succeeded, failed = list(succeeded), list(failed)
    job = Job.objects.create(
        kind=kind,
        account=customer.account,
        created_by=user,
        title=f"Register devices for {customer.name}",
        params={"customer": customer.pk, "profile_alias": "Kiosk", "order_no": "PO-7"},
    )
    job.set_total(len(succeeded) + len(failed))
    job.claim("test-worker")
    tx = Transaction.objects.create(
        account=customer.account,
        job=job,
        sequence=1,
        operation="upload",
        generation="gen2",
        customer=customer,
        device_type="IMEI",
        profile_alias="Kiosk",
        device_count=len(succeeded) + len(failed),
        state=Transaction.State.COMPLETE,
        succeeded=len(succeeded),
        failed=len(failed),
        **({"transaction_id": transaction_id} if transaction_id else {}),
    )
    TransactionDevice.objects.bulk_create(
        [
            TransactionDevice(transaction=tx, job=job, identifier=i, row_number=n, outcome="succeeded")
            for n, i in enumerate(succeeded, 2)
        ]
        + [
            TransactionDevice(
                transaction=tx,
                job=job,
                identifier=i,
                row_number=n,
                outcome="failed",
                code=failure[0],
                message=failure[1],
                data=failure[2],
            )
            for n, i in enumerate(failed, 2 + len(succeeded))
        ]
    )
    Device.objects.bulk_create(
        [
            Device(
                account=customer.account,
                identifier=i,
                kind="imei",
                imei=i,
                customer=customer,
                state=Device.State.REGISTERED,
                last_transaction=tx,
            )
            for i in succeeded
        ]
        + [
            Device(
                account=customer.account,
                identifier=i,
                kind="imei",
                imei=i,
                state=Device.State.FAILED,
                last_transaction=tx,
                last_code=failure[0],
            )
            for i in failed
        ]
    )
    job.add_progress(succeeded=len(succeeded), failed=len(failed))
    job.finish()
    return job
