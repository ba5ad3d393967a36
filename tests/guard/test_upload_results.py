"""Knox Guard's per-device results of an upload (GET devices/uploads/{uploadId}): read by a follow-up job once Knox
Guard's status of the upload allows, stored per part (GuardUploadDevice), shown and paged on the upload job's page,
read again with "Refresh results". The reads run against the real sandbox; the page tests need no Knox."""

from __future__ import annotations

from html import unescape

import pytest

from guard import tasks
from guard.client import GuardClient, parse_upload_device, upload_results
from guard.models import (
    UPLOAD_RESULTS,
    GuardUpload,
    GuardUploadDevice,
    follow_upload_part,
    pending_upload_results,
    queue_upload,
    queue_upload_results,
)
from guard.tasks import read_upload_results, run_upload
from guard.views import PAGE_SIZE
from portal.engine import Timings
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, fresh_imeis, make_user
from tests.guard.helpers import calls, device_in, guard_account, guard_upload
from tests.portal.helpers import HTMX

# --- the client: parsing and paging ---------------------------------------------------------------------------


def test_a_device_entry_is_read_in_the_sandbox_s_shape_and_in_knox_s_error_shape():
    ok = parse_upload_device({"deviceUid": "359221145350335", "approveId": "LOAN-1", "result": "SUCCESS"})
    assert (ok.device_uid, ok.approve_id, ok.outcome, ok.result, ok.code, ok.reason) == (
        "359221145350335", "LOAN-1", "succeeded", "SUCCESS", "", "",
    )  # fmt: skip
    bad = parse_upload_device({"deviceUid": "359221145350343", "result": "FAIL", "reason": "device already exists"})
    assert (bad.outcome, bad.code, bad.reason) == ("failed", "", "device already exists")
    # The shape of every other Knox Guard per-device result: an `error` object, its code a string or a number.
    coded = parse_upload_device(
        {"imei": "359221145350350", "result": "FAIL",
         "error": {"code": 4001806, "message": "LICENSE_DEVICE_MAPPING_FOUND", "reason": "mapped"}}
    )  # fmt: skip
    assert (coded.device_uid, coded.outcome, coded.code, coded.message, coded.reason) == (
        "359221145350350", "failed", "4001806", "LICENSE_DEVICE_MAPPING_FOUND", "mapped",
    )  # fmt: skip
    odd = parse_upload_device({"serial": "R58N12345AB", "result": "Queued"})
    assert (odd.device_uid, odd.outcome, odd.result) == ("R58N12345AB", "unknown", "Queued")


def test_every_page_is_read_once_knox_guard_has_finished(guard_synced, knox_sandbox):
    """Five devices in pages of two: three pages, the last one short."""
    client = GuardClient(guard_synced)
    imeis = fresh_imeis(5, "35860000")
    answer = client.upload([(u, "") for u in imeis], {}, transaction_id="pages")
    knox_sandbox.app.state["guard"]["uploads"][answer["uploadID"]]["dueAt"] = 0  # Knox Guard has processed it
    before = calls(knox_sandbox, f"devices/uploads/{answer['uploadID']}")
    results = upload_results(client, answer["uploadID"], page_size=2)
    assert calls(knox_sandbox, f"devices/uploads/{answer['uploadID']}") - before == 3
    assert results.status == "Complete" and not results.in_progress
    assert [d.device_uid for d in results.devices] == imeis
    assert {d.outcome for d in results.devices} == {"succeeded"}


def test_while_knox_guard_is_processing_only_the_first_page_is_read(guard_synced, knox_sandbox):
    knox_sandbox.app.config.process_delay = 3600
    client = GuardClient(guard_synced)
    answer = client.upload([(u, "") for u in fresh_imeis(5, "35861000")], {}, transaction_id="inprogress")
    before = calls(knox_sandbox, f"devices/uploads/{answer['uploadID']}")
    results = upload_results(client, answer["uploadID"], page_size=2)
    assert results.in_progress and results.status == "Progress"
    assert calls(knox_sandbox, f"devices/uploads/{answer['uploadID']}") - before == 1


# --- end to end: upload, read, store, show ----------------------------------------------------------------------


def uploaded(account, imeis: list[str], capture) -> Job:
    """An upload job run to its end, with the on-commit hooks run (a worker would): its results read follows."""
    job = queue_upload(guard_upload(account, imeis), {}, user=None)
    with capture(execute=True):
        run_upload(job.pk)
    job.refresh_from_db()
    return job


