"""What a KDP upload/delete job adds to portal.jobsummary.job_summary (registered in KdpConfig.ready): the
spreadsheet's figures, the customer and the devices Knox (or the portal) refused."""

from __future__ import annotations

from typing import Any

from kdp.models import Customer, Transaction, TransactionDevice
from portal.jobsummary import FAILURES_LIMIT, failure_entries, job_upload_figures
from portal.models import Job

TRANSFER_KINDS = ("kdp.upload", "kdp.delete")


def summary_details(job: Job) -> dict[str, Any] | None:
    if job.kind not in TRANSFER_KINDS:
        return None
    # A spreadsheet with several customers is submitted as one job per customer, all naming it in their params.
    figures = job_upload_figures(job, job.params.get("upload"))
    customer_pk = job.params.get("customer")
    if customer_pk is None:
        # Retries and device-list deletes name their customers per chunk; report the first chunk's.
        first = Transaction.objects.filter(job=job).order_by("sequence").first()
        customer_pk = first.customer_id if first else None
    customer = Customer.objects.filter(pk=customer_pk).values_list("customer_id", flat=True).first()
    return {**figures, "submitted": job.total, "customer": customer, "failures": transfer_failures(job)}


def transfer_failures(job: Job) -> list[dict[str, Any]]:
    """The first FAILURES_LIMIT devices Knox (or the portal) refused in an upload/delete job, in sending order."""
    failed = TransactionDevice.objects.filter(job=job, outcome=TransactionDevice.Outcome.FAILED).order_by("id")
    return failure_entries(failed[:FAILURES_LIMIT], "identifier")
