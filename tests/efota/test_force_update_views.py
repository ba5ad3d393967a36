"""Force updates: the form (pasted serial numbers or a spreadsheet), the job page with its parts and devices, the
polled status section (throttled per part) and the manual "refresh status"."""

from __future__ import annotations

import datetime as dt
import time
from html import unescape

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from efota.models import EfotaCall, EfotaGroup, ForceUpdate, ForceUpdateDevice
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, make_user
from tests.efota.test_index_views import CUSTOMER, LICENCE, efota_world, ready_account

URL = "/efota/force-updates/new/"
SERIALS = ["R5CMXWARTYK", "R58N123ABCD", "R5ZZ9876543"]


@pytest.fixture
def efota(sandbox_account, knox_sandbox, settings):
    return efota_world(knox_sandbox, settings)


def started_job(account, *, processing: int, finished: bool = True, checked_at=None) -> Job:
    """The records a force update job leaves once its one part was sent."""
    job = Job.objects.create(kind="efota.force_update", account=account, total=len(SERIALS), title="Force update 3 devices",
                             params={"customer_id": CUSTOMER, "licence": LICENCE, "model": "SM-G991B", "sales_code": "BTU",
                                     "serials": SERIALS, "target": "Latest", "network_type": "WIFIONLY"})  # fmt: skip
    fu = ForceUpdate.objects.create(
        account=account, job=job, customer_id=CUSTOMER, licence=LICENCE, model="SM-G991B", sales_code="BTU",
        serials=SERIALS, force_update_id="FU-0001", processing=processing, downloaded=len(SERIALS) - processing,
        checked_at=checked_at,
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

    def test_it_shows_parts_and_devices_and_polls_while_devices_are_processing(self):
        job = started_job(self.acme, processing=3, checked_at=timezone.now())
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(f"/efota/jobs/{job.pk}/").content.decode())
        assert "<code>FU-0001</code>" in html and "<code>R58N123ABCD</code>" in html and "PROCESSING" in html
        assert f'hx-get="/efota/jobs/{job.pk}/status/" hx-trigger="every 5s"' in html
        assert "Refresh status" not in html  # viewers see the automatic refresh only

    def test_the_status_poll_asks_e_fota_at_most_once_per_5_seconds_per_part(self):
        job = started_job(self.acme, processing=3, checked_at=timezone.now())  # just checked
        self.client.force_login(self.viewer)
        r = self.client.get(f"/efota/jobs/{job.pk}/status/", headers={"HX-Request": "true"})
        html = r.content.decode()
        assert r.status_code == 200 and "<html" not in html and html.lstrip().startswith('<section id="fu-status"')
        assert 'hx-trigger="every 5s"' in html
        assert not EfotaCall.objects.exists()  # nothing asked: the last check is under 5 s old

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

    def test_the_manual_refresh_is_for_operators_and_post_only(self):
        job = started_job(self.acme, processing=3)
        url = f"/efota/jobs/{job.pk}/refresh/"
        self.client.force_login(self.viewer)
        assert self.client.post(url).status_code == 403
        self.client.force_login(self.operator)
        assert self.client.get(url).status_code == 405
        assert f'action="{url}"' in self.client.get(f"/efota/jobs/{job.pk}/").content.decode()
        assert not EfotaCall.objects.exists()

    def test_a_refused_status_check_is_shown_and_stops_the_polling(self):
        job = started_job(self.acme, processing=3)
        ForceUpdate.objects.filter(job=job).update(
            last_code="FUD_3020", last_error="E-FOTA does not know this group or force update ID."
        )
        self.client.force_login(self.viewer)
        html = self.client.get(f"/efota/jobs/{job.pk}/status/").content.decode()
        assert "Status check failed: E-FOTA does not know" in html and "hx-trigger" not in html

    def test_a_registration_job_shows_its_group(self):
        group = EfotaGroup.objects.create(account=self.acme, customer_id=CUSTOMER, group_id="FLEET-A", licence=LICENCE)
        job = Job.objects.create(kind="efota.register", account=self.acme, params={"group": group.pk}, title="Register")
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(f"/efota/jobs/{job.pk}/").content.decode())
        assert "<dt>Group</dt><dd><code>FLEET-A</code>" in html and "Being registered" in html
        assert 'id="fu-status"' not in html

    def test_another_service_s_job_goes_to_its_own_page(self):
        job = Job.objects.create(kind="portal.something", account=self.acme)
        self.client.force_login(self.viewer)
        self.assertRedirects(
            self.client.get(f"/efota/jobs/{job.pk}/"), f"/jobs/{job.pk}/", fetch_redirect_response=False
        )
        r = self.client.get(f"/efota/jobs/{job.pk}/status/")
        assert r.status_code == 302 and not EfotaCall.objects.exists()
        assert self.client.get("/efota/jobs/999999/").status_code == 404

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


