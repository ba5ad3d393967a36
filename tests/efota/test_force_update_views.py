"""Force updates: the form (pasted serial numbers or a spreadsheet), the job page with its parts and devices, the
polled status section (the database only), the job following E-FOTA's status after sending, and the manual
"refresh status" (a job)."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from html import unescape

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from efota.models import EfotaCall, EfotaGroup, ForceUpdate, ForceUpdateDevice, queue_force_update
from efota.tasks import run_force_update
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, make_user
from tests.efota.helpers import CUSTOMER, LICENCE, known_licence, ready_account

URL = "/efota/force-updates/new/"
SERIALS = ["R5CMXWARTYK", "R58N123ABCD", "R5ZZ9876543"]


def started_job(account, *, processing: int, finished: bool = True, checked_at=None) -> Job:
    """The records a force update job leaves once its one part was sent (and, when finished, followed)."""
    job = Job.objects.create(kind="efota.force_update", account=account, total=len(SERIALS), title="Force update 3 devices",
                             params={"customer_id": CUSTOMER, "licence": LICENCE, "model": "SM-G991B", "sales_code": "BTU",
                                     "serials": SERIALS, "target": "Latest", "network_type": "WIFIONLY"})  # fmt: skip
    fu = ForceUpdate.objects.create(
        account=account, job=job, customer_id=CUSTOMER, licence=LICENCE, model="SM-G991B", sales_code="BTU",
        serials=SERIALS, force_update_id="FU-0001", processing=processing, downloaded=len(SERIALS) - processing,
        checked_at=checked_at, state="complete" if finished else "submitted", submitted_at=timezone.now(),
        next_poll_at=timezone.now(),
    )  # fmt: skip
    ForceUpdateDevice.objects.bulk_create(
        [
            ForceUpdateDevice(force_update=fu, serial=s, status="PROCESSING" if processing else "DOWNLOADED")
            for s in SERIALS
        ]
    )
    if finished:
        job.claim("test")
        job.add_progress(succeeded=len(SERIALS))
        job.finish()
    return job


class ForceUpdateFormTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()
        known_licence(self.acme)

    def data(self, **overrides):
        data = {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": LICENCE, "model": "sm-g991b",
                "sales_code": "btu", "target": "Latest", "network_type": "WIFIONLY", "serials": "\n".join(SERIALS)}  # fmt: skip
        data.update(overrides)
        return data

    def test_it_shows_the_form_to_operators(self):
        self.client.force_login(self.operator)
        html = self.client.get(URL).content.decode()
        assert 'name="serials"' in html and 'name="file"' in html and "never repeated automatically" in html

    def test_it_queues_a_force_update(self):
        self.client.force_login(self.operator)
        r = self.client.post(URL, self.data(serials="r5cmxwartyk, R58N123ABCD;R5ZZ9876543\nR5CMXWARTYK"))
        job = Job.objects.get(kind="efota.force_update")
        self.assertRedirects(r, f"/efota/jobs/{job.pk}/", fetch_redirect_response=False)
        assert job.params["serials"] == SERIALS and job.total == 3  # upper-cased, deduplicated
        assert (job.params["model"], job.params["sales_code"], job.func) == (
            "SM-G991B",
            "BTU",
            "efota.tasks.run_force_update",
        )
        assert AuditEvent.objects.filter(action="efota.force_update", actor=self.operator).exists()

    def test_it_reads_serial_numbers_from_a_spreadsheet(self):
        self.client.force_login(self.operator)
        csv = b"Serial Number,Model\nR5CMXWARTYK,SM-G991B\nR58N123ABCD,SM-G991B\nnot-a-serial,x\nR5CMXWARTYK,dup\n"
        r = self.client.post(URL, self.data(serials="", file=SimpleUploadedFile("fleet.csv", csv)), follow=True)
        job = Job.objects.get(kind="efota.force_update")
        assert job.params["serials"] == SERIALS[:2]
        self.assertContains(r, "2 rows left out (not a valid serial number, or a duplicate).")

    def test_invalid_input_is_refused_with_field_errors(self):
        self.client.force_login(self.operator)
        r = self.client.post(URL, self.data(serials="R5CMXWARTYK 12345", model="", licence=""))
        assert r.status_code == 200
        errors = r.context["form"].errors
        assert errors["serials"] == ["Not 11-character serial numbers: 12345."]
        assert errors["model"] == errors["licence"] == ["This field is required."]
        r = self.client.post(URL, self.data(serials="", file=SimpleUploadedFile("fleet.pdf", b"%PDF")))
        assert "is not a spreadsheet this portal reads" in r.context["form"].errors["file"][0]
        r = self.client.post(URL, self.data(customer_id="é" * 26, serials=""))
        assert "The customer ID is 52 bytes" in r.context["form"].errors["customer_id"][0]
        assert r.context["form"].errors["serials"] == ["Give at least one serial number."]
        assert not Job.objects.exists()

    def test_a_viewer_cannot_start_a_force_update(self):
        self.client.force_login(self.viewer)
        assert self.client.get(URL).status_code == 403
        assert self.client.post(URL, self.data()).status_code == 403
        assert not Job.objects.exists()

    def test_it_needs_a_login_and_only_get_and_post(self):
        r = self.client.post(URL, self.data())
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        self.client.force_login(self.operator)
        assert self.client.put(URL).status_code == 405
        assert not Job.objects.exists()


class JobPageTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()

    def test_it_shows_parts_and_devices_and_polls_while_the_job_follows_them(self):
        job = started_job(self.acme, processing=3, finished=False, checked_at=timezone.now())
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(f"/efota/jobs/{job.pk}/").content.decode())
        assert "<code>FU-0001</code>" in html and "<code>R58N123ABCD</code>" in html
        # E-FOTA's words in plain ones: its update ID, and a device's status.
        assert "<th>E-FOTA update ID</th>" in html and "forceUpdateId" not in html
        assert '<span class="badge badge-fu-processing">Processing</span>' in html and "PROCESSING" not in html
        assert ", over Wi-Fi only</dd>" in html and "WIFIONLY" not in html
        assert f'hx-get="/efota/jobs/{job.pk}/status/" hx-trigger="every 5s"' in html
        assert "Refresh status" not in html  # viewers see the automatic refresh only

    def test_the_status_poll_never_asks_e_fota(self):
        # Parts in progress, never checked or checked long ago: the poll still only reads what the job stored.
        job = started_job(self.acme, processing=3, finished=False)
        ForceUpdate.objects.create(
            account=self.acme,
            job=job,
            customer_id=CUSTOMER,
            licence=LICENCE,
            sequence=2,
            model="SM-G991B",
            sales_code="BTU",
            serials=["R5AAAAAAAAA"],
            force_update_id="FU-2",
            processing=1,
            checked_at=timezone.now() - dt.timedelta(hours=1),
        )
        before = list(ForceUpdate.objects.filter(job=job).values_list("checked_at", "processing"))
        self.client.force_login(self.viewer)
        for _ in range(3):
            r = self.client.get(f"/efota/jobs/{job.pk}/status/", headers={"HX-Request": "true"})
            html = r.content.decode()
            assert r.status_code == 200 and "<html" not in html and html.lstrip().startswith('<section id="fu-status"')
            assert 'hx-trigger="every 5s"' in html
        assert not EfotaCall.objects.exists()
        assert list(ForceUpdate.objects.filter(job=job).values_list("checked_at", "processing")) == before

    def test_polling_stops_once_every_device_is_done(self):
        job = started_job(self.acme, processing=0)
        self.client.force_login(self.viewer)
        html = self.client.get(f"/efota/jobs/{job.pk}/status/", headers={"HX-Request": "true"}).content.decode()
        assert "<html" not in html and "hx-trigger" not in html and "hx-get" not in html
        assert not EfotaCall.objects.exists()  # nothing in progress: nothing to ask
        assert 'hx-trigger="every 5s"' not in self.client.get(f"/efota/jobs/{job.pk}/").content.decode()

    def test_polling_continues_while_the_job_is_still_sending(self):
        job = started_job(self.acme, processing=0, finished=False)
        self.client.force_login(self.viewer)
        assert 'hx-trigger="every 5s"' in self.client.get(f"/efota/jobs/{job.pk}/status/").content.decode()

    def test_once_the_job_stopped_following_the_page_says_devices_are_still_processing(self):
        job = started_job(self.acme, processing=3)  # finished: the watch window ran out
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(f"/efota/jobs/{job.pk}/status/").content.decode())
        assert "hx-trigger" not in html  # nothing would change the figures: no polling
        assert "E-FOTA still counted 3 devices as processing when the portal stopped following" in html
        assert "“Refresh status” asks again" not in html
        self.client.force_login(self.operator)
        assert "“Refresh status” asks again" in unescape(
            self.client.get(f"/efota/jobs/{job.pk}/status/").content.decode()
        )

    def test_the_manual_refresh_is_for_operators_and_post_only(self):
        job = started_job(self.acme, processing=3)
        url = f"/efota/jobs/{job.pk}/refresh/"
        self.client.force_login(self.viewer)
        assert self.client.post(url).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.get(url).status_code == 405
        assert f'action="{url}"' in self.client.get(f"/efota/jobs/{job.pk}/").content.decode()
        assert not EfotaCall.objects.exists() and Job.objects.count() == 1

    def test_the_manual_refresh_queues_one_status_job_at_a_time(self):
        job = started_job(self.acme, processing=3)
        url = f"/efota/jobs/{job.pk}/refresh/"
        self.client.force_login(self.operator)
        r = self.client.post(url, follow=True)
        refresh = Job.objects.get(kind="efota.force_update_refresh")
        assert (refresh.status, refresh.params, refresh.total, refresh.created_by, refresh.func) == (
            Job.Status.QUEUED,
            {"job": job.pk},
            1,
            self.operator,
            "efota.tasks.refresh_force_update_status",
        )
        html = unescape(r.content.decode())
        assert f"Job #{refresh.pk} queued: asking E-FOTA for the status of 1 part" in html
        assert f"Job #{refresh.pk} is asking E-FOTA for the status now (queued)" in html
        assert 'hx-trigger="every 5s"' in html  # the section follows the refresh
        r = self.client.post(url, headers={"HX-Request": "true"})  # again, while it is pending: no second job
        assert r.content.decode().lstrip().startswith('<section id="fu-status"') and "every 5s" in r.content.decode()
        assert "already asking" in unescape(self.client.post(url, follow=True).content.decode())
        assert Job.objects.filter(kind="efota.force_update_refresh").count() == 1
        assert not EfotaCall.objects.exists()  # nothing asked while the request waited
        # Its page is the force update's.
        self.assertRedirects(
            self.client.get(f"/efota/jobs/{refresh.pk}/"), f"/efota/jobs/{job.pk}/", fetch_redirect_response=False
        )

    def test_there_is_nothing_to_refresh_before_a_part_started(self):
        job = started_job(self.acme, processing=0, finished=False)
        ForceUpdate.objects.filter(job=job).update(force_update_id="")
        self.client.force_login(self.operator)
        r = self.client.post(f"/efota/jobs/{job.pk}/refresh/", follow=True)
        assert "No part of this force update has started yet" in r.content.decode()
        assert not Job.objects.filter(kind="efota.force_update_refresh").exists()

    def test_a_refused_status_check_is_shown(self):
        job = started_job(self.acme, processing=3)
        ForceUpdate.objects.filter(job=job).update(
            knox_code="FUD_3020", knox_message="E-FOTA does not know this group or force update ID."
        )
        self.client.force_login(self.viewer)
        html = self.client.get(f"/efota/jobs/{job.pk}/status/").content.decode()
        assert "Status check failed: E-FOTA does not know" in html and "hx-trigger" not in html
        assert "still counted" not in html  # refused for good: not "still processing"

    def test_a_registration_job_shows_its_group(self):
        group = EfotaGroup.objects.create(account=self.acme, customer_id=CUSTOMER, group_id="FLEET-A", licence=LICENCE)
        job = Job.objects.create(kind="efota.register", account=self.acme, params={"group": group.pk}, title="Register")
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(f"/efota/jobs/{job.pk}/").content.decode())
        assert "<dt>Group</dt><dd><code>FLEET-A</code>" in html and "Being registered" in html
        assert 'id="fu-status"' not in html

    def test_another_service_s_job_or_a_lookup_goes_to_its_own_page(self):
        job = Job.objects.create(kind="portal.something", account=self.acme)
        self.client.force_login(self.viewer)
        self.assertRedirects(
            self.client.get(f"/efota/jobs/{job.pk}/"), f"/jobs/{job.pk}/", fetch_redirect_response=False
        )
        r = self.client.get(f"/efota/jobs/{job.pk}/status/")
        assert r.status_code == 302 and not EfotaCall.objects.exists()
        assert self.client.get("/efota/jobs/999999/").status_code == 404
        lookup = Job.objects.create(kind="efota.firmware", account=self.acme)
        self.assertRedirects(
            self.client.get(f"/efota/jobs/{lookup.pk}/"),
            f"/efota/firmware/?job={lookup.pk}",
            fetch_redirect_response=False,
        )

    def test_it_needs_a_login_and_is_get_only(self):
        job = started_job(self.acme, processing=0)
        r = self.client.get(f"/efota/jobs/{job.pk}/")
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        self.client.force_login(self.outsider)
        assert self.client.get(f"/efota/jobs/{job.pk}/").status_code == 403
        self.client.force_login(self.viewer)
        assert self.client.post(f"/efota/jobs/{job.pk}/").status_code == 405
        assert self.client.post(f"/efota/jobs/{job.pk}/status/").status_code == 405


def sandbox_calls(knox_sandbox, operation: str) -> int:
    state = requests.get(f"{knox_sandbox.url}/_sandbox/state?devices=0", timeout=10).json()
    return state["counters"]["by_path"].get(f"/b2bfota/v2/{operation}", 0)


@pytest.fixture
def quick_watch(monkeypatch):
    """The job follows E-FOTA's status quickly (the sandbox finishes a force update in 0.2 s)."""
    monkeypatch.setattr("efota.tasks.STATUS_FIRST_DELAY_SECONDS", 0.3)
    monkeypatch.setattr("efota.tasks.STATUS_MAX_INTERVAL_SECONDS", 0.5)
    monkeypatch.setattr("efota.tasks.STATUS_WATCH_SECONDS", 30)


