"""Firmware lookup: the versions E-FOTA offers for a model and sales code, asked by a worker (a lookup job) while
the page follows it."""

from __future__ import annotations

from html import unescape

from efota.models import EfotaCall
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, make_user
from tests.efota.helpers import CUSTOMER, LICENCE, known_licence, ready_account
from tests.portal.helpers import HTMX, ask, assert_following

URL = "/efota/firmware/"


class FirmwareTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()
        known_licence(self.acme)

    def test_it_shows_the_form(self):
        self.client.force_login(self.viewer)
        html = self.client.get(URL).content.decode()
        assert 'hx-post="/efota/firmware/"' in html and 'name="sales_code"' in html

    def test_missing_and_oversized_values_are_refused_without_a_call(self):
        self.client.force_login(self.viewer)
        data = {
            "account": self.acme.pk,
            "customer_id": CUSTOMER,
            "licence": "",
            "model": "",
            "sales_code": "BTUBTUBTUBTU",
        }
        r = self.client.post(URL, data, headers={"HX-Request": "true"})
        assert r.status_code == 200 and "<html" not in r.content.decode()
        errors = r.context["form"].errors
        assert set(errors) == {"licence", "model", "sales_code"}
        assert not EfotaCall.objects.exists() and not AuditEvent.objects.filter(action__startswith="efota.").exists()
        assert not Job.objects.exists()

    def test_a_lookup_is_queued_and_the_page_follows_it(self):
        self.client.force_login(self.viewer)
        data = {
            "account": self.acme.pk,
            "customer_id": CUSTOMER,
            "licence": LICENCE,
            "model": "sm-g991b",
            "sales_code": "btu",
            "current": "",
        }
        r = self.client.post(URL, data, headers=HTMX)
        job = Job.objects.get()
        html = r.content.decode()
        assert r.status_code == 200 and html.lstrip().startswith('<div id="firmware-result">')
        assert_following(html, job)
        assert 'value="sm-g991b"' in html  # the form stays filled in, to ask again
        assert (job.kind, job.status, job.account, job.created_by, job.func) == (
            "efota.firmware",
            Job.Status.QUEUED,
            self.acme,
            self.viewer,
            "portal.lookups.run_lookup",
        )
        assert job.params == {
            "customer_id": CUSTOMER,
            "licence": LICENCE,
            "model": "SM-G991B",
            "sales_code": "BTU",
            "current": "",
        }
        assert job.title == "Firmware for SM-G991B/BTU"
        assert not EfotaCall.objects.exists()  # nothing asked while the request waited

    def test_without_javascript_the_page_is_opened_on_the_job(self):
        self.client.force_login(self.viewer)
        data = {
            "account": self.acme.pk,
            "customer_id": CUSTOMER,
            "licence": LICENCE,
            "model": "SM-G991B",
            "sales_code": "BTU",
            "current": "G991BXXU5DVJ1",
        }
        r = self.client.post(URL, data)
        job = Job.objects.get()
        self.assertRedirects(r, f"{URL}?job={job.pk}", fetch_redirect_response=False)
        page = self.client.get(r["Location"])
        html = page.content.decode()
        assert "<html" in html and 'class="badge badge-queued">Queued<' in html
        assert 'value="G991BXXU5DVJ1"' in html and f'<a href="{URL}?job={job.pk}">Reload</a>' in html
        other = Job.objects.create(kind="efota.licence", account=self.acme)
        assert self.client.get(URL, {"job": other.pk}).status_code == 404  # another lookup's page shows it
        assert self.client.get(URL, {"job": "x"}).status_code == 200  # not a job: the plain page

    def test_it_accepts_only_get_and_post(self):
        self.client.force_login(self.viewer)
        assert self.client.put(URL).status_code == 405

    def test_it_needs_a_login_and_a_role(self):
        self.assertRedirects(self.client.get(URL), f"/login/?next={URL}", fetch_redirect_response=False)
        self.client.force_login(self.outsider)
        assert self.client.post(URL, {"account": self.acme.pk}).status_code == 403
        assert not EfotaCall.objects.exists() and not Job.objects.exists()


