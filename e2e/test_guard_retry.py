"""Knox Guard in the browser when Knox goes away (issue 16 items 1 and 2): the bulk review names the rows Knox would
refuse (a device the portal has never seen), the job whose Knox was unreachable ends with its devices not sent, and
"Retry the failed devices" asks for the same typed confirmation as the first time before it queues anything."""

from __future__ import annotations

import re
from typing import Any

import requests
from playwright.sync_api import expect

from e2e.conftest import Session


def set_faults(session: Session, **knobs: float) -> None:
    """Knox's behaviour, through the sandbox's fault switch (error=1.0: every call answers 500)."""
    answer = requests.post(session.stack.env["KNOX_SANDBOX_URL"] + "/_sandbox/faults", json=knobs, timeout=10)
    answer.raise_for_status()


def devices_in(session: Session, state: str) -> list[dict[str, Any]]:
    return [d for d in session.stack.credentials["guard"]["devices"] if d["state"] == state]


def test_a_retry_after_knox_came_back_needs_the_typed_confirmation(ui: Session, guard_devices: None) -> None:
    page = ui.page
    ui.login("e2e-admin")
    blinked = devices_in(ui, "Blinked")  # Blinked devices may be completed; no other test touches them
    never_seen = "358240051111110"
    sheet = ui.stack.tmp / "guard-complete.csv"
    sheet.write_text("IMEI\n" + "".join(f"{d['deviceUid']}\n" for d in blinked) + f"{never_seen}\n")
    n = len(blinked)
    expected = f"COMPLETE {n}"

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Knox Guard").click()
    page.get_by_role("link", name="Bulk action from a spreadsheet").first.click()
    page.get_by_label("Spreadsheet").set_input_files(sheet)
    page.get_by_label("Knox account").select_option(label="Sandbox")
    page.get_by_role("button", name="Read the file").click()
    expect(page.get_by_role("heading", name="What the file holds")).to_be_visible()

    # The review checks each row against the portal's records: the device it has never seen will not be sent.
    page.locator("nav.tabs").get_by_role("link", name="Complete (release from Knox Guard)").click()
    expect(page.locator("#bulk-action .notice")).to_contain_text(f"1 of the {n + 1} valid rows cannot succeed")
    refused = page.locator("#preview-rows tbody tr.row-refused")
    expect(refused).to_have_count(1)
    expect(refused).to_contain_text(never_seen)
    expect(refused).to_contain_text("not in the portal's records")

    # Knox goes away while the job runs: it waits, then ends with the devices not sent.
    set_faults(ui, error=1.0)
    try:
        form = page.locator("#bulk-action form")
        form.get_by_label("Type").fill(expected)
        form.get_by_role("button", name=f"Complete (release from Knox Guard): {n} devices").click()
        expect(page).to_have_url(re.compile(r"/guard/jobs/\d+/$"))
        # Each attempt is the HTTP layer's own retries (KNOX_MAX_RETRIES with backoff, about 8 s), then the job
        # waits out KNOX_OUTAGE_PATIENCE (4 s here) and tries once more: about 20 s in all, so allow a minute.
        expect(page.locator(".job-progress .badge")).to_have_text("Failed", timeout=60_000)
    finally:
        set_faults(ui)

    # Knox is back. The retry offers the devices that were not sent, and asks for the typed confirmation first.
    retry = page.locator("form.retry-form")
    button = retry.get_by_role("button", name=f"Retry the {n} failed devices")
    expect(button).to_be_visible()
    job_url = page.url
    button.click()  # without typing: refused, nothing queued
    expect(page.locator(".typed-confirm .error").first).to_contain_text(f"Type {expected} to confirm")
    expect(page).to_have_url(re.compile(re.escape(job_url) + "(retry/)?$"))  # the same job's page: no retry queued
    retry = page.locator("form.retry-form")
    retry.get_by_label(f"Type {expected} to confirm").fill(expected)
    ui.screenshot("guard-retry")
    retry.get_by_role("button", name=f"Retry the {n} failed devices").click()
    expect(page.locator(".messages")).to_contain_text(f"queued for {n} failed devices")
    expect(page.locator(".job-progress .badge")).to_have_text("Succeeded")
    results = page.locator("#job-results tbody tr")
    expect(results).to_have_count(n)
    for d in blinked:
        expect(results.filter(has_text=d["deviceUid"]).locator(".badge")).to_have_text("Succeeded")