def test_a_force_update_from_the_form_to_every_device_downloaded(
    client, efota, sandbox_account, knox_sandbox, quick_watch, django_capture_on_commit_callbacks
):
    operator = make_user("olivia", "operator")
    client.force_login(operator)
    registered, unknown = efota["device_serials"][:3], "R5ZZZZZZZZZ"
    data = {
        "account": sandbox_account.pk,
        "customer_id": efota["customer_id"],
        "licence": efota["license"],
        "model": "SM-G991B",
        "sales_code": "BTU",
        "target": "Latest",
        "network_type": "WIFIONLY",
        "serials": ",".join([*registered, unknown]),
    }
    with django_capture_on_commit_callbacks(execute=True):  # the job runs in-process (Q_CLUSTER sync in tests)
        r = client.post(URL, data)
    job = Job.objects.get(kind="efota.force_update")
    # The job sent the force update, then followed its status until no device was processing, then ended.
    assert r["Location"] == f"/efota/jobs/{job.pk}/" and job.status == Job.Status.SUCCEEDED
    assert sandbox_calls(knox_sandbox, "forceUpdate") == 1
    fu = ForceUpdate.objects.get(job=job)
    assert (fu.downloaded, fu.download_failed, fu.processing) == (3, 1, 0) and fu.checked_at is not None
    statuses = dict(ForceUpdateDevice.objects.filter(force_update=fu).values_list("serial", "status"))
    assert statuses == {**dict.fromkeys(registered, "DOWNLOADED"), unknown: "FAILED"}
    rounds = sandbox_calls(knox_sandbox, "forceUpdateSummary")
    assert rounds >= 1 and sandbox_calls(knox_sandbox, "forceUpdateDetail") == rounds
    calls = EfotaCall.objects.filter(operation="forceUpdateSummary", ok=True, job=job)
    assert calls.count() == rounds and {c.actor for c in calls} == {None}  # the job asked, not a person
    html = client.get(r["Location"]).content.decode()
    assert f"<code>{fu.force_update_id}</code>" in html and 'hx-trigger="every 5s"' not in html  # done: no polling

    # Polling the status section asks E-FOTA nothing.
    for _ in range(2):
        html = client.get(f"/efota/jobs/{job.pk}/status/", headers={"HX-Request": "true"}).content.decode()
        assert "<html" not in html and "hx-trigger" not in html
    assert sandbox_calls(knox_sandbox, "forceUpdateSummary") == rounds

    # A manual refresh is a job that asks once more, and is audited with who asked.
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(f"/efota/jobs/{job.pk}/refresh/", follow=True)
    refresh = Job.objects.get(kind="efota.force_update_refresh")
    assert f"Job #{refresh.pk} queued: asking E-FOTA for the status of 1 part" in unescape(r.content.decode())
    refresh.refresh_from_db()
    assert refresh.status == Job.Status.SUCCEEDED and refresh.result == {"parts": 1, "failures": []}
    assert sandbox_calls(knox_sandbox, "forceUpdateSummary") == rounds + 1
    assert EfotaCall.objects.filter(operation="forceUpdateSummary", job=job, actor=operator).count() == 1
    event = AuditEvent.objects.get(action="efota.force_update_refresh", target_id=str(job.pk))
    assert event.actor == operator and event.summary == {"parts": 1, "failed": 0, "codes": [], "job": refresh.pk}
    html = client.get(f"/efota/jobs/{job.pk}/status/", headers={"HX-Request": "true"}).content.decode()
    assert html.lstrip().startswith('<section id="fu-status"') and "hx-trigger" not in html


