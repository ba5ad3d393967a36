"""E-FOTA jobs and reads against the in-process sandbox."""

from __future__ import annotations

import pytest

from efota.client import EfotaValidationError
from efota.models import (
    EfotaCall,
    EfotaGroup,
    ForceUpdate,
    check_licence,
    queue_force_update,
    queue_license_change,
    queue_register,
)
from efota.tasks import refresh_force_update, register_group, run_force_update
from portal.knox.errors import KnoxError
from portal.models import AuditEvent, Job


@pytest.fixture
def efota(sandbox_account, knox_sandbox):
    return knox_sandbox.credentials["efota"]


def test_register_a_group_and_move_it_to_another_licence(sandbox_account, efota):
    job = queue_register(sandbox_account, efota["customer_id"], "fleet-a", efota["license"], user=None)
    register_group(job.pk)
    job.refresh_from_db()
    group = EfotaGroup.objects.get(group_id="FLEET-A")  # upper-cased as E-FOTA treats it
    assert job.status == Job.Status.SUCCEEDED and group.status == EfotaGroup.Status.REGISTERED
    move = queue_license_change(group, efota["second_license"], user=None)
    register_group(move.pk)
    group.refresh_from_db()
    assert group.licence == efota["second_license"]
    assert EfotaCall.objects.filter(operation="groupLicenseChange", ok=True).exists()
    assert AuditEvent.objects.filter(action="efota.license_change").exists()


def test_an_expired_licence_fails_with_the_fud_code_in_words(sandbox_account, efota):
    job = queue_register(sandbox_account, efota["customer_id"], "G2", efota["expired_license"], user=None)
    register_group(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "FUD_3018" in job.error_summary and "not active" in job.error_summary
    assert EfotaGroup.objects.get(group_id="G2").status == EfotaGroup.Status.FAILED


def test_byte_limits_are_checked_before_any_call(sandbox_account, efota):
    with pytest.raises(EfotaValidationError) as e:
        queue_register(
            sandbox_account, efota["customer_id"], "é" * 26, efota["license"], user=None
        )  # 52 bytes, 26 characters
    assert "52 bytes" in e.value.errors["group_id"]
    queue_register(sandbox_account, efota["customer_id"], "é" * 25, efota["license"], user=None)  # 50 bytes: fine


def test_force_update_in_parts_of_100_and_its_progress(sandbox_account, efota, monkeypatch):
    import efota.tasks as tasks

    monkeypatch.setattr(tasks, "EFOTA_MAX_DEVICES_PER_CALL", 4)
    serials = efota["device_serials"][:6]
    job = queue_force_update(sandbox_account, customer_id=efota["customer_id"], licence=efota["license"], model="SM-G991B",
                             sales_code="BTU", serials=serials, user=None)  # fmt: skip
    run_force_update(job.pk)
    parts = list(ForceUpdate.objects.filter(job=job).order_by("sequence"))
    assert [len(p.serials) for p in parts] == [4, 2] and all(p.force_update_id for p in parts)
    fu = refresh_force_update(parts[0])
    assert fu.downloaded + fu.download_failed + fu.processing == 4


def test_licence_info_is_stored_and_errors_are_recorded(sandbox_account, efota):
    record = check_licence(sandbox_account, efota["customer_id"], efota["license"], user=None)
    assert record.max_devices and record.expiration_date and not record.is_expired
    with pytest.raises(KnoxError):
        check_licence(sandbox_account, efota["customer_id"], "EFOTA1-nope", user=None)
    assert EfotaCall.objects.filter(operation="licenseInfo", ok=False).exists()
