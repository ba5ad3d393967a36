"""Groups: the list, registering a group to a licence and moving it to another licence."""

from __future__ import annotations

from html import unescape

from efota.models import EfotaCall, EfotaGroup
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, make_user
from tests.efota.helpers import CUSTOMER, LICENCE, TOO_LONG_GROUP, known_licence, ready_account


class GroupsTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()
        self.group = EfotaGroup.objects.create(
            account=self.acme, customer_id=CUSTOMER, group_id="FLEET-A", licence=LICENCE,
            status=EfotaGroup.Status.REGISTERED,
        )  # fmt: skip
        known_licence(self.acme, "EFOTA1-other")
        self.url = "/efota/groups/"
        self.register_url = "/efota/groups/register/"
        self.change_url = f"/efota/groups/{self.group.pk}/licence/"

    def post_register(self, **overrides: str):
        data = {"account": self.acme.pk, "customer_id": CUSTOMER, "group_id": "fleet-b", "licence": LICENCE}
        data.update(overrides)
        return self.client.post(self.register_url, data)

    def test_it_lists_groups_and_offers_forms_to_operators(self):
        self.client.force_login(self.operator)
        html = unescape(self.client.get(self.url).content.decode())
        assert "<code>FLEET-A</code>" in html and "Registered" in html
        assert f'action="{self.register_url}"' in html and f'action="{self.change_url}"' in html
        assert f'<option value="{CUSTOMER}">' in html  # known customer IDs offered

    def test_a_viewer_sees_the_list_without_forms(self):
        self.client.force_login(self.viewer)
        html = self.client.get(self.url).content.decode()
        assert "FLEET-A" in html and self.register_url not in html and self.change_url not in html

    def test_it_queues_a_registration(self):
        self.client.force_login(self.operator)
        r = self.post_register()
        job = Job.objects.get(kind="efota.register")
        self.assertRedirects(r, f"/efota/jobs/{job.pk}/", fetch_redirect_response=False)
        group = EfotaGroup.objects.get(group_id="FLEET-B")  # upper-cased as E-FOTA treats it
        assert (group.status, group.licence, group.customer_id) == (EfotaGroup.Status.PENDING, LICENCE, CUSTOMER)
        assert (job.created_by, job.func, job.params) == (
            self.operator,
            "efota.tasks.register_group",
            {"group": group.pk},
        )
        assert AuditEvent.objects.filter(action="efota.register_group", actor=self.operator).exists()

    def test_a_group_id_over_50_bytes_is_refused_with_the_reason(self):
        self.client.force_login(self.operator)
        r = self.post_register(group_id=TOO_LONG_GROUP)
        assert r.status_code == 200
        self.assertContains(r, "The group ID is 51 bytes in UTF-8; E-FOTA allows 50 bytes")
        assert not Job.objects.exists() and not EfotaGroup.objects.filter(group_id__startswith="É").exists()

    def test_an_empty_licence_and_a_long_customer_id_are_refused(self):
        self.client.force_login(self.operator)
        r = self.post_register(licence="", customer_id="ü" * 26)
        assert r.status_code == 200
        form = r.context["register"]
        assert form.errors["licence"] == ["This field is required."]
        assert "The customer ID is 52 bytes in UTF-8" in r.content.decode()
        assert not Job.objects.exists()

    def test_a_group_registered_to_another_licence_must_be_moved_instead(self):
        self.client.force_login(self.operator)
        r = self.post_register(group_id="fleet-a", licence="EFOTA1-other")
        assert r.status_code == 200
        self.assertContains(r, "Group FLEET-A is already registered to EFOTA1-fff555-ggg666-hh77; use “Change licence”")
        self.group.refresh_from_db()
        assert (self.group.status, self.group.licence) == (EfotaGroup.Status.REGISTERED, LICENCE)  # untouched
        assert not Job.objects.exists()
        # The same licence again is harmless (E-FOTA answers 200), so it is allowed.
        assert self.post_register(group_id="fleet-a").status_code == 302

    def test_an_account_not_ready_for_efota_cannot_be_chosen(self):
        from portal.models import KnoxAccount

        half = KnoxAccount.objects.create(name="Half set up", environment="sandbox")
        self.client.force_login(self.operator)
        r = self.post_register(account=str(half.pk))
        assert r.status_code == 200 and "account" in r.context["register"].errors
        assert not Job.objects.exists()

    def test_it_queues_a_licence_change(self):
        self.client.force_login(self.operator)
        r = self.client.post(self.change_url, {"licence": " EFOTA1-other "})
        job = Job.objects.get(kind="efota.license_change")
        self.assertRedirects(r, f"/efota/jobs/{job.pk}/", fetch_redirect_response=False)
        assert job.params == {"group": self.group.pk, "change_licence": "EFOTA1-other"}
        assert AuditEvent.objects.filter(action="efota.license_change", target_id=str(self.group.pk)).exists()

    def test_a_licence_change_to_the_same_or_an_empty_licence_is_refused(self):
        self.client.force_login(self.operator)
        r = self.client.post(self.change_url, {"licence": LICENCE})
        assert r.status_code == 200
        self.assertContains(r, "Group FLEET-A is already registered to EFOTA1-fff555-ggg666-hh77.")
        r = self.client.post(self.change_url, {"licence": "é" * 51})
        self.assertContains(r, "The licence is 102 bytes in UTF-8")
        assert self.client.post(self.change_url, {"licence": ""}).status_code == 200
        assert not Job.objects.exists()

    def test_a_group_of_an_account_no_longer_ready_cannot_be_moved(self):
        self.acme.efota_mdm_id = ""
        self.acme.save()
        self.client.force_login(self.operator)
        r = self.client.post(self.change_url, {"licence": "EFOTA1-other"})
        self.assertContains(r, "The account Acme Mobile cannot call E-FOTA: it needs the E-FOTA mdmId.")
        assert not Job.objects.exists()

    def test_an_unknown_group_is_404(self):
        self.client.force_login(self.operator)
        assert self.client.post(f"/efota/groups/{self.group.pk + 100}/licence/", {"licence": "X"}).status_code == 404

    def test_a_viewer_cannot_register_or_change(self):
        self.client.force_login(self.viewer)
        assert self.post_register().status_code == 403
        assert self.client.post(self.change_url, {"licence": "EFOTA1-other"}).status_code == 403
        assert not Job.objects.exists()

    def test_state_changes_are_post_only(self):
        self.client.force_login(self.operator)
        assert self.client.get(self.register_url).status_code == 405
        assert self.client.get(self.change_url).status_code == 405
        assert self.client.post(self.url).status_code == 405
        assert not Job.objects.exists()

    def test_it_needs_a_login(self):
        self.assertRedirects(self.client.get(self.url), "/login/?next=/efota/groups/", fetch_redirect_response=False)
        r = self.post_register()
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403
        assert not Job.objects.exists()


