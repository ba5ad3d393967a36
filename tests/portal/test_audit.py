from __future__ import annotations

import datetime as dt
from html import unescape

import pytest
from django.utils import timezone

from portal.models import AppendOnlyError, AuditEvent, scrub
from tests.base import BaseTestCase


class AuditModelTestCase(BaseTestCase):
    def test_it_is_append_only(self):
        e = AuditEvent.objects.record("thing.do", actor=self.admin, summary={"n": 1})
        e.action = "changed"
        with pytest.raises(AppendOnlyError):
            e.save()
        with pytest.raises(AppendOnlyError):
            e.delete()
        with pytest.raises(AppendOnlyError):
            AuditEvent.objects.filter(pk=e.pk).update(action="x")
        with pytest.raises(AppendOnlyError):
            AuditEvent.objects.all().delete()
        assert AuditEvent.objects.get(pk=e.pk).action == "thing.do"

    def test_summaries_are_scrubbed_of_secrets(self):
        e = AuditEvent.objects.record(
            "x",
            summary={
                "client_secret": "s1",
                "nested": {"Authorization": "Bearer t", "ok": 1},
                "items": [{"apiKey": "k"}],
            },
        )
        assert e.summary == {
            "client_secret": "[redacted]",
            "nested": {"Authorization": "[redacted]", "ok": 1},
            "items": [{"apiKey": "[redacted]"}],
        }
        assert scrub({"private_key": "p", "x-knox-apitoken": "t", "name": "n"}) == {
            "private_key": "[redacted]",
            "x-knox-apitoken": "[redacted]",
            "name": "n",
        }

    def test_the_actor_name_survives_the_user(self):
        AuditEvent.objects.record("x", actor=self.operator)
        self.operator.delete()
        e = AuditEvent.objects.get(action="x")
        assert e.actor is None and e.actor_name == "olivia"

    def test_logins_are_audited_with_ip_and_failures_without_passwords(self):
        self.client.post("/login/", {"username": "olivia", "password": "wrong password"})
        self.client.post("/login/", {"username": "olivia", "password": "correct horse battery staple"})
        failed = AuditEvent.objects.get(action="auth.login_failed")
        assert failed.summary == {"username": "olivia"}
        ok = AuditEvent.objects.get(action="auth.login")
        assert ok.actor == self.operator and ok.ip == "127.0.0.1"


class AuditPageTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        AuditEvent.objects.record("account.create", actor=self.admin, summary={})
        AuditEvent.objects.record("kdp.upload", actor=self.operator, summary={"devices": 5})
        old = AuditEvent(
            action="kdp.delete",
            actor=self.operator,
            actor_name="olivia",
            created_at=timezone.now() - dt.timedelta(days=10),
        )
        old.save()
        self.client.force_login(self.viewer)

    def test_it_lists_newest_first(self):
        r = self.client.get("/audit/")
        html = r.content.decode().split("<tbody>")[1]
        # Insertion order (the id cursor); the back-dated row of setUp was inserted last.
        assert html.index("kdp.upload") < html.index("account.create")

    def test_it_filters_by_actor_action_and_dates(self):
        r = self.client.get("/audit/", {"actor": "olivia"})
        self.assertContains(r, "kdp.upload")
        self.assertNotContains(r, '<td title="account.create">')
        r = self.client.get("/audit/", {"action": "kdp."})
        self.assertContains(r, '<td title="kdp.delete">')
        self.assertNotContains(r, '<td title="account.create">')
        today = timezone.localdate().isoformat()
        r = self.client.get("/audit/", {"date_from": today, "date_to": today})
        self.assertNotContains(r, '<td title="kdp.delete">')
        self.assertContains(r, '<td title="kdp.upload">')

    def test_bad_dates_are_explained_not_500(self):
        r = self.client.get("/audit/", {"date_from": "2026-02-10", "date_to": "2026-01-01"})
        self.assertContains(r, "end date is before the start date")
        r = self.client.get("/audit/", {"date_from": "not a date", "before": "x"})
        assert r.status_code == 200

    def test_it_pages_with_a_cursor(self):
        for i in range(60):
            AuditEvent.objects.record("bulk.event", summary={"i": i})
        r = self.client.get("/audit/", {"action": "bulk."})
        assert r.content.decode().count('<td title="bulk.event">') == 50
        next_query = r.context["list_next_query"]
        assert "action=bulk." in next_query  # the filter stays in the URL of every page
        r2 = self.client.get(f"/audit/?{next_query}")
        assert r2.content.decode().count('<td title="bulk.event">') == 10
        assert r2.context["list_next_query"] is None
        assert "60 events" in r2.content.decode()  # the total of the list, not of the page

    def test_details_are_labelled_plain_values_not_a_python_dict(self):
        AuditEvent.objects.record(
            "kdp.file_upload",
            actor=self.operator,
            summary={"file": "devices.xlsx", "bytes": 20480, "operation": "upload", "flags": {"auto_lock": True}},
        )
        html = unescape(self.client.get("/audit/", {"action": "kdp.file"}).content.decode())
        assert "{'file'" not in html and "{&#x27;" not in html
        assert '<td title="kdp.file_upload">KDP spreadsheet uploaded</td>' in html
        for label, value in (("File", "devices.xlsx"), ("Size", "20.0\xa0KB"), ("Policy flags", "Auto lock: yes")):
            assert f"<dt>{label}</dt><dd>{value}</dd>" in html, label

    def test_admin_cannot_change_or_delete_events(self):
        self.client.force_login(self.admin)
        e = AuditEvent.objects.first()
        r = self.client.get(f"/admin/portal/auditevent/{e.pk}/change/")
        assert r.status_code == 200 and b'name="_save"' not in r.content
        assert self.client.post(f"/admin/portal/auditevent/{e.pk}/delete/").status_code == 403
        assert self.client.get("/admin/portal/auditevent/add/").status_code == 403
