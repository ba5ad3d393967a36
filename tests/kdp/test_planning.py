"""Planning a transfer chunk by chunk while sending (kdp.tasks.plan_chunks, portal.engine.Planning): the first
chunk leaves before the rest are planned, a plan cut short is planned on without a device twice, and a worker
whose job was taken over plans nothing more."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from kdp.client import KdpClient
from kdp.models import Transaction, TransactionDevice, submit_upload
from kdp.tasks import plan_chunks, run_transfer
from portal.models import Job, LeaseLost
from tests.base import fresh_imeis
from tests.kdp.helpers import imei_csv, make_upload


@pytest.fixture
def job(customer, knox_sandbox, settings) -> Job:
    """A queued upload of 10 devices in chunks of 4, 4 and 2."""
    settings.KDP_CHUNK_SIZE = 4
    upload = make_upload(customer.account, imei_csv(fresh_imeis(10, "35777777")), "plan.csv")
    return submit_upload(upload, user=None, customer=customer)


def assert_sent_once(knox_sandbox, job: Job) -> None:
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error_summary
    assert (job.total, job.succeeded, job.failed) == (10, 10, 0)
    assert Transaction.objects.filter(job=job).count() == 3
    assert TransactionDevice.objects.filter(job=job).count() == 10
    assert TransactionDevice.objects.filter(job=job).values("identifier").distinct().count() == 10
    state = requests.get(f"{knox_sandbox.url}/_sandbox/state", timeout=10).json()
    assert state["counters"]["duplicate_device_submissions"] == 0


def test_the_first_chunk_leaves_before_the_rest_are_planned(job, knox_sandbox, monkeypatch):
    planned_at_send: list[int] = []
    submit = KdpClient.submit

    def counting(self, s):
        planned_at_send.append(Transaction.objects.filter(job=job).count())
        return submit(self, s)

    monkeypatch.setattr(KdpClient, "submit", counting)
    run_transfer(job.pk)

    assert planned_at_send[0] == 1  # only the chunk being sent was planned when the first request left
    assert_sent_once(knox_sandbox, job)


def test_a_plan_cut_short_by_a_dead_worker_is_planned_on_without_a_device_twice(job, knox_sandbox):
    assert job.claim("worker-1")
    steps = plan_chunks(job, "worker-1")
    next(steps)  # the first chunk is committed, then the worker dies (the rest of the plan is never made)
    steps.close()
    assert Transaction.objects.filter(job=job).count() == 1
    Job.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))

    run_transfer(job.pk)

    assert sorted(Transaction.objects.filter(job=job).values_list("sequence", flat=True)) == [1, 2, 3]
    assert_sent_once(knox_sandbox, job)


def test_a_worker_whose_job_was_taken_over_plans_nothing_more(job):
    assert job.claim("worker-1")
    steps = plan_chunks(job, "worker-1")
    next(steps)
    Job.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert Job.objects.get(pk=job.pk).claim("worker-2")

    with pytest.raises(LeaseLost):
        next(steps)
    assert Transaction.objects.filter(job=job).count() == 1
    assert TransactionDevice.objects.filter(job=job).count() == 4


def test_devices_not_planned_when_knox_stays_away_still_get_their_outcome(customer, settings):
    settings.KNOX_SANDBOX_URL = "http://127.0.0.1:9"
    settings.KNOX_MAX_RETRIES = 1
    settings.KNOX_BACKOFF_BASE = 0.01
    settings.KDP_CHUNK_SIZE = 1
    upload = make_upload(customer.account, imei_csv(fresh_imeis(3, "35777778")), "away.csv")
    job = submit_upload(upload, user=None, customer=customer)

    run_transfer(job.pk)

    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert (job.total, job.failed) == (3, 3)
    assert Transaction.objects.filter(job=job).count() == 3
    assert TransactionDevice.objects.filter(job=job, outcome="failed", code="NOT_SENT").count() == 3
