"""Staging a spreadsheet without holding the database's write lock for long (issue 13, portal/uploads.py).

SQLite has one write lock for the whole database. Staging used to read the whole file inside one transaction, so a
slow file locked the web server and every worker out (tests/reliability/test_slow_spreadsheet.py shows it with
real processes). These tests pin the mechanism: the service's row checks run outside any transaction, rows are
written in short batches while the upload is PARSING and never shown then, a file refused part-way keeps none,
re-staging deletes in batches, and a parse overtaken by a newer one of the same upload stops.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from portal import uploads
from portal.models import Job, Upload, UploadRow
from portal.uploads import stage_upload
from tests.data.hostile.make_corpus import imei
from tests.kdp.helpers import make_upload, ready_account
from tests.portal.helpers import devices_csv, parsing_upload

ROWS = 23


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setattr(uploads, "STAGE_BATCH", 5)
    monkeypatch.setattr(uploads, "DELETE_BATCH", 4)


@pytest.fixture
def seen(monkeypatch):
    """Run a probe each time the service's row check is called (once per batch): what it saw is recorded."""
    calls: list[dict[str, object]] = []

    def check(upload: Upload, rows: list[uploads.StagedRow]) -> None:
        calls.append(
            {
                "in_transaction": connection.in_atomic_block,
                "rows_in_database": UploadRow.objects.filter(upload=upload).count(),
                "rows_shown": Upload.objects.get(pk=upload.pk).read_rows().count(),
                "status": Upload.objects.get(pk=upload.pk).status,
            }
        )

    monkeypatch.setitem(uploads.ROW_CHECKS, "kdp", f"{__name__}._probe")
    monkeypatch.setattr(f"{__name__}._probe", check, raising=False)
    return calls


def _probe(upload: Upload, rows: list[uploads.StagedRow]) -> None:  # replaced by the `seen` fixture
    raise AssertionError("the `seen` fixture installs the probe")


def is_row_insert(sql: str) -> bool:
    """A statement writing staged rows: an INSERT, or on PostgreSQL a COPY (portal.db.insert_rows)."""
    return any(statement in sql for statement in ('INSERT INTO "portal_uploadrow"', 'COPY "portal_uploadrow"'))


@pytest.mark.django_db(transaction=True)
def test_rows_are_checked_outside_a_transaction_and_written_in_batches_never_shown_while_parsing(seen):
    upload = parsing_upload(devices_csv(ROWS))
    stage_upload(upload)

    assert upload.status == Upload.Status.READY and upload.valid == upload.rows_total == ROWS
    assert len(seen) == 5  # 23 rows in batches of 5
    # The service's check reads the database with no transaction open (before: inside the one long transaction).
    assert [call["in_transaction"] for call in seen] == [False] * 5
    # Each earlier batch was committed on its own before the next was read, yet none was shown while PARSING.
    assert [call["rows_in_database"] for call in seen] == [0, 5, 10, 15, 20]
    assert {call["rows_shown"] for call in seen} == {0}
    assert {call["status"] for call in seen} == {Upload.Status.PARSING}
    assert upload.read_rows().count() == ROWS


@pytest.mark.django_db(transaction=True)
def test_a_file_refused_part_way_leaves_no_rows(seen, settings):
    settings.SPREADSHEET_MAX_ROWS = 12
    # Quotation marks: a cell may hold a line break, so the rows are only counted as they are read.
    content = b"IMEI,Notes\n" + b"".join(f'{imei(i)},"note {i}"\n'.encode() for i in range(ROWS))
    upload = parsing_upload(content)
    with CaptureQueriesContext(connection) as queries:
        stage_upload(upload)

    assert upload.status == Upload.Status.REFUSED and "more than 12 rows" in upload.error
    # Two batches of 5 were written (the 13th row refused the file), then deleted 4 at a time.
    assert [call["rows_in_database"] for call in seen] == [0, 5]
    assert sum(is_row_insert(q["sql"]) for q in queries.captured_queries) == 2
    assert sum(q["sql"].startswith("DELETE") for q in queries.captured_queries) == 3
    assert not UploadRow.objects.filter(upload=upload).exists()
    assert (upload.rows_total, upload.valid) == (0, 0)
    upload.refresh_from_db()
    assert upload.status == Upload.Status.REFUSED and upload.rows_total == 0


@pytest.mark.django_db(transaction=True)
def test_restaging_deletes_the_earlier_rows_in_short_transactions(seen):
    upload = parsing_upload(devices_csv(ROWS))
    stage_upload(upload)
    assert upload.rows_total == ROWS

    upload.device_column = "Serial Number"
    with CaptureQueriesContext(connection) as queries:
        stage_upload(upload)
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 6  # 23 rows, 4 per transaction
    assert upload.status == Upload.Status.READY and upload.device_column == "Serial Number"
    assert set(UploadRow.objects.filter(upload=upload).values_list("kind", flat=True)) == {"serial"}
    assert UploadRow.objects.filter(upload=upload).count() == ROWS


@pytest.mark.django_db(transaction=True)
def test_a_parse_overtaken_by_a_newer_one_stops_and_leaves_the_upload_to_it(seen, monkeypatch):
    upload = parsing_upload(devices_csv(ROWS))
    old_job = upload.parse_job

    def restage_meanwhile(checked: Upload, rows: list[uploads.StagedRow]) -> None:
        if len(seen_here) == 1:  # someone chooses another column while the second batch is read
            newer = Job.objects.create(kind="kdp.parse", account=checked.account, params={"upload": checked.pk})
            Upload.objects.filter(pk=checked.pk).update(
                parse_job=newer, status=Upload.Status.PARSING, device_column="Serial Number"
            )
        seen_here.append(1)

    seen_here: list[int] = []
    monkeypatch.setattr(f"{__name__}._probe", restage_meanwhile, raising=False)
    result = stage_upload(upload)

    # The old parse wrote its first batch only, then stopped: it neither finished the rows nor set a status.
    assert result.parse_job_id != old_job.pk and result.status == Upload.Status.PARSING
    assert UploadRow.objects.filter(upload=upload).count() == 5
    assert Upload.objects.get(pk=upload.pk).read_rows().count() == 0

    # The newer parse replaces them with its own.
    seen_here.clear()
    monkeypatch.setattr(f"{__name__}._probe", lambda checked, rows: None, raising=False)
    newer = stage_upload(Upload.objects.get(pk=upload.pk))
    assert newer.status == Upload.Status.READY and newer.rows_total == ROWS
    assert set(UploadRow.objects.filter(upload=upload).values_list("kind", flat=True)) == {"serial"}


def test_the_web_upload_path_still_stages_every_row(db):
    upload = make_upload(ready_account(), devices_csv(ROWS), "devices.csv")
    assert upload.status == Upload.Status.READY and upload.rows.count() == upload.valid == ROWS


@pytest.mark.django_db(transaction=True)
def test_reading_a_finished_upload_again_hides_its_rows_until_done(seen):
    # A management command or a second call may stage an upload that is READY: it goes back to PARSING first.
    upload = parsing_upload(devices_csv(ROWS))
    stage_upload(upload)
    assert upload.status == Upload.Status.READY
    seen.clear()
    stage_upload(upload)
    assert {call["status"] for call in seen} == {Upload.Status.PARSING}
    assert {call["rows_shown"] for call in seen} == {0}
    assert upload.status == Upload.Status.READY and upload.read_rows().count() == ROWS