def test_it_lists_the_firmware_e_fota_offers(client, efota, sandbox_account, django_capture_on_commit_callbacks):
    viewer = make_user("victor", "viewer")
    client.force_login(viewer)
    data = {
        "account": sandbox_account.pk,
        "customer_id": efota["customer_id"],
        "licence": efota["license"],
        "model": "sm-g991b",
        "sales_code": "btu",
        "current": "",
    }
    r, job, html = ask(client, URL, data, django_capture_on_commit_callbacks)
    assert r.status_code == 200
    assert_following(r.content.decode(), job)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.result == {"versions": efota["firmware"]["SM-G991B/BTU"]}
    assert "<html" not in html and "hx-trigger" not in html
    for version in efota["firmware"]["SM-G991B/BTU"]:
        assert f"<li><code>{version}</code></li>" in html
    call = EfotaCall.objects.get()
    assert (call.operation, call.ok, call.summary, call.job, call.actor) == (
        "firmwareList",
        True,
        "SM-G991B/BTU",
        job,
        viewer,
    )
    event = AuditEvent.objects.get(action="efota.firmware_list")
    assert event.summary["ok"] is True and event.summary["versions"] == len(efota["firmware"]["SM-G991B/BTU"])
    assert event.actor == viewer and event.summary["job"] == job.pk
    asked = {k: event.summary[k] for k in ("customer_id", "licence", "model", "sales_code")}
    assert asked == {k: job.params[k] for k in asked} and asked["model"] == "SM-G991B"


def test_an_empty_list_and_a_refusal_are_explained(client, efota, sandbox_account, django_capture_on_commit_callbacks):
    client.force_login(make_user("victor", "viewer"))
    data = {
        "account": sandbox_account.pk,
        "customer_id": efota["customer_id"],
        "licence": efota["second_license"],
        "model": "SM-G991B",
        "sales_code": "BTU",
    }
    r, job, html = ask(client, URL, data, django_capture_on_commit_callbacks, htmx=False)
    assert r["Location"] == f"{URL}?job={job.pk}"
    assert "E-FOTA offers no firmware for this model and sales code on this licence." in html
    page = unescape(client.get(r["Location"]).content.decode())  # without JavaScript: the page, reloaded
    assert "E-FOTA offers no firmware for this model and sales code on this licence." in page
    assert 'class="badge badge-succeeded">Succeeded<' in page and 'hx-trigger="every 2s"' not in page
    # A licence the portal has a record of (never checked) but E-FOTA does not know.
    known_licence(sandbox_account, "EFOTA1-unknown", efota["customer_id"], checked_at=None)
    r, job, html = ask(client, URL, {**data, "licence": "EFOTA1-unknown"}, django_capture_on_commit_callbacks)
    assert "E-FOTA does not know this licence" in html and "<code>FUD_3017</code>" in html
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.error_summary.endswith("[FUD_3017]")
    assert "E-FOTA does not know this licence" in job.error_summary
    assert list(EfotaCall.objects.values_list("ok", "code")) == [(False, "FUD_3017"), (True, "")]
    assert AuditEvent.objects.filter(action="efota.firmware_list").count() == 2


# A licence and customer ID the page never saw still reach E-FOTA only through the form's checks.
def test_byte_limits_apply_to_the_lookup(client, efota, sandbox_account):
    client.force_login(make_user("victor", "viewer"))
    data = {"account": sandbox_account.pk, "customer_id": "é" * 26, "licence": LICENCE, "model": "X", "sales_code": "Y"}
    r = client.post(URL, data)
    assert "The customer ID is 52 bytes in UTF-8" in r.content.decode()
    assert not EfotaCall.objects.exists() and not Job.objects.exists()
