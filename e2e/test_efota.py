"""E-FOTA in the browser: check a licence, register a group to it (a job on the worker) and see it registered."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from e2e.conftest import Session


def test_register_a_group(ui: Session) -> None:
    page = ui.page
    ui.login("e2e-operator")
    efota = ui.stack.credentials["efota"]
    group = "e2e-fleet-1"  # E-FOTA upper-cases group IDs; the portal shows them as E-FOTA keeps them

    page.get_by_role("navigation", name="Main").get_by_role("link", name="E-FOTA").click()
    # The E-FOTA forms offer the licences the portal knows: the first time, check the customer's licence.
    page.get_by_role("navigation", name="E-FOTA").get_by_role("link", name="Licences").click()
    check = page.locator("form", has=page.get_by_role("heading", name="Check a licence"))
    check.get_by_label("Knox account").select_option(label="Sandbox")
    check.get_by_label("E-FOTA customer ID").fill(efota["customer_id"])
    check.get_by_label("Licence").fill(efota["license"])
    check.get_by_role("button", name="Check licence").click()
    expect(page.locator(".efota-result")).to_contain_text(efota["license"])

    page.get_by_role("navigation", name="E-FOTA").get_by_role("link", name="Groups").click()
    form = page.locator("#register-group")
    form.get_by_label("Knox account").select_option(label="Sandbox")
    form.get_by_label("E-FOTA customer ID").fill(efota["customer_id"])
    form.get_by_label("Group ID").fill(group)
    form.get_by_label("Licence").fill(efota["license"])
    form.get_by_role("button", name="Register group").click()

    expect(page).to_have_url(re.compile(r"/efota/jobs/\d+/$"))
    expect(page.locator(".job-progress .badge")).to_have_text("Succeeded")
    expect(page.locator(".job-progress .pct")).to_have_text("100%")
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text(group.upper())
    expect(facts).to_contain_text(efota["license"])
    # The group's state in the facts is re-read when the job ends, without reloading the page.
    expect(facts.locator(".badge")).to_have_text("Registered")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="E-FOTA").click()
    page.get_by_role("navigation", name="E-FOTA").get_by_role("link", name="Groups").click()
    row = page.locator("tr", has=page.get_by_text(group.upper(), exact=True))
    expect(row).to_have_count(1)
    expect(row).to_contain_text(efota["customer_id"])
    expect(row).to_contain_text(efota["license"])
    expect(row.locator(".badge")).to_have_text("Registered")
    ui.screenshot("efota-groups")
