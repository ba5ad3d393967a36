"""The E-FOTA forms offer the customer IDs and licences the portal knows (checked licences, registered groups'
licences) and refuse, with a message, one it doesn't know or knows to be unusable; the licence check is the one
form that takes new values (issue 16: "pick the customer ID and licence instead of retyping them")."""

from __future__ import annotations

import datetime as dt
from html import unescape

from efota.models import EfotaGroup
from portal.models import Job
from tests.base import BaseTestCase
from tests.efota.helpers import CUSTOMER, LICENCE, known_licence, ready_account

OTHER_CUSTOMER = "AAAA1111-BB22-CC33-DD44-EEEEEE555555"


class IdChoicesTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.acme = ready_account()
        self.other = ready_account("Other Reseller")
        known_licence(self.acme, LICENCE, max_devices=250, expiration_date=dt.date(2099, 12, 31))
        known_licence(self.acme, "EFOTA1-expired", expiration_date=dt.date(2001, 1, 31))
        known_licence(self.acme, "EFOTA1-refused", last_error="E-FOTA does not know this licence. [FUD_3017]")
        known_licence(self.other, "EFOTA1-elsewhere", OTHER_CUSTOMER)
        self.group = EfotaGroup.objects.create(
            account=self.acme, customer_id=CUSTOMER, group_id="FLEET-A", licence="EFOTA1-from-group",
            status=EfotaGroup.Status.REGISTERED,
        )  # fmt: skip

    def register(self, **overrides: object):
        data = {"account": self.acme.pk, "customer_id": CUSTOMER, "group_id": "fleet-b", "licence": LICENCE}
        return self.client.post("/efota/groups/register/", {**data, **overrides})

    def test_the_register_form_offers_the_usable_licences_the_portal_knows(self) -> None:
        self.client.force_login(self.operator)
        html = unescape(self.client.get("/efota/groups/").content.decode())
        assert 'list="efota-customer-ids"' in html and 'list="efota-licences"' in html
        assert f'<option value="{CUSTOMER}">Acme Mobile · 4 licences</option>' in html
        assert f'<option value="{OTHER_CUSTOMER}">Other Reseller · 1 licence</option>' in html
        assert f'<option value="{LICENCE}">{CUSTOMER} · Acme Mobile · expires 2099-12-31, 250 devices</option>' in html
        assert "licence of group FLEET-A, not checked yet" in html  # a registered group's licence counts as known
        # Expired and refused ones are not offered where a licence is used.
        assert '<option value="EFOTA1-expired">' not in html and '<option value="EFOTA1-refused">' not in html

    def test_the_licence_check_offers_every_known_licence_and_takes_new_ones(self) -> None:
        self.client.force_login(self.viewer)
        html = unescape(self.client.get("/efota/licences/").content.decode())
        assert '<option value="EFOTA1-expired">' in html and "expired 2001-01-31" in html
        assert "Choose from the list, or type a new one" in html
        # A check that ends teaches the portal a licence: the lists are re-read then (portal.js).
        assert '<div id="efota-id-lists" data-refresh-on-job-end>' in html
        r = self.client.post(
            "/efota/licences/", {"account": self.acme.pk, "customer_id": "NEW-CUSTOMER", "licence": "EFOTA1-new"}
        )
        job = Job.objects.get(kind="efota.licence")
        assert r.status_code == 302 and job.params == {"customer_id": "NEW-CUSTOMER", "licence": "EFOTA1-new"}

    def test_an_unknown_customer_id_is_refused_with_what_to_do(self) -> None:
        self.client.force_login(self.operator)
        r = self.register(customer_id="NOT-A-CUSTOMER")
        assert r.status_code == 200
        assert r.context["register"].errors["customer_id"] == [
            "The portal knows no licence or group of customer ID NOT-A-CUSTOMER on Acme Mobile. Choose one from the "
            "list, or check one of this customer's licences on the Licences page first: it is then offered here."
        ]
        # A customer known only on another account is unknown on this one.
        r = self.register(customer_id=OTHER_CUSTOMER, licence="EFOTA1-elsewhere")
        assert "customer_id" in r.context["register"].errors
        assert not Job.objects.exists() and not EfotaGroup.objects.filter(group_id="FLEET-B").exists()

    def test_an_unknown_licence_is_refused_and_the_known_ones_named(self) -> None:
        self.client.force_login(self.operator)
        r = self.register(licence="EFOTA1-typo")
        assert r.context["register"].errors["licence"] == [
            f"The portal doesn't know licence EFOTA1-typo for customer ID {CUSTOMER} on Acme Mobile. Choose one of "
            f"EFOTA1-fff555-ggg666-hh77, EFOTA1-from-group, or check this licence on the Licences page first."
        ]
        assert not Job.objects.exists()

    def test_an_expired_licence_or_one_whose_check_failed_is_refused(self) -> None:
        self.client.force_login(self.operator)
        errors = self.register(licence="EFOTA1-expired").context["register"].errors["licence"]
        assert errors[0].startswith("Licence EFOTA1-expired expired on 2001-01-31 (checked ")
        assert "E-FOTA refuses an expired licence" in errors[0]
        errors = self.register(licence="EFOTA1-refused").context["register"].errors["licence"]
        assert "The last check of licence EFOTA1-refused" in errors[0]
        assert "failed: E-FOTA does not know this licence. [FUD_3017]" in errors[0]
        assert not Job.objects.exists()

    def test_a_known_licence_is_queued(self) -> None:
        self.client.force_login(self.operator)
        assert self.register(licence="EFOTA1-from-group").status_code == 302
        assert Job.objects.filter(kind="efota.register").count() == 1

    def test_change_licence_offers_the_customers_other_licences_and_refuses_unknown_ones(self) -> None:
        self.client.force_login(self.operator)
        html = unescape(self.client.get("/efota/groups/").content.decode())
        options = html.split(f'<datalist id="licences-{self.group.pk}">', 1)[1].split("</datalist>", 1)[0]
        assert f'<option value="{LICENCE}">' in options
        assert "EFOTA1-from-group" not in options  # its own licence
        assert "EFOTA1-expired" not in options and "EFOTA1-elsewhere" not in options
        url = f"/efota/groups/{self.group.pk}/licence/"
        r = self.client.post(url, {"licence": "EFOTA1-typo"})
        assert r.status_code == 200 and "The portal doesn't know licence EFOTA1-typo" in unescape(r.content.decode())
        assert not Job.objects.exists()
        assert self.client.post(url, {"licence": LICENCE}).status_code == 302

    def test_force_updates_and_look_ups_refuse_an_unknown_licence(self) -> None:
        self.client.force_login(self.operator)
        ids = {"account": self.acme.pk, "customer_id": CUSTOMER, "licence": "EFOTA1-typo"}
        pages = {
            "/efota/force-updates/new/": {"model": "SM-G991B", "sales_code": "BTU", "target": "Latest",
                                          "network_type": "WIFIONLY", "serials": "R58N123ABCD"},
            "/efota/firmware/": {"model": "SM-G991B", "sales_code": "BTU"},
            "/efota/abnormal/": {"serials": "R58N123ABCD"},
        }  # fmt: skip
        for url, extra in pages.items():
            with self.subTest(url=url):
                r = self.client.post(url, {**ids, **extra})
                assert r.status_code == 200
                assert "The portal doesn't know licence EFOTA1-typo" in unescape(r.content.decode())
        assert not Job.objects.exists()

    def test_a_form_with_no_known_licence_says_where_to_start(self) -> None:
        from efota.models import EfotaLicence

        EfotaLicence.objects.all().delete()
        EfotaGroup.objects.all().delete()
        self.client.force_login(self.operator)
        html = self.client.get("/efota/force-updates/new/").content.decode()
        assert "The portal knows no licence yet: check one on the" in html

    def test_the_groups_page_reads_the_known_licences_once_however_many_groups(self) -> None:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        self.client.force_login(self.operator)
        self.client.get("/efota/groups/")  # the first request of a session reads more (session, permissions)
        with CaptureQueriesContext(connection) as one:
            self.client.get("/efota/groups/")
        for n in range(10):
            EfotaGroup.objects.create(account=self.acme, customer_id=CUSTOMER, group_id=f"G{n}", licence=LICENCE,
                                      status=EfotaGroup.Status.REGISTERED)  # fmt: skip
        with CaptureQueriesContext(connection) as eleven:
            html = self.client.get("/efota/groups/").content.decode()
        assert len(eleven) == len(one)
        assert html.count('<datalist id="licences-') == 11

    def test_the_message_names_a_few_known_licences_not_hundreds(self) -> None:
        for n in range(7):
            known_licence(self.acme, f"EFOTA1-more-{n}")
        self.client.force_login(self.operator)
        [message] = self.register(licence="EFOTA1-typo").context["register"].errors["licence"]
        assert (
            "EFOTA1-fff555-ggg666-hh77, EFOTA1-more-0, EFOTA1-more-1, EFOTA1-more-2, EFOTA1-more-3 and 4 more in the list"
            in message
        )
