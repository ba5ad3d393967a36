"""The Knox Guard device pages: the list (filters, keyset pages, fragment, exports), the detail page with only the
actions the state and the role allow, and the one POST view that queues an action on one device.

Page and permission tests run on local records of a Guard-ready account that is never called; one test runs a
blink from the detail page against the in-process sandbox.
"""

from __future__ import annotations

import csv
import io
import re
from html import unescape

import requests
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from guard.client import quiet_flags
from guard.models import GuardAction, GuardDevice, GuardLicence
from guard.tasks import params_from, run_actions
from portal.models import AuditEvent, Job
from tests.base import BaseTestCase, body, make_user
from tests.guard.helpers import CONTACT, device_in, guard_account, make_device

# Every action's form is found by its hidden input on the detail page.
ACTION_INPUT = re.compile(r'<input type="hidden" name="action" value="([a-z-]+)">')


def shown_actions(html: str) -> list[str]:
    return ACTION_INPUT.findall(html)


class DeviceListTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.devices = [make_device(self.account, state, n) for n, state in
                        enumerate(["Pending", "Enrolled", "Enrolled", "Locked", "Blinked"], start=1)]  # fmt: skip
        self.url = "/guard/devices/"

    def test_it_lists_devices_newest_first_with_api_state_and_console_label(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url)
        html = r.content.decode()
        uids = re.findall(r'<a href="/guard/devices/\d+/"><code>(\d+)</code>', html)
        assert uids == [d.device_uid for d in reversed(self.devices)]
        assert "Blinked" in html and "Reminder On" in html and "Active" in html

    def test_it_filters_by_state_approve_id_licence_and_prefix(self):
        GuardDevice.objects.filter(pk=self.devices[1].pk).update(licence="KG-LIC-1")
        self.client.force_login(self.viewer)
        for query, expected in (
            ({"state": "Enrolled"}, [self.devices[2], self.devices[1]]),
            ({"approve_id": "LOAN-0004"}, [self.devices[3]]),
            ({"licence": "KG-LIC-1"}, [self.devices[1]]),
            ({"q": self.devices[0].device_uid}, [self.devices[0]]),
            ({"q": "LOAN-0005"}, [self.devices[4]]),
            ({"account": self.account.pk, "state": "Pending"}, [self.devices[0]]),
        ):
            html = self.client.get(self.url, query).content.decode()
            uids = re.findall(r'<a href="/guard/devices/\d+/"><code>(\d+)</code>', html)
            assert uids == [d.device_uid for d in expected], query

    def test_it_pages_by_id_without_counting(self):
        for n in range(6, 60):
            make_device(self.account, "Enrolled", n)
        self.client.force_login(self.viewer)
        with CaptureQueriesContext(connection) as queries:
            first = self.client.get(self.url)
        sql = [q["sql"] for q in queries.captured_queries]
        # The one count is the list's total (portal.lists.total), bounded by a LIMITed subquery.
        counts = [q for q in sql if "COUNT(" in q.upper()]
        assert len(counts) == 1 and "LIMIT 10001" in counts[0]
        assert next(q for q in sql if "guard_guarddevice" in q and "COUNT(" not in q).endswith("LIMIT 51")
        assert len(first.context["devices"]) == 50
        next_after = first.context["next_after"]
        assert next_after == first.context["devices"][-1].pk
        second = self.client.get(self.url, {"after": next_after})
        assert len(second.context["devices"]) == 9 and second.context["next_after"] is None
        assert {d.pk for d in first.context["devices"]}.isdisjoint(d.pk for d in second.context["devices"])

    def test_it_refuses_a_too_short_search_with_a_reason(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url, {"q": "35"})
        assert r.status_code == 200 and r.context["devices"] == []
        self.assertContains(r, "Type at least 4 characters")

    def test_it_returns_the_table_fragment_for_htmx(self):
        self.client.force_login(self.viewer)
        r = self.client.get(self.url, {"state": "Locked"}, headers={"HX-Request": "true", "HX-Target": "device-table"})
        self.assertContains(r, 'id="device-table"')
        self.assertNotContains(r, "<html")
        assert r["Vary"] and "HX-Request" in r["Vary"]

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        r = self.client.get(self.url)
        assert r.status_code == 302 and r["Location"].startswith("/login/")

    def test_it_forbids_an_outsider(self):
        self.client.force_login(self.outsider)
        assert self.client.get(self.url).status_code == 403

    def test_it_answers_post_with_405(self):
        self.client.force_login(self.admin)
        assert self.client.post(self.url).status_code == 405


class DeviceExportTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.device = make_device(self.account, "Enrolled", 1, approve_id='=HYPERLINK("http://x")', model="@SUM(A1)")
        make_device(self.account, "Pending", 2)

    def test_it_exports_csv_with_identifiers_as_text_and_formulas_neutralised(self):
        self.client.force_login(self.viewer)
        r = self.client.get("/guard/devices/export.csv", {"state": "Enrolled"})
        assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(body(r).decode("utf-8-sig"))))
        assert rows[0][:5] == ["IMEI / serial", "Approve ID", "Knox objectId", "State (API)", "State (console)"]
        assert len(rows) == 2
        assert rows[1][0] == self.device.device_uid and rows[1][3:5] == ["Enrolled", "Active"]
        assert rows[1][1] == '\'=HYPERLINK("http://x")' and rows[1][5] == "'@SUM(A1)"
        assert AuditEvent.objects.filter(action="guard.export", actor=self.viewer).exists()

    def test_it_exports_xlsx(self):
        import python_calamine

        self.client.force_login(self.viewer)
        r = self.client.get("/guard/devices/export.xlsx")
        content = body(r)
        assert r.status_code == 200 and content.startswith(b"PK\x03\x04")
        sheet = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(content)).get_sheet_by_index(0).to_python()
        assert sheet[1][0] == self.device.device_uid and sheet[1][1].startswith("'=")

    def test_it_refuses_an_unknown_format(self):
        self.client.force_login(self.viewer)
        assert self.client.get("/guard/devices/export.pdf").status_code == 400

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        assert self.client.get("/guard/devices/export.csv").status_code == 302


class DeviceDetailTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.device = make_device(self.account, "Enrolled", licence="KG-LIC-1")
        self.url = f"/guard/devices/{self.device.pk}/"

    def shown(self, user: User, state: str) -> list[str]:
        GuardDevice.objects.filter(pk=self.device.pk).update(state=state)
        self.client.force_login(user)
        return shown_actions(self.client.get(self.url).content.decode())

    def test_it_shows_state_identifiers_licence_and_last_action(self):
        GuardLicence.objects.create(account=self.account, key="KG-LIC-1", state="Expired", max_devices=10)
        GuardDevice.objects.filter(pk=self.device.pk).update(
            last_action="blink", last_outcome="failed", last_code="4000310"
        )
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(self.url).content.decode())
        for text in (self.device.device_uid, "LOAN-0001", self.device.object_id, ">Active</strong>", "KG-LIC-1",
                     "expired", "4000310", "Start payment reminders at", ">Failed</span>"):  # fmt: skip
            assert text in html, text

    def test_it_speaks_the_console_s_words_not_the_api_s(self):
        """Issue 16 item 10: "for a Enrolled device", "? → …", raw action names."""
        job = Job.objects.create(kind="guard.lock", account=self.account, created_by=self.admin)
        for outcome, before, after in (("failed", "Enrolled", ""), ("succeeded", "Enrolled", "Locking"),
                                       ("pending", "", "")):  # fmt: skip
            GuardAction.objects.create(account=self.account, job=job, device=self.device, action="lock",
                                       device_uid=self.device.device_uid, outcome=outcome, state_before=before,
                                       state_after=after)  # fmt: skip
        self.client.force_login(self.admin)
        html = " ".join(unescape(self.client.get(self.url).content.decode()).split())
        assert "for a Enrolled" not in html and "a Enrolled device" not in html and "? →" not in html
        assert "while the device is Active" in html
        assert "Active (unchanged)" in html and "Active → Locking" in html
        assert "not in the portal's records (waiting for Knox)" in html
        assert "→ Locking" in html and "→ StartingReminder" not in html

    def test_it_offers_only_the_actions_the_state_allows(self):
        for state, expected in (
            ("Pending", ["approve", "reject"]),
            ("Enrolled", ["lock", "unlock", "blink", "message", "complete"]),
            ("Locked", ["unlock", "message", "complete"]),
            ("Blinked", ["stop-blink", "message", "complete"]),
            ("Completed", ["delete"]),
            ("Rejected", ["delete"]),
            ("Locking", []),
        ):
            assert self.shown(self.admin, state) == expected, state

    def test_it_offers_an_operator_no_lock_unlock_complete_or_delete(self):
        assert self.shown(self.operator, "Enrolled") == ["blink", "message"]
        assert self.shown(self.operator, "Locked") == ["message"]
        assert self.shown(self.operator, "Completed") == []
        assert self.shown(self.operator, "Pending") == ["approve", "reject"]

    def test_it_offers_a_viewer_no_action(self):
        assert self.shown(self.viewer, "Enrolled") == []

    def test_it_asks_for_the_typed_confirmation_before_a_single_lock_complete_or_delete(self):
        self.client.force_login(self.admin)
        html = unescape(self.client.get(self.url).content.decode())
        assert "Type <code>LOCK 1</code> to confirm" in html and "Type <code>COMPLETE 1</code> to confirm" in html
        assert "Type <code>UNLOCK" not in html and "Type <code>BLINK" not in html
        assert "Quiet period" in html and "The same hours every day" in html and "Sunday at 6 to Monday at 7" in html

    def test_it_lists_every_action_of_the_device_with_its_job_and_explanation(self):
        job = Job.objects.create(kind="guard.lock", account=self.account, created_by=self.admin)
        GuardAction.objects.create(account=self.account, job=job, device=self.device, device_uid=self.device.device_uid,
                                   action="lock", outcome="failed", code="4000310", state_before="Enrolled",
                                   params={"message": "Pay now"}, actor=self.admin)  # fmt: skip
        GuardAction.objects.create(account=self.account, device=self.device, device_uid=self.device.device_uid,
                                   action="blink", outcome="succeeded")  # fmt: skip
        self.client.force_login(self.viewer)
        html = unescape(self.client.get(self.url).content.decode())
        assert f'href="/guard/jobs/{job.pk}/"' in html and "4000310" in html and "“Pay now”" in html
        assert "state does not allow" in html  # explanation() of the Knox code
        assert html.index("Start payment reminders") < html.index("Lock")  # newest first

    def test_it_answers_404_for_an_unknown_device(self):
        self.client.force_login(self.viewer)
        assert self.client.get("/guard/devices/999999/").status_code == 404

    def test_it_sends_an_anonymous_user_to_the_login_page(self):
        r = self.client.get(self.url)
        assert r.status_code == 302 and r["Location"].startswith("/login/")


class DeviceActTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account = guard_account()
        self.device = make_device(self.account, "Enrolled")
        self.url = f"/guard/devices/{self.device.pk}/act/"

    def act(self, user: User | None, action: str, state: str | None = None, **data: object):
        if state:
            GuardDevice.objects.filter(pk=self.device.pk).update(state=state)
        if user is not None:
            self.client.force_login(user)
        return self.client.post(self.url, {"action": action, **data})

    def assert_queued(self, r, action: str, user: User) -> Job:
        job = Job.objects.get()
        self.assertRedirects(r, f"/guard/jobs/{job.pk}/", fetch_redirect_response=False)
        assert job.kind == f"guard.{action}" and job.created_by == user and job.params["devices"] == [self.device.pk]
        assert job.func == "guard.tasks.run_actions"
        event = AuditEvent.objects.get(action=f"guard.{action}")
        assert event.actor == user and event.target_id == str(job.pk)
        return job

    def queued(self, r) -> Job:
        job = Job.objects.get()
        self.assertRedirects(r, f"/guard/jobs/{job.pk}/", fetch_redirect_response=False)
        return job

    def test_an_admin_locks_with_message_and_contact(self):
        r = self.act(self.admin, "lock", message="Payment overdue", **CONTACT, confirmation="LOCK 1")
        job = self.assert_queued(r, "lock", self.admin)
        assert job.params["action_params"] == {"message": "Payment overdue", "tel": "+44 20 7946 0000"}
        event = AuditEvent.objects.get(action="guard.lock")
        assert (
            event.summary["params"]["message"] == "Payment overdue" and event.summary["typed_confirmation"] == "LOCK 1"
        )

    def test_a_single_lock_complete_or_delete_without_the_typed_confirmation_queues_nothing(self):
        for action, state, data, typed, text in (
            ("lock", "Enrolled", {"message": "Pay", **CONTACT}, "", "Type LOCK 1 to confirm: it acts on real phones."),
            ("lock", "Enrolled", {"message": "Pay", **CONTACT}, "LOCK 2", "You typed “LOCK 2”; type exactly LOCK 1"),
            ("complete", "Enrolled", {}, "LOCK 1", "type exactly COMPLETE 1"),
            ("delete", "Completed", {}, "", "Type DELETE 1 to confirm"),
        ):  # fmt: skip
            r = self.act(self.admin, action, state, **data, confirmation=typed)
            assert r.status_code == 200, (action, typed)
            bound = next(f for f in r.context["action_forms"] if f.is_bound)
            assert text in " ".join(bound.errors["confirmation"]) and text in unescape(r.content.decode())
        assert not Job.objects.exists() and not AuditEvent.objects.filter(action__startswith="guard.").exists()

    def test_an_admin_may_unlock_complete_and_delete(self):
        for action, state in (("unlock", "Locked"), ("complete", "Enrolled"), ("delete", "Completed")):
            Job.objects.all().delete()
            typed = "" if action == "unlock" else f"{action.upper()} 1"
            self.assert_queued(self.act(self.admin, action, state, confirmation=typed), action, self.admin)

    def test_an_operator_may_blink_message_approve_reject_and_stop_blink(self):
        cases = (
            ("blink", "Enrolled", {"message": "Payment due", "interval": 3600, "time_limit_from": 23,
                                   "time_limit_to": 7, **CONTACT}),
            ("message", "Locked", {"message": "Call us", "email": "pay@example.org"}),
            ("approve", "Pending", {"approve_id": "LOAN-77", "approve_comment": "signed"}),
            ("reject", "Pending", {}),
            ("stop-blink", "Blinked", {}),
        )  # fmt: skip
        for action, state, data in cases:
            Job.objects.all().delete()
            self.assert_queued(self.act(self.operator, action, state, **data), action, self.operator)
        job = Job.objects.get()
        assert job.kind == "guard.stop-blink"

    def test_the_blink_schedule_is_queued_as_pairs(self):
        r = self.act(self.operator, "blink", message="Due", interval=60, time_limit_from=6, time_limit_to=7,
                     days_limit_from=0, days_limit_to=1, **CONTACT)  # fmt: skip
        job = self.assert_queued(r, "blink", self.operator)
        p = job.params["action_params"]
        assert (p["time_limit"], p["days_limit"], p["interval"]) == ([6, 7], [0, 1], 60)

    def test_the_two_quiet_periods_of_seed_003_are_sent_as_chosen(self):
        """ "The same hours every day" sends only the hours; "from a day and hour to a day and hour" the days and
        their hours. Values typed in the other part of the form are ignored, not sent."""
        r = self.act(self.operator, "blink", message="Due", interval=60, quiet="daily", time_limit_from=23,
                     time_limit_to=7, days_limit_from=2, days_limit_to=3, **CONTACT)  # fmt: skip
        p = self.queued(r).params["action_params"]
        assert (p["time_limit"], p.get("days_limit")) == ([23, 7], None)
        assert quiet_flags(params_from(Job.objects.get()))["timeLimitEnable"] is True
        Job.objects.all().delete()
        r = self.act(self.operator, "blink", message="Due", interval=60, quiet="span", days_limit_from=0,
                     span_from_hour=6, days_limit_to=1, span_to_hour=7, time_limit_from=22, **CONTACT)  # fmt: skip
        job = self.queued(r)
        assert (job.params["action_params"]["time_limit"], job.params["action_params"]["days_limit"]) == (
            [6, 7],
            [0, 1],
        )
        assert quiet_flags(params_from(job)) == {
            "timeLimitEnable": False, "daysLimitEnable": True, "timeLimit": [6, 7], "daysLimit": [0, 1],
        }  # fmt: skip
        Job.objects.all().delete()
        r = self.act(self.operator, "blink", message="Due", interval=60, quiet="none", time_limit_from=23,
                     time_limit_to=7, **CONTACT)  # fmt: skip
        p = self.queued(r).params["action_params"]
        assert "time_limit" not in p and "days_limit" not in p

    def test_a_day_span_without_its_hours_is_explained_on_the_hours(self):
        self.client.force_login(self.operator)
        r = self.act(self.operator, "blink", message="Due", interval=60, quiet="span", days_limit_from=0,
                     days_limit_to=1, **CONTACT)  # fmt: skip
        assert not Job.objects.exists()
        page = (
            unescape(self.client.get(r["Location"]).content.decode())
            if r.status_code == 302
            else unescape(r.content.decode())
        )
        assert "Quiet days also need the quiet hours" in page

    def test_an_operator_gets_403_on_lock_unlock_complete_and_delete(self):
        for action, state in (("lock", "Enrolled"), ("unlock", "Locked"), ("complete", "Enrolled"),
                              ("delete", "Completed")):  # fmt: skip
            r = self.act(self.operator, action, state, message="Pay", **CONTACT)
            assert r.status_code == 403, action
        assert not Job.objects.exists() and not AuditEvent.objects.filter(action__startswith="guard.").exists()

    def test_a_viewer_gets_403_and_nothing_is_queued(self):
        for action in ("blink", "message", "lock", "approve"):
            assert self.act(self.viewer, action, message="x", interval=60, **CONTACT).status_code == 403
        assert not Job.objects.exists()

    def test_an_anonymous_user_is_sent_to_login_and_nothing_is_queued(self):
        r = Client().post(self.url, {"action": "lock", "message": "x", **CONTACT})
        assert r.status_code == 302 and r["Location"].startswith("/login/")
        assert not Job.objects.exists()

    def test_it_rejects_get_with_405(self):
        self.client.force_login(self.admin)
        assert self.client.get(self.url).status_code == 405

    def test_it_refuses_an_action_the_state_does_not_allow(self):
        r = self.act(self.admin, "unlock", "Pending")
        self.assertRedirects(r, f"/guard/devices/{self.device.pk}/", fetch_redirect_response=False)
        page = unescape(self.client.get(r["Location"]).content.decode())
        assert "“Unlock” is not possible now: the device is Pending" in page
        assert not Job.objects.exists()

    def test_it_refuses_a_device_another_job_is_acting_on(self):
        busy = Job.objects.create(kind="guard.blink", account=self.account)
        GuardDevice.objects.filter(pk=self.device.pk).update(pending_job=busy)
        r = self.act(self.operator, "message", message="Hi", **CONTACT)
        assert r.status_code == 302
        assert Job.objects.count() == 1

    def test_it_answers_400_for_an_unknown_action(self):
        assert self.act(self.admin, "format-phone").status_code == 400
        assert not Job.objects.exists()

    def test_invalid_parameters_rerender_the_page_with_the_field_error(self):
        cases = (
            ("blink", {"message": "Due", "interval": 2, **CONTACT}, "interval", "between 3 seconds and 86,400"),
            ("blink", {"message": "Due", "interval": 86401, **CONTACT}, "interval", "it is 86,401"),
            ("blink", {"message": "Due", "interval": "soon", **CONTACT}, "interval", "whole number"),
            ("message", {"message": "x" * 201, **CONTACT}, "message", "The message is 201 characters"),
            ("lock", {"message": "Pay"}, "tel", "Give a phone number or an email address"),
            ("lock", {"message": "", **CONTACT}, "message", "A message is required"),
            ("message", {"message": "Hi", "email": "not-an-email"}, "email", "does not look right"),
            ("blink", {"message": "Due", "interval": 60, "time_limit_from": 23, **CONTACT}, "time_limit_from",
             "exactly two hours"),
            ("blink", {"message": "Due", "interval": 60, "time_limit_from": 23, "time_limit_to": 24, **CONTACT},
             "time_limit_from", "exactly two hours"),
            ("blink", {"message": "Due", "interval": 60, "days_limit_from": 0, "days_limit_to": 1, **CONTACT},
             "time_limit_from", "Quiet days also need the quiet hours"),
            ("approve", {"approve_id": "A" * 51}, "approve_id", "The approve ID is 51 characters"),
            ("approve", {"approve_comment": "c" * 1001}, "approve_comment", "allows 1000"),
        )  # fmt: skip
        for action, data, field, text in cases:
            state = "Pending" if action == "approve" else "Enrolled"
            r = self.act(self.admin, action, state, **data)
            assert r.status_code == 200, (action, data)
            assert b"<html" in r.content
            bound = next(f for f in r.context["action_forms"] if f.is_bound)
            assert bound.action == action and text in " ".join(bound.errors[field]), (action, bound.errors)
            assert text in unescape(r.content.decode())
        assert not Job.objects.exists() and not AuditEvent.objects.filter(action__startswith="guard.").exists()

    def test_it_refuses_an_account_that_cannot_call_knox_guard(self):
        self.account.set_secret("client_identifier", "")
        self.account.save()
        r = self.act(self.admin, "lock", message="Pay", **CONTACT)
        assert r.status_code == 302 and not Job.objects.exists()


