"""`manage.py cleanup_uploads [--dry-run]`: delete spreadsheet files past UPLOAD_RETENTION_DAYS, media files no
upload points at and the portal's stale temporary files now, instead of waiting for the hourly schedule.

Prints one line per file and a total; --dry-run prints the same list and deletes nothing. What is deleted, and
why, is described in portal/cleanup.py.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from portal.cleanup import REASONS, clean_up


class Command(BaseCommand):
    help = "Delete uploaded spreadsheets past their retention, orphaned uploads and stale temporary files."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List what would be deleted; delete nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = clean_up(dry_run=options["dry_run"])
        verb = "Would delete" if report.dry_run else "Deleted"
        for item in report.deleted:
            upload = f" (upload #{item.upload})" if item.upload is not None else ""
            self.stdout.write(f"{verb} {item.path}{upload}: {item.size:,} bytes, {REASONS[item.reason]}")
        days = report.retention_days
        kept = f"spreadsheets are kept {days} day{'s' if days != 1 else ''} after their last use"
        if not report.deleted:
            self.stdout.write(f"Nothing to delete ({kept}).")
            return
        total = f"{len(report.deleted):,} file{'s' if len(report.deleted) != 1 else ''}, {report.size():,} bytes"
        self.stdout.write(f"{verb} {total} ({kept}).")
