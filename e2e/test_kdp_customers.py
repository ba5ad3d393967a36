"""KDP in the browser with several customers (issue 16): one spreadsheet whose customer column names two customers
is registered as one job per customer, each with its own profile alias; then deleting those devices while choosing
the wrong customer is caught in the preview, and "delete each device from the customer it is registered to" deletes
them from their own customers. Both run on the real cluster against the sandbox."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from e2e.conftest import Session
from portal.identifiers import luhn_check_digit


def fresh_imeis(n: int, prefix: str) -> list[str]:
    bodies = [f"{prefix}{i:06d}" for i in range(1, n + 1)]
    return [b + luhn_check_digit(b) for b in bodies]


def read_file(session: Session, path: str, operation: str) -> None:
    page = session.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="KDP").click()
    page.get_by_role("navigation", name="KDP").get_by_role("link", name="Upload spreadsheet").click()
    page.get_by_label("Spreadsheet").set_input_files(path)
    page.get_by_label("Knox account").select_option(label="Sandbox")
    page.get_by_label(operation).check()
    page.get_by_role("button", name="Read the file").click()
    expect(page).to_have_url(re.compile(r"/kdp/uploads/\d+/$"))
    expect(page.get_by_role("heading", name="What the file holds")).to_be_visible()


def wait_for_submitted_jobs(session: Session, n: int) -> None:
    """On a preview submitted as `n` jobs: open each and wait until it succeeded."""
    page = session.page
    preview = page.url
    links = page.get_by_role("link", name=re.compile(r"^job #\d+$"))
    expect(links).to_have_count(n)
    urls = [session.url(href) for href in (links.nth(i).get_attribute("href") for i in range(n)) if href]
    for url in urls:
        page.goto(url)
        expect(page.locator(".job-progress .badge")).to_have_text("Succeeded")
    page.goto(preview)


def test_one_file_for_two_customers_then_delete_from_where_each_is_registered(ui: Session, kdp_customers: None) -> None:
    page = ui.page
    ui.login("e2e-operator")
    verified = [c for c in ui.stack.credentials["customers"] if c["status"] == "Verified" and c["profileAliases"]]
    first, second = verified[:2]
    imeis = fresh_imeis(4, "35866601")
    # The first customer by name (in another case), the second by Knox customer ID.
    rows = [(imeis[0], first["name"].upper()), (imeis[1], first["name"]), (imeis[2], second["customerId"])]
    rows.append((imeis[3], second["customerId"]))
    sheet = ui.stack.tmp / "two-customers.csv"
    sheet.write_text("IMEI,Customer\n" + "".join(f"{imei},{customer}\n" for imei, customer in rows))

    # 1. Register: the preview groups the rows by customer, one alias per customer, one confirmation.
    read_file(ui, str(sheet), "Register devices")
    groups = page.locator("#file-customers tbody tr")
    expect(groups).to_have_count(2)
    for customer in (first, second):
        group = groups.filter(has_text=customer["customerId"])
        expect(group.locator("td").nth(2)).to_have_text("2")
        expect(group.locator(".badge")).to_have_text("Yes")
    page.get_by_label(re.compile(f"KME profile alias for {re.escape(first['name'])}")).select_option(
        first["profileAliases"][0]
    )
    page.get_by_label(re.compile(f"KME profile alias for {re.escape(second['name'])}")).select_option(
        second["profileAliases"][-1]
    )
    ui.screenshot("kdp-multi-customer")
    page.get_by_role("button", name="Queue 2 jobs, one per customer").click()
    expect(page.locator(".messages")).to_contain_text("2 jobs queued, one per customer")
    wait_for_submitted_jobs(ui, 2)

    # The device list shows each device under its own customer with its own alias.
    page.goto(ui.url(f"/kdp/devices/?q={imeis[2]}"))
    expect(page.locator("#device-table tbody tr")).to_have_count(1)
    expect(page.locator("#device-table tbody tr")).to_contain_text(second["profileAliases"][-1])

    # 2. Delete all four while choosing the first customer: the preview says which are registered elsewhere.
    delete = ui.stack.tmp / "delete-four.csv"
    delete.write_text("IMEI\n" + "".join(f"{imei}\n" for imei in imeis))
    read_file(ui, str(delete), "Delete devices")
    recorded = page.locator("#recorded-customers")
    expect(recorded).to_contain_text(f"2 devices registered to {first['name']}")
    expect(recorded).to_contain_text(f"2 devices registered to {second['name']}")
    with ui.htmx_swap():
        page.locator("#id_customer").select_option(label=f"{first['name']} ({first['customerId']})")
    check = page.locator("#customer-check")
    expect(check).to_contain_text("2 devices are registered to another customer")
    for imei in imeis[2:]:
        expect(check.locator("tbody")).to_contain_text(imei)

    # Sending it anyway is refused before Knox.
    page.get_by_role("button", name="Delete 4 devices").click()
    expect(page.locator("p.error").filter(has_text="Knox refuses to delete a device from a customer")).to_contain_text(
        "2 of the 4 devices are registered to another customer"
    )
    expect(page).to_have_url(re.compile(r"/kdp/uploads/\d+/(confirm/)?$"))

    # 3. Delete each from the customer it is registered to: one job per customer, all succeed.
    page.locator("#id_customer").select_option(label=f"{first['name']} ({first['customerId']})")
    page.get_by_label("Delete each device from the customer it is registered to (one job per customer)").check()
    page.get_by_role("button", name="Delete 4 devices").click()
    expect(page.locator(".messages")).to_contain_text("2 jobs queued, one per customer")
    wait_for_submitted_jobs(ui, 2)
    page.goto(ui.url(f"/kdp/devices/?q={imeis[0]}"))
    expect(page.locator("#device-table tbody tr .badge")).to_have_text("Deleted")
