from __future__ import annotations

import pytest

from guard.models import GuardDevice
from guard.tasks import sync_devices
from portal.models import Job


@pytest.fixture(autouse=True)
def _fast(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def guard_synced(sandbox_account):
    """The sandbox account with its Knox Guard devices synced."""
    job = Job.objects.create(kind="guard.sync", account=sandbox_account)
    sync_devices(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error_summary
    assert GuardDevice.objects.filter(account=sandbox_account).exists()
    return sandbox_account


def device_in(account, state: str) -> GuardDevice:
    return GuardDevice.objects.filter(account=account, state=state).order_by("id").first()
