"""Licences: the list of licences checked and the "check licence" form, whose check is a lookup job (a worker asks
E-FOTA) that the page follows."""

from __future__ import annotations

import datetime as dt
from html import unescape

from efota.models import EfotaCall, EfotaLicence
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, make_user
from tests.efota.helpers import CUSTOMER, LICENCE, ready_account
from tests.portal.helpers import HTMX, ask, assert_following

URL = "/efota/licences/"


class LicencesTestCase(BaseTestCase):
    """Everything that never reaches E-FOTA."""

    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()
        EfotaLicence.objects.create(
            account=self.acme, customer_id=CUSTOMER, key=LICENCE, max_devices=100, expiration_date=dt.date(2000, 1, 1)
        )

    def test_it_lists_licences_with_the_expired_ones_highlighted(self):
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(URL).content.decode())
        assert f'<tr class="efota-expired"><td><code>{LICENCE}</code>' in html
        assert 'hx-post="/efota/licences/"' in html and 'action="/efota/licences/"' in html

    def test_invalid_input_is_refused_with_field_errors_and_nothing_is_sent(self):
        self.client.force_login(self.viewer)
        r = self.client.post(URL, {"account": self.acme.pk, "customer_id": "é" * 26, "licence": ""})
        assert r.status_code == 200
        errors = r.context["form"].errors
        assert errors["licence"] == ["This field is required."]
        assert errors["customer_id"][0].startswith("The customer ID is 52 bytes in UTF-8; E-FOTA allows 50 bytes")
        r = self.client.post(URL, {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": "é" * 50 + "x"})
        assert "The licence is 101 bytes in UTF-8" in r.content.decode()
        assert not EfotaCall.objects.exists() and EfotaLicence.objects.count() == 1

    def test_invalid_input_over_htmx_returns_the_form_fragment(self):
        self.client.force_login(self.viewer)
        r = self.client.post(
            URL, {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": ""}, headers={"HX-Request": "true"}
        )
        html = r.content.decode()
        assert r.status_code == 200 and "<html" not in html
        assert html.lstrip().startswith('<div id="licence-check">') and "This field is required." in html

    def test_a_check_is_queued_and_followed(self):
        self.client.force_login(self.viewer)
        data = {"account": self.acme.pk, "customer_id": f" {CUSTOMER} ", "licence": "EFOTA1-new"}
        r = self.client.post(URL, data, headers=HTMX)
        job = Job.objects.get()
        html = r.content.decode()
        assert html.lstrip().startswith('<div id="licence-check">')
        assert_following(html, job)
        assert (job.kind, job.params, job.created_by) == (
            "efota.licence",
            {"customer_id": CUSTOMER, "licence": "EFOTA1-new"},
            self.viewer,
        )
        assert not EfotaCall.objects.exists() and EfotaLicence.objects.count() == 1  # nothing asked yet
        r = self.client.post(URL, data)  # without JavaScript: the page, opened on the job
        second = Job.objects.latest("id")
        self.assertRedirects(r, f"{URL}?job={second.pk}", fetch_redirect_response=False)
        html = unescape(self.client.get(r["Location"]).content.decode())
        assert 'value="EFOTA1-new"' in html and 'class="badge badge-queued">Queued<' in html
        assert f'<tr class="efota-expired"><td><code>{LICENCE}</code>' in html  # still the whole page

    def test_it_accepts_only_get_and_post(self):
        self.client.force_login(self.viewer)
        assert self.client.put(URL).status_code == 405
        assert self.client.delete(URL).status_code == 405

    def test_it_needs_a_login_and_a_role(self):
        self.assertRedirects(self.client.get(URL), f"/login/?next={URL}", fetch_redirect_response=False)
        r = self.client.post(URL, {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": LICENCE})
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        self.client.force_login(self.outsider)
        assert self.client.post(URL, {"account": self.acme.pk}).status_code == 403
        assert not EfotaCall.objects.exists() and not Job.objects.exists()


def test_a_viewer_checks_a_licence_and_the_answer_is_stored(
    client, efota, sandbox_account, django_capture_on_commit_callbacks
):
    viewer = make_user("victor", "viewer")
    client.force_login(viewer)
    data = {"account": sandbox_account.pk, "customer_id": efota["customer_id"], "licence": efota["license"]}
    r, job, html = ask(client, URL, data, django_capture_on_commit_callbacks)
    assert r.status_code == 200 and "<html" not in r.content.decode()
    assert "<html" not in html
    record = EfotaLicence.objects.get(key=efota["license"])
    assert record.max_devices == 100 and record.expiration_date and not record.is_expired
    assert f"<dt>Max devices</dt><dd>{record.max_devices}</dd>" in html
    assert f"<dt>Expires</dt><dd>{record.expiration_date:%Y-%m-%d}</dd>" in html
    call = EfotaCall.objects.get()
    assert (call.operation, call.job, call.actor) == ("licenseInfo", job, viewer)
    event = AuditEvent.objects.get(action="efota.license_info")
    assert event.summary == {"ok": True, "job": job.pk} and event.actor == viewer
    job.refresh_from_db()
    assert (job.kind, job.status) == ("efota.licence", Job.Status.SUCCEEDED)  # a lookup job, nothing else
    assert Job.objects.count() == 1
    assert efota["license"] in client.get(URL).content.decode()  # and listed


def test_an_expired_licence_is_explained_with_its_fud_code(
    client, efota, sandbox_account, django_capture_on_commit_callbacks
):
    client.force_login(make_user("victor", "viewer"))
    data = {"account": sandbox_account.pk, "customer_id": efota["customer_id"], "licence": efota["expired_license"]}
    r, job, html = ask(client, URL, data, django_capture_on_commit_callbacks, htmx=False)
    assert r["Location"] == f"{URL}?job={job.pk}"
    for page in (html, unescape(client.get(r["Location"]).content.decode())):
        assert "The licence is not active (expired or not yet activated)" in page
        assert "<code>FUD_3018</code>" in page and "(processing error)" in page
    call = EfotaCall.objects.get()
    assert (call.ok, call.code) == (False, "FUD_3018")
    assert "not active" in EfotaLicence.objects.get(key=efota["expired_license"]).last_error
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.error_summary.endswith("[FUD_3018]")
    assert AuditEvent.objects.get(action="efota.license_info").summary == {
        "ok": False,
        "code": "FUD_3018",
        "job": job.pk,
    }
