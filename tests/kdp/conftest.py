from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from kdp.models import Customer
from kdp.tasks import sync_customers
from portal.models import Job, Upload
from portal.uploads import stage_upload

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"  # a copy of ../shared/samples


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _polls_match_the_test_sandbox(monkeypatch):
    """The test sandbox settles a KDP transaction in 0.2 s (tests/conftest.py), not in the 2 s the portal assumes
    of Knox (KDP_PROCESSING_SECONDS): the first status poll follows it."""
    monkeypatch.setattr("kdp.tasks.POLL_FIRST_DELAY_SECONDS", 0.3)


@pytest.fixture
def synced(sandbox_account):
    """The sandbox account with its customers and profile aliases synced from Knox."""
    job = Job.objects.create(kind="kdp.customers", account=sandbox_account)
    sync_customers(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error_summary
    return sandbox_account


@pytest.fixture
def customer(synced):
    return Customer.objects.filter(account=synced, status="Verified").order_by("name").first()


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
