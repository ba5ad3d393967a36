"""Knox Guard in the browser: a single-device action from the device page (operator) and a bulk lock with typed
confirmation (admin: locking needs the control permission), each run by the worker against the sandbox."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from e2e.conftest import Session


def devices_in(session: Session, state: str) -> list[dict[str, Any]]:
    return [d for d in session.stack.credentials["guard"]["devices"] if d["state"] == state]


def test_blink_one_device_from_its_page(ui: Session, guard_devices: None) -> None:
    page = ui.page
    ui.login("e2e-operator")
    device = devices_in(ui, "Enrolled")[0]

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Knox Guard").click()
    page.get_by_role("navigation", name="Knox Guard").get_by_role("link", name="Devices").click()
    page.get_by_label("IMEI / serial / approve ID starts with").fill(device["deviceUid"])
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#device-table tbody tr")).to_have_count(1)
    page.get_by_role("link", name=device["deviceUid"]).click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("Active")  # the console's word for Enrolled
    actions = page.locator("#device-actions")
    # An operator without the control permission is not offered lock or complete on an Enrolled device.
    expect(actions.locator("details > summary")).to_have_count(2)
    expect(actions.locator("details > summary").first).to_contain_text("Start payment reminders")
    expect(actions.locator("details > summary").last).to_contain_text("Send a message")

    blink = actions.locator("details.action-blink")
    blink.locator("summary").click()
    blink.get_by_label("Message shown on the phone").fill("Your instalment is overdue: please pay to keep using it.")
    blink.get_by_label("Contact phone").fill("+44 20 7946 0000")
    blink.get_by_label("Repeat every (seconds)").fill("3600")
    blink.get_by_role("button", name="Start payment reminders").click()

    expect(page).to_have_url(re.compile(r"/guard/jobs/\d+/$"))
    expect(page.locator(".job-progress .badge")).to_have_text("Succeeded")
    expect(page.locator(".job-progress .pct")).to_have_text("100%")
    row = page.locator("#job-results tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(device["deviceUid"])
    expect(row.locator(".badge")).to_have_text("Succeeded")
    expect(row).to_contain_text("Active →")

    # The device page shows the action in its timeline.
    row.get_by_role("link", name=device["deviceUid"]).click()
    timeline = page.locator("table.table tbody tr").first
    expect(timeline).to_contain_text("Start payment reminders")
    expect(timeline).to_contain_text("e2e-operator")
    expect(timeline.locator(".badge")).to_have_text("Succeeded")
    ui.screenshot("guard-device")


def test_bulk_lock_needs_the_typed_confirmation(ui: Session, guard_devices: None) -> None:
    page = ui.page
    ui.login("e2e-admin")
    # Two Active phones (the blink test uses the first Enrolled one) and one already locked: the review says the
    # locked one cannot be locked, the typed confirmation counts only the others, and the job reports it as failed
    # without sending it.
    enrolled = devices_in(ui, "Enrolled")[1:]
    locked = devices_in(ui, "Locked")[:1]
    sheet = ui.stack.tmp / "guard-lock.csv"
    sheet.write_text("IMEI,Approve ID\n" + "".join(f"{d['deviceUid']},{d['approveId']}\n" for d in enrolled + locked))
    count = len(enrolled) + len(locked)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Knox Guard").click()
    page.get_by_role("link", name="Bulk action from a spreadsheet").first.click()
    page.get_by_label("Spreadsheet").set_input_files(sheet)
    page.get_by_label("Knox account").select_option(label="Sandbox")
    page.get_by_role("button", name="Read the file").click()

    expect(page).to_have_url(re.compile(r"/guard/bulk/\d+/$"))
    expect(page.get_by_role("heading", name="What the file holds")).to_be_visible()
    expect(page.locator("#upload-status .stat-row li.ok")).to_have_text(f"{count} valid")
    expect(page.locator("#preview-rows tbody tr.row-valid")).to_have_count(count)

    # Choosing the action swaps the review in (HTMX): every row checked for it, and lock asks for the typed
    # confirmation of the rows that can be locked.
    page.evaluate("window.__e2eMarker = 'bulk'")
    page.locator("nav.tabs").get_by_role("link", name="Lock", exact=True).click()
    expect(page).to_have_url(re.compile(r"/guard/bulk/\d+/\?action=lock$"))
    expect(page.locator("#bulk-action .notice")).to_contain_text(
        f"{len(locked)} of the {count} valid rows cannot succeed for “Lock”"
    )
    expect(page.locator("#preview-rows tbody tr.row-refused")).to_have_count(len(locked))
    form = page.locator("#bulk-action form")
    sent = len(enrolled)
    button = f"Lock: {sent} device{'s' if sent != 1 else ''}"
    expected = f"LOCK {sent}"
    expect(form.get_by_text(f"Type {expected} to confirm")).to_be_visible()
    assert page.evaluate("window.__e2eMarker") == "bulk"
    form.get_by_label("Message shown on the phone").fill("This phone is locked: the loan is overdue.")
    form.get_by_label("Contact email").fill("collections@example.com")
    confirmation = form.get_by_label(f"Type {expected} to confirm")

    # A wrong confirmation (every row of the file) is refused and nothing is queued.
    confirmation.fill(f"LOCK {count}")
    form.get_by_role("button", name=button).click()
    expect(page.locator(".typed-confirm .error")).to_contain_text(f"type exactly {expected}")
    expect(page).to_have_url(re.compile(r"/guard/bulk/\d+/confirm/$"))

    form = page.locator("#bulk-action form")
    form.get_by_label(f"Type {expected} to confirm").fill(expected)
    ui.screenshot("guard-bulk")
    form.get_by_role("button", name=button).click()

    expect(page).to_have_url(re.compile(r"/guard/jobs/\d+/$"))
    expect(page.locator(".job-progress .badge")).to_have_text("Partially failed")
    expect(page.locator(".job-progress .counters")).to_contain_text(f"Succeeded{len(enrolled)}")
    expect(page.locator(".job-progress .counters")).to_contain_text(f"Failed{len(locked)}")
    results = page.locator("#job-results tbody tr")
    expect(results).to_have_count(count)
    for d in enrolled:
        expect(results.filter(has_text=d["deviceUid"]).locator(".badge")).to_have_text("Succeeded")
    for d in locked:
        failed = results.filter(has_text=d["deviceUid"])
        expect(failed.locator(".badge")).to_have_text("Failed")
        expect(failed).to_contain_text("state does not allow this action")
    # Once the job has ended its buttons are re-read without a reload: no cancel any more, and no retry either:
    # every failure is the device's state, which a retry cannot fix; the page says so.
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("^Retry"))).to_have_count(0)
    expect(page.locator(".retry-note")).to_contain_text(f"{len(locked)} in a state that does not allow the action")
    ui.screenshot("guard-bulk-results")

    # The audit log keeps the typed text.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    expect(page.locator("body")).to_contain_text("Knox Guard: lock")
    expect(page.locator("body")).to_contain_text(f"Typed confirmation{expected}")
