"""Uploads to Knox Guard on the Knox request engine (portal.engine, guard.tasks.GuardUploads), against the real
sandbox: an upload is not repeatable, so a part whose answer was lost is settled by looking its devices up at Knox
Guard (none there: sent again; all there: it arrived; some: unknown), a call that provably never left is sent
again, a worker killed mid-send resumes from the rows, and an outage is waited out when KNOX_OUTAGE_PATIENCE
allows."""

from __future__ import annotations

import pytest
import requests

from guard.client import GuardClient
from guard.models import GuardDevice, GuardUpload, queue_upload
from guard.tasks import GuardUploads, run_upload
from portal.models import Job
from tests.base import fresh_imeis, knox_comes_back, lose_first_answer, migrated, refuse_first_connection, set_faults
from tests.guard.helpers import calls, guard_upload


@pytest.fixture(autouse=True)
def _quick(settings, monkeypatch):
    """Parts of two devices; the HTTP layer's own retries are short."""
    monkeypatch.setattr("guard.tasks.KG_UPLOAD_MAX_DEVICES", 2)
    settings.KNOX_MAX_RETRIES = 1
    settings.KNOX_BACKOFF_BASE = 0.01
    settings.KNOX_BACKOFF_MAX = 0.02


def upload_job(account, imeis: list[str], flags: dict | None = None) -> Job:
    return queue_upload(guard_upload(account, imeis), flags or {}, user=None)


def knox_uploads_of(server, imeis: list[str]) -> int:
    """How many uploads Knox Guard recorded with any of these devices (its own records)."""
    uploads = requests.get(f"{server.url}/_sandbox/state", timeout=10).json()["guard"]["uploads"]
    return sum(1 for u in uploads.values() if {d["deviceUid"] for d in u["devices"]} & set(imeis))


def parts(job: Job) -> list[GuardUpload]:
    return list(GuardUpload.objects.filter(job=job).order_by("sequence"))


def test_a_part_whose_answer_was_lost_is_found_at_knox_and_not_sent_again(guard_synced, knox_sandbox, monkeypatch):
    lost = lose_first_answer(monkeypatch, GuardClient, "upload")  # Knox Guard registers them, nobody hears
    imeis = fresh_imeis(4, "35844000")
    job = upload_job(guard_synced, imeis, {"autoAccept": True})
    run_upload(job.pk)

    job.refresh_from_db()
    first, second = parts(job)
    assert calls(knox_sandbox, "devices/uploads") == 2 and knox_uploads_of(knox_sandbox, imeis) == 2
    assert (first.state, first.succeeded, first.failed, first.upload_id) == ("complete", 2, 0, lost[0]["uploadID"])
    assert "all 2 devices were found in Knox Guard" in first.knox_message
    assert (second.state, second.succeeded, second.knox_status) == ("complete", 2, "Progress")
    assert (job.status, job.total, job.succeeded, job.failed) == (Job.Status.SUCCEEDED, 4, 4, 0)
    assert set(GuardDevice.objects.filter(device_uid__in=imeis).values_list("state", flat=True)) == {"Accepted"}


def test_a_refused_connection_is_sent_once_knox_is_back(guard_synced, knox_sandbox, monkeypatch, settings):
    settings.KNOX_OUTAGE_PATIENCE = 60
    reasons = knox_comes_back(monkeypatch, knox_sandbox)
    attempts = refuse_first_connection(monkeypatch, GuardClient, "upload")
    imeis = fresh_imeis(2, "35845000")
    job = upload_job(guard_synced, imeis)
    run_upload(job.pk)

    job.refresh_from_db()
    (part,) = parts(job)
    assert len(attempts) == 2 and knox_uploads_of(knox_sandbox, imeis) == 1
    assert reasons and "connection refused" in reasons[0]
    assert (part.state, part.succeeded) == ("complete", 2) and part.upload_id
    assert (job.status, job.succeeded, job.failed, job.waiting_since) == (Job.Status.SUCCEEDED, 2, 0, None)


def test_a_worker_killed_mid_send_resumes_by_looking_the_devices_up(guard_synced, knox_sandbox):
    """Four parts, as a killed worker leaves them: the first was being sent but never reached Knox; the second
    reached Knox, unheard; only one device of the third is in Knox Guard (someone uploaded it in the console);
    the fourth was never sent."""
    imeis = fresh_imeis(8, "35846000")
    job = upload_job(guard_synced, imeis)
    GuardUploads(job).plan()
    first, second, third, fourth = parts(job)
    for part in (first, second, third):
        assert part.start_sending()
    client = GuardClient(guard_synced)
    client.upload([(u, "") for u in imeis[2:4]], {}, transaction_id="killedmidsend")
    client.upload([(imeis[4], "")], {}, transaction_id="fromtheconsole")
    sent_before = calls(knox_sandbox, "devices/uploads")

    run_upload(job.pk)  # the next worker

    job.refresh_from_db()
    first, second, third, fourth = parts(job)
    assert calls(knox_sandbox, "devices/uploads") == sent_before + 2  # the first and the fourth, nothing twice
    assert [(p.state, p.succeeded, p.failed) for p in (first, second, fourth)] == [("complete", 2, 0)] * 3
    assert (third.state, third.knox_code, third.failed) == ("failed", "UNKNOWN", 2)
    assert "list of uploads" in third.knox_message
    assert (job.status, job.total, job.succeeded, job.failed) == (Job.Status.PARTIAL, 8, 6, 2)
    assert knox_uploads_of(knox_sandbox, imeis[:2] + imeis[6:]) == 2


