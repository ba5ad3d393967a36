"""KDP in the browser: spreadsheet → preview → customer and KME profile (HTMX) → live progress → results, report
and the device list. The job runs on the real django-q2 cluster against the Knox sandbox."""

from __future__ import annotations

import io
import re
from pathlib import Path

from openpyxl import load_workbook
from playwright.sync_api import expect

from e2e.conftest import Session

# The copy of ../shared/samples the unit tests use too (tests/kdp/conftest.py).
MIXED = Path(__file__).resolve().parents[1] / "tests" / "data" / "samples" / "kdp-upload-mixed.csv"

# tests/data/samples/README.md, kdp-upload-mixed.csv: row 2, 3 valid; row 4 valid after removing dashes; row 5
# valid after trimming spaces; row 6 wrong check digit; row 7 only 14 digits; row 8 contains letters; row 9 duplicate
# of row 3; row 10 empty (skipped, not an error); row 11 sixteen digits (an IMEISV, not an IMEI).
EXPECTED_VERDICTS = {
    2: "Valid",
    3: "Valid",
    4: "Valid",
    5: "Valid",
    6: "Invalid",
    7: "Invalid",
    8: "Invalid",
    9: "Duplicate in file",
    10: "Empty, skipped",
    11: "Invalid",
}
VALID_IMEIS = ["359221145350335", "351121670763365", "355488840597445", "358060368779353"]


def stat(session: Session, label: str) -> int:
    """A figure of the preview's counts row, e.g. stat(s, "valid") for "4 valid"."""
    item = session.page.locator("#upload-status .stat-row li").filter(has_text=re.compile(rf"^\s*\d+\s+{label}"))
    return int(item.locator("strong").inner_text().replace(",", ""))


