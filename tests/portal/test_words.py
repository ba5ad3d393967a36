"""Plain words for stored codes (portal/words.py, issue 16 item 10): audit actions, job kinds and audit details
read as words on the portal's pages and in the admin, never as codes or a Python dict."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

from django.conf import settings

from portal.models import AuditEvent, Job
from portal.words import ACTIONS, KINDS, action_label, kind_label, summary_items
from tests.base import BaseTestCase

APPS = ("portal", "kdp", "guard", "efota")


def source() -> str:
    base = Path(settings.BASE_DIR)
    return "\n".join(p.read_text() for app in APPS for p in (base / app).rglob("*.py") if "migrations" not in p.parts)


def test_every_action_the_code_records_has_its_words():
    recorded = set(re.findall(r'record\(\s*"([a-z_]+\.[a-z_.]+)"', source()))
    recorded |= set(re.findall(r'UPLOAD_RESULTS = "([a-z_.]+)"', source()))
    assert len(recorded) > 20
    assert sorted(recorded - set(ACTIONS)) == []


def test_every_job_kind_the_code_creates_has_its_words():
    code = source()
    kinds = set(re.findall(r'kind="([a-z_]+\.[a-z_]+)"', code))
    kinds |= set(re.findall(r'(?:_LOOKUP|CONNECTION_TEST|FORCE_UPDATE_REFRESH|UPLOAD_RESULTS) = "([a-z_.]+)"', code))
    kinds |= {"kdp.upload", "kdp.delete", "kdp.parse", "guard.parse"}  # f"kdp.{operation}", f"{service}.parse"
    assert len(kinds) > 15
    assert sorted(kinds - set(KINDS)) == []


def test_unknown_codes_still_read_as_words():
    assert action_label("guard.lock") == "Knox Guard: lock"
    assert kind_label("guard.stop-blink") == "Knox Guard: stop blink"
    assert action_label("weird_thing") == "Weird thing"


def test_summaries_are_labelled_plain_values():
    items = summary_items(
        {"hour_utc": 3, "ok": False, "serials": list(range(12)), "filter": {"state": "registered", "job": None}}
    )
    assert items == [
        ("Hour (UTC)", "3"),
        ("Succeeded", "no"),
        ("Devices", "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more"),
        ("Filter", "State: registered; Job: —"),
    ]
    assert summary_items({}) == [] and summary_items(None) == []


class AdminWordsTestCase(BaseTestCase):
    def test_the_admin_shows_what_happened_and_the_details_in_words(self):
        e = AuditEvent.objects.record("kdp.reconcile_schedule", actor=self.admin, summary={"hour_utc": 4})
        self.client.force_login(self.admin)
        listing = unescape(self.client.get("/admin/portal/auditevent/").content.decode())
        assert "Daily KDP comparison scheduled" in listing
        page = unescape(self.client.get(f"/admin/portal/auditevent/{e.pk}/change/").content.decode())
        assert "Hour (UTC): 4" in page and '{"hour_utc"' not in page

    def test_the_admin_and_the_jobs_list_name_job_kinds_in_words(self):
        Job.objects.create(kind="kdp.reconcile", title="")
        self.client.force_login(self.admin)
        assert "KDP: compare with Knox" in unescape(self.client.get("/admin/portal/job/").content.decode())
        html = unescape(self.client.get("/jobs/").content.decode())
        assert '<option value="kdp.reconcile">KDP: compare with Knox</option>' in html
        assert "<td>KDP: compare with Knox</td>" in html  # a job without a title