def test_a_force_update_from_the_form_to_every_device_downloaded(client, efota, sandbox_account, knox_sandbox,
                                                                 django_capture_on_commit_callbacks):  # fmt: skip
    client.force_login(make_user("olivia", "operator"))
    registered, unknown = efota["device_serials"][:3], "R5ZZZZZZZZZ"
    data = {"account": sandbox_account.pk, "customer_id": efota["customer_id"], "licence": efota["license"],
            "model": "SM-G991B", "sales_code": "BTU", "target": "Latest", "network_type": "WIFIONLY",
            "serials": ",".join([*registered, unknown])}  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):  # the job runs in-process (Q_CLUSTER sync in tests)
        r = client.post(URL, data)
    job = Job.objects.get(kind="efota.force_update")
    assert r["Location"] == f"/efota/jobs/{job.pk}/" and job.status == Job.Status.SUCCEEDED
    fu = ForceUpdate.objects.get(job=job)
    html = client.get(r["Location"]).content.decode()
    assert f"<code>{fu.force_update_id}</code>" in html and 'hx-trigger="every 5s"' in html
    assert sandbox_calls(knox_sandbox, "forceUpdate") == 1

    # The first poll asks E-FOTA; a second one right after does not.
    client.get(f"/efota/jobs/{job.pk}/status/", headers={"HX-Request": "true"})
    client.get(f"/efota/jobs/{job.pk}/status/", headers={"HX-Request": "true"})
    assert sandbox_calls(knox_sandbox, "forceUpdateSummary") == 1
    fu.refresh_from_db()
    assert fu.failed == 1  # the unregistered device fails at once

    time.sleep(0.3)  # the sandbox's process delay
    ForceUpdate.objects.filter(pk=fu.pk).update(checked_at=timezone.now() - dt.timedelta(seconds=6))
    html = unescape(client.get(f"/efota/jobs/{job.pk}/status/", headers={"HX-Request": "true"}).content.decode())
    assert "<html" not in html and "hx-trigger" not in html  # every device done: polling stops
    fu.refresh_from_db()
    assert (fu.downloaded, fu.failed, fu.processing) == (3, 1, 0)
    statuses = dict(ForceUpdateDevice.objects.filter(force_update=fu).values_list("serial", "status"))
    assert statuses == {**dict.fromkeys(registered, "DOWNLOADED"), unknown: "FAILED"}
    assert EfotaCall.objects.filter(operation="forceUpdateSummary", ok=True).count() == 2

    # A manual refresh asks again at once, and is audited.
    r = client.post(f"/efota/jobs/{job.pk}/refresh/", follow=True)
    assert "Status of 1 part refreshed from E-FOTA." in r.content.decode()
    assert sandbox_calls(knox_sandbox, "forceUpdateSummary") == 3
    assert AuditEvent.objects.filter(action="efota.force_update_refresh", target_id=str(job.pk)).exists()
    r = client.post(f"/efota/jobs/{job.pk}/refresh/", headers={"HX-Request": "true"})
    assert r.content.decode().lstrip().startswith('<section id="fu-status"')
