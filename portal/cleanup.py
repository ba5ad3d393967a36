"""Deleting uploaded spreadsheets once nothing needs them, and what a killed process left behind.

    report = clean_up()               # or clean_up(dry_run=True): the same report, nothing deleted
    report.deleted                    # [Deleted(path="uploads/2026/01/devices.csv", size=48213, reason=..., upload=12)]
    report.summary()                  # counts and bytes per reason (what the audit event records)

Three kinds of file go:

1. `expired`: the spreadsheet of an Upload that is finished with, longer ago than UPLOAD_RETENTION_DAYS:
   - submitted, and the job acting on it finished that long ago (a running job keeps it);
   - never submitted (refused, or left at the preview), uploaded that long ago, and not being read right now.
   The Upload row and its staged rows stay: they are the record, and the pages say when the file was deleted.
2. `orphan`: a file under MEDIA_ROOT/uploads that no Upload points at (its row was deleted, or the web server
   was killed between saving the file and saving the row), older than an hour, so a file being uploaded right
   now is never touched.
3. `temp`: a `portal-*` file in PORTAL_TEMP_DIR older than an hour: an upload Django was streaming to disk, or an
   Excel export being built, when the process died. Nothing else there is touched (portal.files.TEMP_PREFIX).

Runs every hour (django-q2 schedule, migration portal 0011; portal.tasks.cleanup_uploads) and on demand
(`manage.py cleanup_uploads [--dry-run]`). A run that deleted something is audited: counts and bytes only.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.files import TEMP_PREFIX
from portal.models import AuditEvent, Job, Upload

logger = logging.getLogger(__name__)

# A file younger than this may belong to a request or a job still under way.
MIN_AGE = datetime.timedelta(hours=1)
UPLOADS_FOLDER = "uploads"  # portal.models.upload_path puts every spreadsheet below it
REASONS = {
    "expired": "past its retention",
    "orphan": "no upload points at it",
    "temp": "temporary file left by a stopped process",
}


@dataclass(frozen=True, slots=True)
class Deleted:
    path: str  # relative to MEDIA_ROOT for spreadsheets, absolute for temporary files
    size: int
    reason: str  # a key of REASONS
    upload: int | None = None


@dataclass(slots=True)
class Report:
    dry_run: bool
    retention_days: int
    deleted: list[Deleted] = field(default_factory=list)

    def count(self, reason: str) -> int:
        return sum(1 for d in self.deleted if d.reason == reason)

    def size(self, reason: str | None = None) -> int:
        return sum(d.size for d in self.deleted if reason is None or d.reason == reason)

    def summary(self) -> dict[str, int | bool]:
        out: dict[str, int | bool] = {"dry_run": self.dry_run, "retention_days": self.retention_days}
        for reason in REASONS:
            out[f"{reason}_files"] = self.count(reason)
            out[f"{reason}_bytes"] = self.size(reason)
        out["files"], out["bytes"] = len(self.deleted), self.size()
        return out


def clean_up(*, dry_run: bool = False) -> Report:
    now = timezone.now()
    report = Report(dry_run=dry_run, retention_days=settings.UPLOAD_RETENTION_DAYS)
    _expired(report, now)
    _orphans(report, now)
    _temporary(report, now)
    if report.deleted and not dry_run:
        AuditEvent.objects.record("uploads.cleanup", summary=report.summary())
        logger.info("clean-up deleted %s files, %s bytes", len(report.deleted), report.size())
    return report


def expired_uploads(now: datetime.datetime | None = None) -> QuerySet[Upload]:
    """Uploads whose spreadsheet is still stored although nothing has needed it for UPLOAD_RETENTION_DAYS."""
    cutoff = (now or timezone.now()) - datetime.timedelta(days=settings.UPLOAD_RETENTION_DAYS)
    job_done = Q(job__status__in=Job.FINISHED, job__finished_at__lt=cutoff)
    submitted = Q(status=Upload.Status.SUBMITTED) & (job_done | Q(job__isnull=True, created_at__lt=cutoff))
    # A file is read again when staff pick another sheet or column: the reading must have ended, that long ago.
    read = Q(parse_job__isnull=True) | Q(parse_job__status__in=Job.FINISHED, parse_job__finished_at__lt=cutoff)
    unsubmitted = ~Q(status=Upload.Status.SUBMITTED) & Q(created_at__lt=cutoff) & read
    return Upload.objects.filter(file_deleted_at=None).exclude(file="").filter(submitted | unsubmitted).order_by("pk")


def _expired(report: Report, now: datetime.datetime) -> None:
    for upload in expired_uploads(now).iterator(chunk_size=500):
        name = upload.file.name
        if report.dry_run:
            size = _size(Path(settings.MEDIA_ROOT) / name)
        else:
            size = delete_upload_file(upload)
            if size < 0:
                continue  # changed meanwhile; the next run looks again
        report.deleted.append(Deleted(name, max(size, 0), "expired", upload.pk))


def delete_upload_file(upload: Upload) -> int:
    """Delete an upload's stored spreadsheet and keep the record; the number of bytes freed, or -1 when the upload
    changed meanwhile (a "read again" started, say) and was left alone.

    1. The row is marked first, in one conditional update: if the process dies before step 2, no row points at
       the file any more, and the next clean-up removes it as an orphan.
    2. The file goes.
    """
    name = upload.file.name
    now = timezone.now()
    marked = Upload.objects.filter(
        pk=upload.pk, file=name, file_deleted_at=None, status=upload.status, parse_job=upload.parse_job_id
    ).update(file="", file_deleted_at=now)
    if marked != 1:
        return -1
    storage = upload.file.storage
    upload.file.name, upload.file_deleted_at = "", now
    try:
        size = storage.size(name)
    except FileNotFoundError:
        return 0
    storage.delete(name)
    return size


def _orphans(report: Report, now: datetime.datetime) -> None:
    media = Path(settings.MEDIA_ROOT)
    folder = media / UPLOADS_FOLDER
    if not folder.is_dir():
        return
    # Read before the folder: a file saved after this line is younger than MIN_AGE, so it is never taken for one.
    referenced = set(Upload.objects.exclude(file="").values_list("file", flat=True))
    for path in _old_files(folder, now, recursive=True):
        name = path.relative_to(media).as_posix()
        if name not in referenced:
            _delete(report, path, name, "orphan")


def _temporary(report: Report, now: datetime.datetime) -> None:
    folder = Path(settings.PORTAL_TEMP_DIR)
    if not folder.is_dir():
        return
    for path in _old_files(folder, now, recursive=False):
        if path.name.startswith(TEMP_PREFIX):
            _delete(report, path, str(path), "temp")


def _old_files(folder: Path, now: datetime.datetime, *, recursive: bool) -> list[Path]:
    """Regular files (never symlinks) under `folder` last written more than MIN_AGE ago."""
    cutoff = (now - MIN_AGE).timestamp()
    found = []
    for root, dirs, names in os.walk(folder):
        if not recursive:
            dirs.clear()
        for name in names:
            path = Path(root, name)
            try:
                stat = path.lstat()
            except FileNotFoundError:
                continue
            if path.is_file() and not path.is_symlink() and stat.st_mtime < cutoff:
                found.append(path)
    return sorted(found)


def _delete(report: Report, path: Path, name: str, reason: str) -> None:
    size = _size(path)
    if not report.dry_run:
        try:
            path.unlink()
        except FileNotFoundError:
            return  # gone meanwhile (Django deleted its temporary file, or another clean-up ran)
    report.deleted.append(Deleted(name, size, reason))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