def test_upload_preview_confirm_progress_results(ui: Session, kdp_customers: None) -> None:
    page = ui.page
    ui.login("e2e-operator")
    customer = next(c for c in ui.stack.credentials["customers"] if c["status"] == "Verified")
    other = [c for c in ui.stack.credentials["customers"] if c["customerId"] != customer["customerId"]]
    alias = customer["profileAliases"][-1]

    # 1. File
    page.get_by_role("navigation", name="Main").get_by_role("link", name="KDP").click()
    page.get_by_role("navigation", name="KDP").get_by_role("link", name="Upload spreadsheet").click()
    page.get_by_label("Spreadsheet").set_input_files(MIXED)
    page.get_by_label("Knox account").select_option(label="Sandbox")
    page.get_by_role("button", name="Read the file").click()

    # 2. Review: the page polls while the worker reads the file, then shows the verdicts.
    expect(page).to_have_url(re.compile(r"/kdp/uploads/\d+/$"))
    expect(page.get_by_role("heading", name="What the file holds")).to_be_visible()
    counts = {label: stat(ui, label) for label in ("valid", "invalid", "duplicate", "already registered", "empty")}
    assert counts == {"valid": 4, "invalid": 4, "duplicate": 1, "already registered": 0, "empty": 1}
    verdicts = {}
    for row in page.locator("#preview-rows tbody tr").all():
        cells = row.locator("td")
        verdicts[int(cells.nth(0).inner_text())] = cells.nth(3).inner_text().strip()
    assert verdicts == EXPECTED_VERDICTS
    sent_as = page.locator("#preview-rows tbody tr.row-valid td:nth-child(3)").all_inner_texts()
    assert sorted(sent_as) == sorted(VALID_IMEIS)
    # Row 9 names the row it repeats; row 7 offers nothing it cannot know; the problem rows can be downloaded.
    expect(page.locator("#preview-rows tbody tr").filter(has_text="351121670763365").last).to_contain_text("3")
    expect(page.get_by_role("link", name=re.compile(r"Download the 5 problem rows"))).to_be_visible()

    # The status filter swaps the rows in place (HTMX).
    page.evaluate("window.__e2eMarker = 'preview'")
    with ui.htmx_swap():
        page.locator("#preview-rows select").select_option("valid")
    expect(page.locator("#preview-rows tbody tr")).to_have_count(4)
    with ui.htmx_swap():
        page.locator("#preview-rows select").select_option("")
    expect(page.locator("#preview-rows tbody tr")).to_have_count(10)
    assert page.evaluate("window.__e2eMarker") == "preview"

    # 3. Customer and profile: the alias list is empty until a customer is chosen, then loaded from the portal.
    aliases = page.locator("#id_profile_alias option")
    expect(aliases).to_have_count(1)
    expect(aliases).to_have_text(["Choose a customer first"])
    filter_box = page.get_by_placeholder("Type to filter customers")
    filter_box.fill(customer["name"])
    for c in other:
        expect(page.locator("#id_customer option", has_text=c["customerId"])).to_be_hidden()
    filter_box.fill("")
    page.locator("#id_customer").select_option(label=f"{customer['name']} ({customer['customerId']})")
    expect(aliases).to_have_text(["No KME profile (register only)", *customer["profileAliases"]])
    page.locator("#id_profile_alias").select_option(alias)
    page.get_by_label("Order number (optional)").fill("PO-E2E-1")
    assert page.evaluate("window.__e2eMarker") == "preview"
    ui.screenshot("upload-preview")

    # 4. Progress: the bar fills on its own; the page never navigates while it does.
    page.get_by_role("button", name="Register 4 devices").click()
    expect(page).to_have_url(re.compile(r"/kdp/jobs/\d+/$"))
    job_url = page.url
    progress = page.locator(".job-progress")
    page.evaluate("window.__e2eMarker = 'job'")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    first_status = progress.locator(".badge").inner_text()
    assert first_status in ("Queued", "Running"), f"the job had already ended ({first_status}) when its page opened"
    expect(progress.locator(".badge")).to_have_text(re.compile("Running|Succeeded"))  # the first poll's answer
    ui.screenshot("job-progress")
    expect(progress.locator(".pct")).to_have_text("100%")
    expect(progress.locator(".badge")).to_have_text("Succeeded")
    expect(progress.locator("progress")).to_have_attribute("value", "100")
    expect(progress.locator(".counters")).to_contain_text("Succeeded4")
    # The buttons follow the job's status without a reload: a finished job cannot be cancelled any more.
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    expect(page.get_by_role("link", name="Download report (Excel)")).to_be_visible()
    assert page.evaluate("window.__e2eMarker") == "job", "the job page was reloaded"
    assert navigations == [] and page.url == job_url

    # The per-device results refreshed themselves when the job ended (jobFinished).
    results = page.locator("#job-results tbody tr")
    expect(results).to_have_count(4)
    expect(results.locator(".badge")).to_have_text(["Succeeded"] * 4)
    assert sorted(results.locator("td:first-child").all_inner_texts()) == sorted(VALID_IMEIS)
    expect(page.locator("dl.facts")).to_contain_text(alias)
    ui.screenshot("job-results")

    # The results as Excel.
    with page.expect_download() as info:
        page.get_by_role("link", name="Download report (Excel)").click()
    download = info.value
    assert download.suggested_filename.endswith("-report.xlsx")
    data = Path(download.path()).read_bytes()
    assert data[:2] == b"PK" and len(data) > 1000
    sheet = load_workbook(io.BytesIO(data), read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0] == "IMEI / serial"
    assert sorted(str(r[0]) for r in rows[1:]) == sorted(VALID_IMEIS)
    assert {r[2] for r in rows[1:]} == {"succeeded"}
    assert page.url == job_url

    # The device list finds one of them by IMEI prefix (HTMX swap of the table).
    page.get_by_role("navigation", name="Main").get_by_role("link", name="KDP").click()
    page.get_by_role("navigation", name="KDP").get_by_role("link", name="Devices").click()
    expect(page.locator("#device-table tbody tr")).not_to_have_count(0)
    page.evaluate("window.__e2eMarker = 'devices'")
    page.get_by_label("IMEI / serial / MEID starts with").fill(VALID_IMEIS[3][:10])
    page.get_by_role("button", name="Search").click()
    rows_shown = page.locator("#device-table tbody tr")
    expect(rows_shown).to_have_count(1)
    expect(rows_shown).to_contain_text(VALID_IMEIS[3])
    expect(rows_shown).to_contain_text(customer["name"])
    expect(rows_shown).to_contain_text(alias)
    expect(rows_shown.locator(".badge")).to_have_text("Registered")
    assert page.evaluate("window.__e2eMarker") == "devices"
    ui.screenshot("devices")

    rows_shown.get_by_role("link", name=VALID_IMEIS[3]).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(VALID_IMEIS[3])

    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#recent-jobs")).to_contain_text("Succeeded")
    ui.screenshot("dashboard")
