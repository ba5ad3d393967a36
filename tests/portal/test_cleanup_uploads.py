"""Uploaded spreadsheets are deleted once nothing needs them (UPLOAD_RETENTION_DAYS), with orphaned media files and
the portal's stale temporary files: `manage.py cleanup_uploads`, the hourly schedule, and the pages afterwards.

Ages are real: rows get old dates in the database and files old modification times on disk; nothing is mocked.
"""

from __future__ import annotations

import datetime
import io
import os
import time
from html import unescape
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from portal import tasks
from portal.models import AuditEvent, Job, Upload
from tests.data.hostile.make_corpus import imei
from tests.guard.helpers import guard_account
from tests.kdp.helpers import make_upload, ready_account

DAY = datetime.timedelta(days=1)
HOUR = 3600
# Two device columns, so the preview offers "Read again" with the other one (which needs the file).
CSV = (
    "IMEI,Serial Number,Order No\n" + "".join(f"{imei(n)},,PO-1\n" for n in range(3)) + "not-an-imei,,PO-2\n"
).encode()
DELETED = "The original file was deleted on {} after the retention period"


@pytest.fixture(autouse=True)
def _folders(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PORTAL_TEMP_DIR = tmp_path / "tmp"
    settings.UPLOAD_RETENTION_DAYS = 30


def staged(account, *, days_old: float, status: str = Upload.Status.READY, service: str = "kdp") -> Upload:
    """A real staged upload (file in media storage, rows read from it), uploaded `days_old` days ago."""
    upload = make_upload(account, CSV, "devices.csv", service=service)
    created = timezone.now() - days_old * DAY
    Upload.objects.filter(pk=upload.pk).update(status=status, created_at=created)
    upload.refresh_from_db()
    return upload


def submitted(account, *, days_old: float, job_status: str, finished_days_ago: float | None = None) -> Upload:
    upload = staged(account, days_old=days_old, status=Upload.Status.SUBMITTED)
    finished = timezone.now() - finished_days_ago * DAY if finished_days_ago is not None else None
    job = Job.objects.create(kind="kdp.upload", account=account, status=job_status, finished_at=finished)
    Upload.objects.filter(pk=upload.pk).update(job=job)
    upload.refresh_from_db()
    return upload


def stored(upload: Upload) -> Path:
    return Path(upload.file.path)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("cleanup_uploads", *args, stdout=out)
    return out.getvalue()


def test_files_past_retention_are_deleted_and_the_record_stays(db):
    account = ready_account()
    expired = {
        "refused": staged(account, days_old=31, status=Upload.Status.REFUSED),
        "abandoned at the preview": staged(account, days_old=31),
        "job finished 31 days ago": submitted(account, days_old=40, job_status="succeeded", finished_days_ago=31),
    }
    kept = {
        "uploaded 29 days ago": staged(account, days_old=29),
        "job still running": submitted(account, days_old=60, job_status="running"),
        "job finished 29 days ago": submitted(account, days_old=60, job_status="partial", finished_days_ago=29),
    }
    paths = {name: stored(upload) for name, upload in {**expired, **kept}.items()}
    sizes = {name: path.stat().st_size for name, path in paths.items()}

    out = run()

    for name, upload in expired.items():
        assert not paths[name].exists(), name
        upload.refresh_from_db()
        assert upload.file_deleted_at is not None and not upload.file, name
        assert upload.rows.count() == 4 and upload.valid == 3, name  # the record stays
        assert f"Deleted {paths[name].relative_to(Path(upload.file.storage.location))}" in out
    for name, upload in kept.items():
        assert paths[name].exists(), name
        upload.refresh_from_db()
        assert upload.file_deleted_at is None and upload.file, name
    assert f"Deleted 3 files, {sum(sizes[n] for n in expired):,} bytes" in out
    event = AuditEvent.objects.get(action="uploads.cleanup")
    assert event.summary["expired_files"] == 3 and event.summary["expired_bytes"] == sum(sizes[n] for n in expired)
    assert event.actor_name == "system" and "IMEI" not in str(event.summary)  # counts and bytes, no contents

    # A second run finds nothing and records nothing.
    assert "Nothing to delete" in run()
    assert AuditEvent.objects.filter(action="uploads.cleanup").count() == 1


def test_a_file_being_read_is_kept_whatever_its_age(db):
    account = ready_account()
    upload = staged(account, days_old=90, status=Upload.Status.PARSING)
    job = Job.objects.create(kind="kdp.parse", account=account, status="running")
    Upload.objects.filter(pk=upload.pk).update(parse_job=job)
    run()
    assert stored(upload).exists()
    Job.objects.filter(pk=job.pk).update(status="failed", finished_at=timezone.now() - 31 * DAY)
    run()
    assert not stored(upload).exists()


def test_retention_zero_deletes_a_file_at_the_first_run_after_its_job_finished(db, settings):
    settings.UPLOAD_RETENTION_DAYS = 0
    account = ready_account()
    upload = submitted(account, days_old=0, job_status="running")
    run()
    assert stored(upload).exists()
    Job.objects.filter(pk=upload.job_id).update(status="succeeded", finished_at=timezone.now())
    run()
    assert not stored(upload).exists()


def test_the_pages_say_when_the_file_was_deleted(client, operator):
    kdp = staged(ready_account(), days_old=31)
    guard = staged(guard_account(), days_old=31, service="guard")
    client.force_login(operator)
    assert "Read again" in client.get(f"/kdp/uploads/{kdp.pk}/").content.decode()
    run()
    kdp.refresh_from_db()
    said = DELETED.format(kdp.file_deleted_at.date().isoformat())

    page = client.get(f"/kdp/uploads/{kdp.pk}/")
    assert page.status_code == 200
    text = unescape(page.content.decode())
    assert said in text and "What the file holds" in text and "Read again" not in text
    problems = client.get(f"/kdp/uploads/{kdp.pk}/problems.xlsx")
    assert problems.status_code == 200 and b"".join(problems.streaming_content).startswith(b"PK\x03\x04")
    page = client.get(f"/guard/bulk/{guard.pk}/")
    assert page.status_code == 200 and said in unescape(page.content.decode())

    # Reading another sheet or column needs the file: refused in words, and the staged rows are untouched.
    r = client.post(f"/kdp/uploads/{kdp.pk}/restage/", {"device_column": "Serial Number"}, follow=True)
    assert said in unescape(r.content.decode()) and "upload the file again" in unescape(r.content.decode())
    kdp.refresh_from_db()
    assert kdp.status == Upload.Status.READY and kdp.device_column == "IMEI" and kdp.rows.count() == 4


def test_orphans_older_than_an_hour_are_deleted(db, settings):
    account = ready_account()
    referenced = staged(account, days_old=1)
    age(stored(referenced), 2 * HOUR)
    folder = Path(settings.MEDIA_ROOT) / "uploads" / "2025" / "01"
    folder.mkdir(parents=True)
    old_orphan, young_orphan = folder / "gone.csv", folder / "being-uploaded.csv"
    old_orphan.write_bytes(b"x" * 100)
    young_orphan.write_bytes(b"y" * 10)
    age(old_orphan, 2 * HOUR)
    age(young_orphan, 50 * 60)
    elsewhere = Path(settings.MEDIA_ROOT) / "other.csv"  # not an upload: never touched
    elsewhere.write_bytes(b"z")
    age(elsewhere, 100 * HOUR)

    out = run()

    assert not old_orphan.exists()
    assert young_orphan.exists() and stored(referenced).exists() and elsewhere.exists()
    assert "Deleted uploads/2025/01/gone.csv: 100 bytes, no upload points at it" in out
    assert AuditEvent.objects.get(action="uploads.cleanup").summary["orphan_files"] == 1


def test_stale_temporary_files_of_the_portal_are_deleted_and_no_others(db, settings):
    folder = Path(settings.PORTAL_TEMP_DIR)
    folder.mkdir()
    stale = [folder / "portal-upload-abc.upload.csv", folder / "portal-export-def.xml"]
    fresh = folder / "portal-upload-ghi.upload.xlsx"
    foreign = [folder / "tmpxyz.upload.csv", folder / "openpyxl.abc"]
    for path in [*stale, fresh, *foreign]:
        path.write_bytes(b"data")
        age(path, 2 * HOUR)
    age(fresh, 60)

    out = run()

    assert [p.exists() for p in stale] == [False, False]
    assert fresh.exists() and all(p.exists() for p in foreign)
    assert "temporary file left by a stopped process" in out
    summary = AuditEvent.objects.get(action="uploads.cleanup").summary
    assert summary["temp_files"] == 2 and summary["temp_bytes"] == 8


def test_dry_run_deletes_nothing(db, settings):
    account = ready_account()
    upload = staged(account, days_old=31)
    orphan = Path(settings.MEDIA_ROOT) / "uploads" / "orphan.csv"
    orphan.write_bytes(b"x")
    age(orphan, 2 * HOUR)

    out = run("--dry-run")

    assert f"Would delete {upload.file.name} (upload #{upload.pk})" in out
    assert "Would delete uploads/orphan.csv" in out and "Would delete 2 files" in out
    assert stored(upload).exists() and orphan.exists()
    upload.refresh_from_db()
    assert upload.file_deleted_at is None
    assert not AuditEvent.objects.filter(action="uploads.cleanup").exists()


def test_the_schedule_runs_the_clean_up_every_hour(db):
    schedule = Schedule.objects.get(func="portal.tasks.cleanup_uploads")  # created by migration portal 0011
    assert schedule.schedule_type == Schedule.HOURLY and schedule.repeats == -1
    upload = staged(ready_account(), days_old=31)
    assert tasks.cleanup_uploads() == f"deleted 1 files, {len(CSV)} bytes"
    assert not stored(upload).exists()


def test_an_upload_read_again_meanwhile_keeps_its_file(db):
    from portal.cleanup import delete_upload_file

    account = ready_account()
    upload = staged(account, days_old=31)
    # Staff chose another column between the clean-up's query and its delete: a new parse job reads the file.
    job = Job.objects.create(kind="kdp.parse", account=account, status="queued")
    Upload.objects.filter(pk=upload.pk).update(status=Upload.Status.PARSING, parse_job=job)
    assert delete_upload_file(upload) == -1
    assert stored(upload).exists()
    upload.refresh_from_db()
    assert upload.file_deleted_at is None