def test_an_upload_with_invalid_devices_has_its_per_device_results_stored_and_shown(
    guard_synced, knox_sandbox, django_capture_on_commit_callbacks, client, staff
):
    fresh = fresh_imeis(3, "35862000")
    existing = device_in(guard_synced, "Locked")  # Knox Guard has it already: invalid
    job = uploaded(guard_synced, [fresh[0], existing.device_uid, *fresh[1:]], django_capture_on_commit_callbacks)
    assert (job.status, job.succeeded, job.failed) == (Job.Status.PARTIAL, 3, 1)

    read = Job.objects.get(kind=UPLOAD_RESULTS)
    assert (read.status, read.params, read.total, read.succeeded, read.failed) == (
        Job.Status.SUCCEEDED, {"job": job.pk}, 1, 1, 0,
    )  # fmt: skip
    part = GuardUpload.objects.get(job=job)
    assert part.knox_status == "Complete" and part.synced_at is not None
    rows = {d.device_uid: d for d in GuardUploadDevice.objects.filter(job=job)}
    assert set(rows) == {*fresh, existing.device_uid}
    refused = rows[existing.device_uid]
    assert (refused.outcome, refused.result, refused.reason, refused.row_number) == (
        "failed", "FAIL", "device already exists", 3,
    )  # fmt: skip
    assert refused.explanation() == "device already exists"  # no code: Knox's own words
    assert [rows[u].row_number for u in fresh] == [2, 4, 5]
    assert {rows[u].outcome for u in fresh} == {"succeeded"}
    assert AuditEvent.objects.filter(action="guard.upload_results", target_id=str(job.pk)).exists()

    client.force_login(staff)
    html = unescape(client.get(f"/guard/jobs/{job.pk}/").content.decode())
    assert part.upload_id in html and "(Complete)" in html and '3 succeeded</span>, <span class="bad">1 failed' in html
    assert "device already exists" in html and all(u in html for u in fresh)
    failed_only = unescape(client.get(f"/guard/jobs/{job.pk}/?outcome=failed").content.decode())
    table = failed_only.split("Per-device results from Knox Guard")[1]
    assert existing.device_uid in table and not any(u in table for u in fresh)
    assert read.get_absolute_url() == f"/guard/jobs/{read.pk}/"
    assert client.get(read.get_absolute_url())["Location"] == f"/guard/jobs/{job.pk}/"


def test_a_second_read_updates_the_rows_in_place(guard_synced, knox_sandbox, django_capture_on_commit_callbacks):
    job = uploaded(guard_synced, fresh_imeis(2, "35863000"), django_capture_on_commit_callbacks)
    first = list(GuardUploadDevice.objects.filter(job=job).order_by("id").values_list("id", "device_uid"))
    GuardUploadDevice.objects.filter(job=job).update(outcome="unknown", reason="stale")
    read, created = queue_upload_results(job, user=None)
    assert created
    read_upload_results(read.pk)
    again = GuardUploadDevice.objects.filter(job=job).order_by("id")
    assert list(again.values_list("id", "device_uid")) == first  # same rows: the page's ?after= stays valid
    assert set(again.values_list("outcome", "reason")) == {("succeeded", "")}


def test_a_read_waits_while_knox_guard_is_still_processing(
    guard_synced, knox_sandbox, django_capture_on_commit_callbacks, monkeypatch
):
    """Knox Guard says Progress at first; it finishes by the time the read has decided to ask again (no clock)."""
    knox_sandbox.app.config.process_delay = 3600
    later = tasks.ResultsReader.later
    waits: list[str] = []

    def knox_finishes(reader, part, why):
        waits.append(why)
        knox_sandbox.app.state["guard"]["uploads"][part.upload_id]["dueAt"] = 0
        return later(reader, part, why)

    monkeypatch.setattr(tasks.ResultsReader, "later", knox_finishes)
    job = uploaded(guard_synced, fresh_imeis(2, "35864000"), django_capture_on_commit_callbacks)
    part = GuardUpload.objects.get(job=job)
    assert waits == ["Knox Guard was still processing the upload"]
    assert calls(knox_sandbox, f"devices/uploads/{part.upload_id}") == 2
    assert (
        part.knox_status == "Complete" and GuardUploadDevice.objects.filter(job=job, outcome="succeeded").count() == 2
    )
    assert Job.objects.get(kind=UPLOAD_RESULTS).status == Job.Status.SUCCEEDED