def test_a_large_tenant_is_asked_device_by_device(guard_synced, knox_sandbox):
    """More devices in Knox Guard than fit a page: one search per device of the part beats reading the list."""
    GuardClient(guard_synced).upload([(u, "") for u in fresh_imeis(1000, "35847000")], {}, transaction_id="large")
    imeis = fresh_imeis(1, "35848000")
    job = upload_job(guard_synced, imeis)
    GuardUploads(job).plan()
    assert parts(job)[0].start_sending()  # killed before the call left
    listed_before = calls(knox_sandbox, "devices/list")

    run_upload(job.pk)

    job.refresh_from_db()
    assert calls(knox_sandbox, "devices/list") == listed_before + 2  # the count, then one search
    assert (job.status, job.succeeded) == (Job.Status.SUCCEEDED, 1) and knox_uploads_of(knox_sandbox, imeis) == 1


def test_an_outage_during_the_send_is_waited_out_and_settled(guard_synced, knox_sandbox, monkeypatch, settings):
    """Knox Guard answers everything 5xx: the upload's fate is unknown (it is not repeated blindly), the look-up
    fails too, the job waits; once Knox is back the look-up finds none of the devices, so the part is sent, once."""
    settings.KNOX_OUTAGE_PATIENCE = 60
    reasons = knox_comes_back(monkeypatch, knox_sandbox)
    imeis = fresh_imeis(2, "35849000")
    job = upload_job(guard_synced, imeis)
    set_faults(knox_sandbox, error=1)
    run_upload(job.pk)

    job.refresh_from_db()
    (part,) = parts(job)
    assert reasons and (part.state, part.succeeded, part.knox_status) == ("complete", 2, "Progress")
    assert knox_uploads_of(knox_sandbox, imeis) == 1
    assert (job.status, job.succeeded, job.failed, job.waiting_since) == (Job.Status.SUCCEEDED, 2, 0, None)


def test_an_outage_past_the_patience_ends_the_part_unknown(guard_synced, knox_sandbox):
    """Patience 0 (the tests' default): the upload's fate cannot be read, so it is reported, not guessed."""
    imeis = fresh_imeis(2, "35850000")
    job = upload_job(guard_synced, imeis)
    set_faults(knox_sandbox, error=1)
    run_upload(job.pk)
    set_faults(knox_sandbox)

    job.refresh_from_db()
    (part,) = parts(job)
    assert (part.state, part.knox_code, part.failed) == ("failed", "UNKNOWN", 2)
    assert job.status == Job.Status.FAILED and "Knox" in job.error_summary and knox_uploads_of(knox_sandbox, imeis) == 0


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_parts_their_state(monkeypatch):
    """Knox's status kept apart from the old job's own Prepared/Sending/Unknown; a part in flight gets its rows."""
    import importlib

    migration = importlib.import_module("guard.migrations.0004_guardupload_engine")
    monkeypatch.setattr(migration, "OLD_PART_SIZE", 2)  # the old job cut parts of 10,000

    def rows(apps) -> None:
        account = apps.get_model("portal", "KnoxAccount").objects.create(name="A", environment="sandbox")
        upload = apps.get_model("portal", "Upload").objects.create(account=account, service="guard", filename="x.csv")
        for n in range(2, 9):  # rows 2..8, row 4 invalid
            apps.get_model("portal", "UploadRow").objects.create(
                upload=upload, row_number=n, raw="x", value=f"V{n}", status="invalid" if n == 4 else "valid"
            )
        job = apps.get_model("portal", "Job").objects.create(kind="guard.upload", params={"upload": upload.pk})
        part = apps.get_model("guard", "GuardUpload").objects.create
        part(
            account=account, job=job, transaction_id=f"job{job.pk}part0", status="Progress", total=2, valid=1, invalid=1
        )
        part(account=account, job=job, transaction_id=f"job{job.pk}part1", status="Unknown", total=2)
        part(account=account, job=job, transaction_id=f"job{job.pk}part2", status="Sending", total=2)

    migrated("guard", "0003_chunk_engine", "0004_guardupload_engine", rows)
    found = GuardUpload.objects.order_by("sequence").values_list(
        "sequence", "state", "knox_status", "device_count", "succeeded", "failed", "knox_code", "first_row", "last_row"
    )
    assert list(found) == [
        (1, "complete", "Progress", 2, 1, 1, "", None, None),
        (2, "failed", "", 2, 0, 2, "UNKNOWN", None, None),
        (3, "sending", "", 2, 0, 0, "", 7, 8),  # valid rows 2, 3, 5, 6, 7, 8: the third pair
    ]