# --- against the sandbox ------------------------------------------------------------------------------------


def test_a_single_blink_from_the_detail_page_reaches_knox(client, guard_synced, knox_sandbox):
    operator = make_user("olivia", "operator")
    device = device_in(guard_synced, "Enrolled")
    client.force_login(operator)
    assert "blink" in shown_actions(client.get(f"/guard/devices/{device.pk}/").content.decode())
    r = client.post(f"/guard/devices/{device.pk}/act/", {"action": "blink", "message": "Your payment is due",
                    "email": "pay@example.org", "interval": 3600, "time_limit_from": 23, "time_limit_to": 7})  # fmt: skip
    job = Job.objects.get(kind="guard.blink")
    assert r.status_code == 302 and r["Location"] == f"/guard/jobs/{job.pk}/"
    run_actions(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error_summary
    device.refresh_from_db()
    assert device.state == "StartingReminder" and device.last_outcome == "succeeded"
    knox = requests.get(f"{knox_sandbox.url}/_sandbox/state", timeout=10).json()["guard"]["devices"][device.device_uid]
    assert knox["state"] in ("StartingReminder", "Blinked")
    page = unescape(client.get(f"/guard/devices/{device.pk}/").content.decode())
    assert "Start payment reminders" in page and f'href="/guard/jobs/{job.pk}/"' in page
    assert "Active → Starting Reminder" in page
