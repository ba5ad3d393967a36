"""Abnormal devices: which of the given devices E-FOTA cannot update, and why; asked by a worker (a lookup job,
100 devices per call, its progress counting them) while the page follows it."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile

from efota.models import EfotaCall
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, make_user
from tests.efota.helpers import CUSTOMER, LICENCE, known_licence, ready_account
from tests.portal.helpers import HTMX, ask, assert_following

URL = "/efota/abnormal/"


class AbnormalTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()
        known_licence(self.acme)

    def test_it_shows_the_form(self):
        self.client.force_login(self.viewer)
        html = self.client.get(URL).content.decode()
        assert 'name="serials"' in html and 'enctype="multipart/form-data"' in html

    def test_bad_serial_numbers_are_named_and_nothing_is_sent(self):
        self.client.force_login(self.viewer)
        data = {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": LICENCE, "serials": "R5CMXWARTYK, 12345"}
        r = self.client.post(URL, data, headers={"HX-Request": "true"})
        assert r.status_code == 200 and "<html" not in r.content.decode()
        assert r.context["form"].errors["serials"] == ["Not 11-character serial numbers: 12345."]
        r = self.client.post(URL, {**data, "serials": ""})
        assert r.context["form"].errors["serials"] == ["Give at least one serial number."]
        assert not EfotaCall.objects.exists() and not Job.objects.exists()

    def test_a_check_is_queued_and_counts_its_devices(self):
        self.client.force_login(self.viewer)
        serials = [f"R5{n:09d}" for n in range(250)]
        data = {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": LICENCE, "serials": "\n".join(serials)}
        r = self.client.post(URL, data, headers=HTMX)
        job = Job.objects.get()
        html = r.content.decode()
        assert html.lstrip().startswith('<div id="abnormal-result">')
        assert_following(html, job)
        assert "<dt>Devices</dt><dd>250</dd>" in html  # the progress counts devices (3 calls of at most 100)
        assert (job.kind, job.total, job.params["serials"]) == ("efota.abnormal", 250, serials)
        r = self.client.post(URL, data)  # without JavaScript: the page opened on the job, the list filled in
        second = Job.objects.latest("id")
        self.assertRedirects(r, f"{URL}?job={second.pk}", fetch_redirect_response=False)
        html = self.client.get(r["Location"]).content.decode()
        assert f"{serials[0]}\n{serials[1]}" in html and 'class="badge badge-queued">Queued<' in html
        assert not EfotaCall.objects.exists()

    def test_more_than_1000_devices_are_refused(self):
        self.client.force_login(self.viewer)
        serials = "\n".join(f"R5{n:09d}" for n in range(1001))
        r = self.client.post(
            URL, {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": LICENCE, "serials": serials}
        )
        assert "1001 devices: at most 1,000 at once" in r.context["form"].errors["serials"][0]

    def test_it_accepts_only_get_and_post(self):
        self.client.force_login(self.viewer)
        assert self.client.patch(URL).status_code == 405

    def test_it_needs_a_login_and_a_role(self):
        self.assertRedirects(self.client.get(URL), f"/login/?next={URL}", fetch_redirect_response=False)
        self.client.force_login(self.outsider)
        assert self.client.post(URL, {"account": self.acme.pk}).status_code == 403
        assert not Job.objects.exists()


def test_it_reports_abnormal_devices_by_category(client, efota, sandbox_account, django_capture_on_commit_callbacks):
    viewer = make_user("victor", "viewer")
    client.force_login(viewer)
    serials = efota["device_serials"]
    unknown = "R5ZZZZZZZZZ"
    # Pasted (comma separated) and from a spreadsheet with an IMEI column first: the serial column is the one read.
    csv = "IMEI,Serial Number\n" + "".join(f"35922114535033{n % 10},{s}\n" for n, s in enumerate(serials[5:]))
    data = {
        "account": sandbox_account.pk,
        "customer_id": efota["customer_id"],
        "licence": efota["license"],
        "serials": ", ".join([*serials[:5], unknown.lower()]),
        "file": SimpleUploadedFile("fleet.csv", csv.encode()),
    }
    r, job, html = ask(client, URL, data, django_capture_on_commit_callbacks)
    assert r.status_code == 200 and "<html" not in r.content.decode()
    assert "<html" not in html, html[:2000]
    assert "Report for 11 devices" in html
    assert f"<td>Not Enrolled</td><td>1</td><td><code>{unknown}</code></td>" in html
    assert "<td>Blocked, Insufficient License</td><td>2</td>" in html  # the sandbox's two blocked devices
    job.refresh_from_db()
    assert (job.status, job.total, job.succeeded, job.failed) == (Job.Status.SUCCEEDED, 11, 11, 0)
    call = EfotaCall.objects.get()
    assert (call.operation, call.ok, call.summary, call.job, call.actor) == (
        "abnormalDeviceList",
        True,
        "11 devices",
        job,
        viewer,
    )
    event = AuditEvent.objects.get(action="efota.abnormal_devices")
    assert event.summary["devices"] == 11 and event.summary["abnormal"] == 3 and event.actor == viewer


def test_a_refusal_is_explained_and_no_report_is_claimed(
    client, efota, sandbox_account, django_capture_on_commit_callbacks
):
    client.force_login(make_user("victor", "viewer"))
    # A licence the portal has a record of (never checked) but E-FOTA does not know.
    known_licence(sandbox_account, "EFOTA1-unknown", efota["customer_id"], checked_at=None)
    data = {
        "account": sandbox_account.pk,
        "customer_id": efota["customer_id"],
        "licence": "EFOTA1-unknown",
        "serials": ", ".join(efota["device_serials"][:3]),
    }
    _, job, html = ask(client, URL, data, django_capture_on_commit_callbacks)
    assert "E-FOTA does not know this licence" in html and "<code>FUD_3017</code>" in html
    assert "Report for" not in html
    job.refresh_from_db()
    assert (job.status, job.succeeded, job.failed) == (Job.Status.FAILED, 0, 3)
    assert (EfotaCall.objects.get().ok, EfotaCall.objects.get().code) == (False, "FUD_3017")
    event = AuditEvent.objects.get(action="efota.abnormal_devices")
    assert (event.summary["ok"], event.summary["code"], event.summary["abnormal"]) == (False, "FUD_3017", 0)


def test_a_file_without_serial_numbers_is_refused(client, efota, sandbox_account):
    client.force_login(make_user("victor", "viewer"))
    data = {
        "account": sandbox_account.pk,
        "customer_id": efota["customer_id"],
        "licence": efota["license"],
        "file": SimpleUploadedFile("imeis.csv", b"IMEI\n359221145350335\n"),
    }
    r = client.post(URL, data)
    assert "holds no valid serial number" in r.context["form"].errors["file"][0]
    assert not EfotaCall.objects.exists() and not Job.objects.exists()