def test_registering_and_moving_a_group_through_the_pages(
    client, efota, sandbox_account, django_capture_on_commit_callbacks
):
    client.force_login(make_user("olivia", "operator"))
    with django_capture_on_commit_callbacks(execute=True):  # the job runs in-process (Q_CLUSTER sync in tests)
        r = client.post("/efota/groups/register/", {"account": sandbox_account.pk, "customer_id": efota["customer_id"],
                                                    "group_id": "lobby-tablets", "licence": efota["license"]})  # fmt: skip
    job = Job.objects.get(kind="efota.register")
    assert r["Location"] == f"/efota/jobs/{job.pk}/"
    html = unescape(client.get(r["Location"]).content.decode())
    assert '<span class="badge badge-succeeded">Succeeded</span>' in html
    assert "<code>LOBBY-TABLETS</code>" in html and "Registered" in html
    group = EfotaGroup.objects.get(group_id="LOBBY-TABLETS")
    assert group.status == EfotaGroup.Status.REGISTERED and group.registered_at

    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(f"/efota/groups/{group.pk}/licence/", {"licence": efota["second_license"]})
    group.refresh_from_db()
    assert group.licence == efota["second_license"]
    assert list(EfotaCall.objects.values_list("operation", "ok")) == [
        ("groupLicenseChange", True),
        ("groupRegister", True),
    ]


def test_an_expired_licence_shows_the_fud_code_in_words(
    client, efota, sandbox_account, django_capture_on_commit_callbacks
):
    client.force_login(make_user("olivia", "operator"))
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post("/efota/groups/register/", {"account": sandbox_account.pk, "customer_id": efota["customer_id"],
                                                    "group_id": "G-EXPIRED", "licence": efota["expired_license"]})  # fmt: skip
    html = unescape(client.get(r["Location"]).content.decode())
    assert "Failed" in html and "The licence is not active" in html and "FUD_3018" in html
    groups = unescape(client.get("/efota/groups/").content.decode())
    assert "Not registered" in groups and "renew it or choose another licence. <code>FUD_3018</code>" in groups