def test_the_job_stops_following_a_part_e_fota_refuses_for_good(efota, sandbox_account, knox_sandbox, quick_watch):
    job = started_job(sandbox_account, processing=3, finished=False)
    ForceUpdate.objects.filter(job=job).update(
        customer_id=efota["customer_id"], licence=efota["license"], force_update_id="FU-NOT-AT-E-FOTA"
    )
    run_force_update(job.pk)  # asks once: E-FOTA does not know it (FUD_3020), asking again is useless
    fu = ForceUpdate.objects.get(job=job)
    assert fu.knox_code == "FUD_3020" and "does not know" in fu.knox_message and not fu.is_in_progress
    call = EfotaCall.objects.get()
    assert (call.operation, call.ok, call.code, call.job) == ("forceUpdateSummary", False, "FUD_3020", job)


def test_the_job_gives_up_following_after_the_watch_window(tmp_path, settings, monkeypatch, sandbox_account):
    """E-FOTA keeps the devices processing longer than the window: the job asks with backoff, then ends; a worker
    that resumes it later does not start a new window."""
    from sandbox.testing import running_sandbox

    settings.KNOX_EFOTA_RATE_LIMIT = 0
    monkeypatch.setattr("efota.tasks.STATUS_FIRST_DELAY_SECONDS", 0.1)
    monkeypatch.setattr("efota.tasks.STATUS_MAX_INTERVAL_SECONDS", 0.4)
    monkeypatch.setattr("efota.tasks.STATUS_WATCH_SECONDS", 1)
    with running_sandbox(tmp_path / "slow-e-fota", process_delay=600) as slow:
        settings.KNOX_SANDBOX_URL = slow.url
        efota = slow.credentials["efota"]
        sandbox_account.efota_client_id = efota["client_id"]
        sandbox_account.efota_mdm_id = efota["mdm_id"]
        sandbox_account.set_secret("efota_client_secret", efota["client_secret"])
        sandbox_account.save()
        job = queue_force_update(
            sandbox_account,
            customer_id=efota["customer_id"],
            licence=efota["license"],
            model="SM-G991B",
            sales_code="BTU",
            serials=efota["device_serials"][:2],
            user=None,
        )
        started = time.monotonic()
        run_force_update(job.pk)
        took = time.monotonic() - started
        summaries = sandbox_calls(slow, "forceUpdateSummary")
        job.refresh_from_db()
        fu = ForceUpdate.objects.get(job=job)
        assert job.status == Job.Status.SUCCEEDED and fu.processing == 2 and fu.is_in_progress
        # Waits of 0.1, 0.2, 0.4, 0.4 … s within 1 s: a handful of rounds, not one per poll of a page.
        assert 2 <= summaries <= 5, summaries
        # A worker resuming the job after the window (say django-q2 killed the first one) asks nothing more.
        Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, finished_at=None)
        run_force_update(job.pk)
        assert sandbox_calls(slow, "forceUpdateSummary") == summaries
    print(f"watch window 1 s: {summaries} status rounds, the job took {took:.2f} s")


def test_waiting_between_status_rounds_renews_the_lease(settings, db, monkeypatch):
    from portal import engine

    settings.JOB_LEASE_SECONDS = 1  # renewed every third of it
    job = Job.objects.create(kind="efota.force_update")
    job.claim("w1")
    seen = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        seen.append(Job.objects.get(pk=job.pk).lease_until)

    monkeypatch.setattr(engine.time, "sleep", sleep)
    engine.nap(job, "w1", 1.0)
    renewed = [b for a, b in itertools.pairwise(seen) if b > a]
    assert len(seen) >= 3 and len(renewed) == len(seen) - 1
    job.refresh_from_db()
    assert job.lease_owner == "w1" and job.lease_until > timezone.now()
