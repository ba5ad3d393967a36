"""A Gen1 account goes through the same pages and jobs, speaking the Gen1 paths and payloads."""

from __future__ import annotations

import requests

from kdp.models import Customer, Device, Transaction, submit_upload
from kdp.tasks import run_transfer, sync_customers
from portal.models import Job, KnoxAccount
from tests.base import fresh_imeis
from tests.kdp.helpers import imei_csv, make_upload


def test_gen1_sync_upload_and_delete(sandbox_account, knox_sandbox):
    gen1 = KnoxAccount.objects.get(name="Sandbox (Gen1)")
    sync = Job.objects.create(kind="kdp.customers", account=gen1)
    sync_customers(sync.pk)
    customer = Customer.objects.filter(account=gen1).first()
    assert customer is not None and customer.customer_id in {
        c["customerId"] for c in knox_sandbox.credentials["gen1_customers"]
    }

    imeis = fresh_imeis(3, "35777777")
    upload = make_upload(gen1, imei_csv(imeis), "g1.csv")
    job = submit_upload(upload, user=None, customer=customer)
    run_transfer(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.succeeded == 3, job.error_summary
    assert Transaction.objects.get(job=job).generation == "gen1"
    state = requests.get(f"{knox_sandbox.url}/_sandbox/state", timeout=10).json()
    assert all(state["kdp"]["devices"][i]["resellerId"] == gen1.reseller_id for i in imeis)
    assert Device.objects.filter(account=gen1, identifier__in=imeis, state=Device.State.REGISTERED).count() == 3

    delete = make_upload(gen1, imei_csv(imeis[:1]), "g1-del.csv", operation="delete")
    djob = submit_upload(delete, user=None, customer=customer)
    run_transfer(djob.pk)
    djob.refresh_from_db()
    assert djob.status == Job.Status.SUCCEEDED
    assert Device.objects.get(account=gen1, identifier=imeis[0]).state == Device.State.DELETED


def test_gen1_unknown_customer_is_a_rejected_transaction(sandbox_account, knox_sandbox):
    gen1 = KnoxAccount.objects.get(name="Sandbox (Gen1)")
    ghost = Customer.objects.create(account=gen1, customer_id="9999999999", name="Ghost")
    job = submit_upload(make_upload(gen1, imei_csv(fresh_imeis(2, "35888888")), "ghost.csv"), user=None, customer=ghost)
    run_transfer(job.pk)
    job.refresh_from_db()
    tx = Transaction.objects.get(job=job)
    assert tx.state == Transaction.State.REJECTED and tx.knox_code == "4042104"
    assert job.status == Job.Status.FAILED and "4042104" in job.error_summary
