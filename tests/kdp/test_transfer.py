"""Upload and delete jobs end to end against the in-process sandbox (real HTTP over loopback)."""

from __future__ import annotations

from kdp.models import Device, Transaction, TransactionDevice, submit_upload
from kdp.tasks import run_transfer
from portal.models import AuditEvent, Job, Upload
from tests.base import fresh_imeis, sandbox_state
from tests.kdp.helpers import imei_csv, make_upload


def test_upload_registers_every_device_with_the_profile_alias(customer, knox_sandbox, settings):
    settings.KDP_CHUNK_SIZE = 4
    imeis = fresh_imeis(10)
    upload = make_upload(customer.account, imei_csv(imeis), "order.csv")
    assert upload.status == Upload.Status.READY and upload.valid == 10
    alias = customer.aliases.first().name
    job = submit_upload(upload, user=None, customer=customer, profile_alias=alias, order_no="PO-9")
    run_transfer(job.pk)

    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error_summary
    assert (job.total, job.succeeded, job.failed) == (10, 10, 0)
    assert Transaction.objects.filter(job=job).count() == 3  # chunks of 4, 4, 2
    assert set(Transaction.objects.filter(job=job).values_list("state", flat=True)) == {Transaction.State.COMPLETE}
    devices = Device.objects.filter(identifier__in=imeis)
    assert devices.count() == 10
    assert set(devices.values_list("state", "customer_id", "profile_alias")) == {
        (Device.State.REGISTERED, customer.pk, alias)
    }
    assert not devices.filter(pending_job__isnull=False).exists()
    customer.refresh_from_db()
    assert customer.device_count == 10 and customer.last_upload_at

    state = sandbox_state(knox_sandbox)
    for imei in imeis:
        knox = state["kdp"]["devices"][imei]
        assert knox["customerId"] == customer.customer_id
        assert knox["resellerId"] == customer.account.reseller_id
    assert state["counters"]["duplicate_device_submissions"] == 0
    assert state["counters"]["rate_limited"] == 0
    assert AuditEvent.objects.filter(action="kdp.upload", target_id=str(job.pk)).exists()


def test_per_device_failures_are_recorded_with_knox_codes(customer, knox_sandbox):
    creds = knox_sandbox.credentials
    theirs = creds["second_reseller"]["device_ids"][0]  # an IMEI another reseller owns
    mine = fresh_imeis(2, "35111111")
    upload = make_upload(customer.account, imei_csv([*mine, theirs]), "mixed.csv")
    job = submit_upload(upload, user=None, customer=customer)
    run_transfer(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.PARTIAL and (job.succeeded, job.failed) == (2, 1)
    failed = TransactionDevice.objects.get(job=job, outcome="failed")
    assert failed.identifier == theirs and failed.code == "4092100"
    assert "already registered" in failed.explanation()
    assert Device.objects.get(identifier=theirs).state == Device.State.FAILED


def test_a_pending_customer_is_refused_for_the_whole_job(synced, knox_sandbox):
    from kdp.models import Customer, submit_upload

    pending = Customer.objects.get(account=synced, status="Pending")
    upload = make_upload(synced, imei_csv(fresh_imeis(3, "35222222")), "p.csv")
    job = submit_upload(upload, user=None, customer=pending)
    run_transfer(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.failed == 3
    assert "40000011" in job.error_summary
    assert not Device.objects.filter(state=Device.State.REGISTERED).filter(identifier__startswith="35222222").exists()


def test_delete_then_40000044_for_a_device_we_do_not_own(customer, knox_sandbox):
    imeis = fresh_imeis(3, "35333333")
    up = make_upload(customer.account, imei_csv(imeis), "u.csv")
    run_transfer(submit_upload(up, user=None, customer=customer).pk)
    stranger = fresh_imeis(1, "35444444")
    delete = make_upload(customer.account, imei_csv([*imeis, *stranger]), "d.csv", operation="delete")
    assert delete.valid == 4
    job = submit_upload(delete, user=None, customer=customer)
    run_transfer(job.pk)
    job.refresh_from_db()
    assert (job.succeeded, job.failed) == (3, 1)
    td = TransactionDevice.objects.get(job=job, outcome="failed")
    assert td.code == "40000044" and "not registered to this customer" in td.explanation()
    assert set(Device.objects.filter(identifier__in=imeis).values_list("state", flat=True)) == {Device.State.DELETED}
    customer.refresh_from_db()
    assert customer.device_count == 0
    assert all(i not in sandbox_state(knox_sandbox)["kdp"]["devices"] for i in imeis)


def test_an_interrupted_job_resumes_without_sending_a_chunk_twice(customer, knox_sandbox, settings):
    """Simulate a worker killed at the two dangerous moments, then let a new worker resume the job."""
    from datetime import timedelta

    from django.utils import timezone

    from kdp.client import KdpClient, Submission
    from kdp.tasks import Transfer, plan
    from portal.engine import _send

    settings.KDP_CHUNK_SIZE = 5
    imeis = fresh_imeis(20, "35555555")
    upload = make_upload(customer.account, imei_csv(imeis), "big.csv")
    job = submit_upload(upload, user=None, customer=customer)
    assert job.claim("worker-1")
    plan(job)
    txs = list(Transaction.objects.filter(job=job).order_by("sequence"))
    client = KdpClient(customer.account)
    _send(Transfer(job), txs[0])  # chunk 1 sent and recorded
    # chunk 2: the worker died right after Knox accepted it, before recording that
    Transaction.objects.filter(pk=txs[1].pk).update(state="sending", send_attempted_at=timezone.now())
    tds = TransactionDevice.objects.filter(transaction=txs[1]).values_list("identifier", flat=True)
    client.submit(
        Submission(
            txs[1].transaction_id, "upload", customer.account.reseller_id, customer.customer_id, "IMEI", list(tds)
        ),
    )
    # chunk 3: the worker died after marking the attempt, before sending
    Transaction.objects.filter(pk=txs[2].pk).update(state="sending", send_attempted_at=timezone.now())
    # the lease expires; a new delivery resumes
    Job.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    run_transfer(job.pk)

    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and (job.total, job.succeeded, job.failed) == (20, 20, 0)
    state = sandbox_state(knox_sandbox)
    assert state["counters"]["duplicate_device_submissions"] == 0
    knox_txs = [k for k in state["kdp"]["transactions"] if k.endswith(tuple(t.transaction_id for t in txs))]
    assert len(knox_txs) == 4  # one Knox transaction per chunk, none twice
    assert TransactionDevice.objects.filter(job=job).count() == 20
    assert Device.objects.filter(identifier__in=imeis, state=Device.State.REGISTERED).count() == 20


def test_a_dead_knox_ends_the_job_with_a_reason_and_nothing_stuck(customer, settings):
    settings.KNOX_SANDBOX_URL = "http://127.0.0.1:9"
    settings.KNOX_MAX_RETRIES = 1
    settings.KNOX_BACKOFF_BASE = 0.01
    upload = make_upload(customer.account, imei_csv(fresh_imeis(3, "35666666")), "x.csv")
    job = submit_upload(upload, user=None, customer=customer)
    run_transfer(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "connection to Knox failed" in job.error_summary
    assert (job.total, job.failed) == (3, 3)
    assert TransactionDevice.objects.filter(job=job, outcome="failed", code="NOT_SENT").count() == 3
    assert not Device.objects.filter(pending_job=job).exists()