def test_a_part_still_processing_past_the_patience_is_reported_not_guessed(
    guard_synced, knox_sandbox, django_capture_on_commit_callbacks, monkeypatch, client, staff
):
    knox_sandbox.app.config.process_delay = 3600
    monkeypatch.setattr(tasks, "RESULTS_TIMINGS", Timings(0.5, 1.5, 15.0, 0))
    job = uploaded(guard_synced, fresh_imeis(2, "35865000"), django_capture_on_commit_callbacks)
    read = Job.objects.get(kind=UPLOAD_RESULTS)
    assert (read.status, read.failed) == (Job.Status.FAILED, 1)
    assert "part 1: Knox Guard was still processing the upload after 0 minutes" in read.error_summary
    assert read.result["failures"][0]["part"] == 1
    assert not GuardUploadDevice.objects.filter(job=job).exists()
    part = GuardUpload.objects.get(job=job)
    assert part.synced_at is None and part.knox_status == "Progress"
    client.force_login(staff)
    html = unescape(client.get(f"/guard/jobs/{job.pk}/").content.decode())
    assert "did not get every part" in html and "not read yet" in html and "Refresh results" in html


def test_a_part_knox_guard_does_not_know_fails_alone(guard_synced, knox_sandbox, monkeypatch):
    monkeypatch.setattr("guard.tasks.KG_UPLOAD_MAX_DEVICES", 2)
    job = queue_upload(guard_upload(guard_synced, fresh_imeis(4, "35866000")), {}, user=None)
    run_upload(job.pk)  # on-commit hooks not run: the read each part asked for is queued, not run
    first, second = GuardUpload.objects.filter(job=job).order_by("sequence")
    GuardUpload.objects.filter(pk=first.pk).update(upload_id="no-such-upload")
    knox_sandbox.app.state["guard"]["uploads"][second.upload_id]["dueAt"] = 0
    read, created = queue_upload_results(job, user=None)
    assert not created and Job.objects.filter(kind=UPLOAD_RESULTS).count() == 1  # both parts joined one read
    read_upload_results(read.pk)
    read.refresh_from_db()
    assert (read.status, read.total, read.succeeded, read.failed) == (Job.Status.PARTIAL, 2, 1, 1)
    assert read.result["failures"][0]["code"] == "4000000" and "part 1:" in read.error_summary
    assert GuardUploadDevice.objects.filter(upload=second).count() == 2
    assert not GuardUploadDevice.objects.filter(upload=first).exists()


def test_a_part_applied_while_a_read_is_queued_joins_it(guard_synced):
    upload_job = Job.objects.create(kind="guard.upload", account=guard_synced)
    queued = follow_upload_part(upload_job)
    assert follow_upload_part(upload_job) == queued  # still queued: it will read every applied part
    Job.objects.filter(pk=queued.pk).update(status=Job.Status.RUNNING)  # a worker took it: it may have its list
    second = follow_upload_part(upload_job)
    assert second != queued and Job.objects.filter(kind=UPLOAD_RESULTS).count() == 2
    assert second.func == "guard.tasks.read_upload_results" and second.params == {"job": upload_job.pk}


# --- the page: per part, per device, paging, filtering; the Refresh results button ------------------------------


class UploadResultsPageTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.job = Job.objects.create(kind="guard.upload", account=self.account, status=Job.Status.SUCCEEDED, total=62)
        self.part = GuardUpload.objects.create(
            account=self.account, job=self.job, upload_id="up-1", knox_status="Complete", device_count=62,
            valid=60, invalid=2, state=GuardUpload.State.COMPLETE, first_row=2, last_row=63,
        )  # fmt: skip
        rows = [
            GuardUploadDevice(
                upload=self.part, job=self.job, device_uid=f"3592211453{n:05d}", row_number=n + 2,
                outcome="succeeded", result="SUCCESS",
            )
            for n in range(60)
        ]  # fmt: skip
        rows.append(GuardUploadDevice(upload=self.part, job=self.job, device_uid="359221145399990", row_number=62,
                                      outcome="failed", result="FAIL", code="4001806", reason="mapped"))  # fmt: skip
        rows.append(GuardUploadDevice(upload=self.part, job=self.job, device_uid="359221145399991", row_number=63,
                                      outcome="failed", result="FAIL", reason="device already exists"))  # fmt: skip
        GuardUploadDevice.objects.bulk_create(rows)
        GuardUpload.objects.filter(pk=self.part.pk).update(synced_at=self.job.created_at)
        self.url = f"/guard/jobs/{self.job.pk}/"

    def test_it_shows_each_part_and_pages_the_devices(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url)
        html = unescape(r.content.decode())
        assert "up-1" in html and "(Complete)" in html and '60 succeeded</span>, <span class="bad">2 failed' in html
        assert len(r.context["device_results"]) == PAGE_SIZE
        after = r.context["results_next_after"]
        assert f"?outcome=&after={after}" in html
        assert "Refresh results" not in html  # a viewer may not ask Knox
        second = self.client.get(f"{self.url}?outcome=&after={after}", headers={**HTMX, "HX-Target": "upload-results"})
        page = second.content.decode()
        assert page.lstrip().startswith('<section id="upload-results"') and "<html" not in page
        assert page.count("<code>3592211453") == 12 and "Next devices" not in page
        assert "359221145399991" in page and "359221145300049" not in page and "359221145300050" in page

    def test_it_filters_by_outcome_and_explains_knox_s_codes(self):
        self.client.force_login(self.viewer)
        r = self.client.get(f"{self.url}?outcome=failed", headers={**HTMX, "HX-Target": "upload-results"})
        html = unescape(r.content.decode())
        assert html.count("<code>3592211453") == 2 and "359221145399990" in html and "359221145399991" in html
        assert (
            'The device is already registered with a licence. <span class="muted">(mapped)</span>' in html
        )  # Knox's code in plain words
        assert "device already exists" in html  # no code: Knox's own reason
        bogus = self.client.get(f"{self.url}?outcome=pending")  # an action job's outcome, not an upload's
        assert len(bogus.context["device_results"]) == PAGE_SIZE  # ignored: all of them

    def test_a_polled_page_keeps_polling_while_a_read_is_pending(self):
        self.client.force_login(self.viewer)
        assert 'hx-trigger="jobFinished from:body"' in self.client.get(self.url).content.decode()
        read, _ = queue_upload_results(self.job, user=self.operator)
        html = unescape(self.client.get(self.url).content.decode())
        assert 'hx-trigger="every 3s, jobFinished from:body"' in html
        assert f"Job #{read.pk} is reading Knox Guard's per-device results now" in html

    def test_refresh_is_post_only_and_needs_the_queue_permission(self):
        refresh = f"/guard/jobs/{self.job.pk}/results/refresh/"
        self.client.force_login(self.viewer)
        assert self.client.post(refresh).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.get(refresh).status_code == 405
        assert not Job.objects.filter(kind=UPLOAD_RESULTS).exists()

    def test_refresh_queues_one_read_and_the_section_follows_it(self):
        refresh = f"/guard/jobs/{self.job.pk}/results/refresh/"
        self.client.force_login(self.operator)
        assert "Refresh results" in self.client.get(self.url).content.decode()
        r = self.client.post(refresh, headers=HTMX)
        read = Job.objects.get(kind=UPLOAD_RESULTS)
        assert (read.params, read.created_by, read.account, read.total) == (
            {"job": self.job.pk}, self.operator, self.account, 1,
        )  # fmt: skip
        assert read.func == "guard.tasks.read_upload_results" and read.status == Job.Status.QUEUED
        html = unescape(r.content.decode())
        assert html.lstrip().startswith('<section id="upload-results"') and f"Job #{read.pk} is reading" in html
        r = self.client.post(refresh, follow=True)  # without JavaScript, a second click: the same read
        assert f"Job #{read.pk} is already reading Knox Guard's results" in unescape(r.content.decode())
        assert Job.objects.filter(kind=UPLOAD_RESULTS).count() == 1 and pending_upload_results(self.job) == read
        event = AuditEvent.objects.get(action=UPLOAD_RESULTS)
        assert event.actor == self.operator and event.summary == {"parts": 1, "job": read.pk}

    def test_refresh_says_so_when_no_part_has_an_upload_id(self):
        GuardUpload.objects.filter(pk=self.part.pk).update(upload_id="")
        self.client.force_login(self.operator)
        r = self.client.post(f"/guard/jobs/{self.job.pk}/results/refresh/", follow=True)
        assert "no results to read" in unescape(r.content.decode())
        assert not Job.objects.filter(kind=UPLOAD_RESULTS).exists()

    def test_refresh_of_another_kind_of_job_is_refused(self):
        other = Job.objects.create(kind="guard.lock", account=self.account, params={"action": "lock"})
        self.client.force_login(self.operator)
        assert self.client.post(f"/guard/jobs/{other.pk}/results/refresh/").status_code == 400
        assert "Per-device results from Knox Guard" not in self.client.get(f"/guard/jobs/{other.pk}/").content.decode()


@pytest.fixture
def staff(db):
    return make_user("alice", "admin", is_staff=True)
