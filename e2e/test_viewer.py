"""A viewer reads every page but is offered no action, and the server refuses the actions anyway."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from e2e.conftest import Session

# Every control that would change something: a submit button of a POST form (but logging out), or an HTMX write.
STATE_CHANGING_CONTROLS = """() => {
  const controls = [];
  for (const form of document.querySelectorAll("form")) {
    if (form.method.toLowerCase() !== "post" || new URL(form.action).pathname === "/logout/") continue;
    for (const b of form.querySelectorAll("button:not([type=button]):not([type=reset]), input[type=submit], input[type=image]")) {
      controls.push(`${form.getAttribute("action")}: ${b.textContent.trim() || b.value}`);
    }
  }
  for (const el of document.querySelectorAll("[hx-post], [hx-put], [hx-patch], [hx-delete]")) {
    controls.push(`htmx: ${el.outerHTML.slice(0, 80)}`);
  }
  return controls;
}"""


def no_actions(session: Session) -> None:
    assert session.page.evaluate(STATE_CHANGING_CONTROLS) == [], f"{session.page.url} offers actions to a viewer"


def test_viewer_sees_no_actions_and_is_refused(ui: Session, guard_devices: None, kdp_customers: None) -> None:
    page = ui.page
    ui.login("e2e-viewer")
    no_actions(ui)  # the dashboard

    # KDP: the upload page is for operators only, and the menu does not offer it.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="KDP").click()
    kdp_nav = page.get_by_role("navigation", name="KDP")
    expect(kdp_nav.get_by_role("link")).to_have_text(["Overview", "Devices", "Customers", "Transactions", "Reconcile"])
    no_actions(ui)
    ui.problems.allow(r"status of 403 \(Forbidden\)")  # the browser logs the refused pages below
    response = page.goto(ui.url("/kdp/uploads/"))
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.locator("input[type=file]")).to_have_count(0)
    no_actions(ui)

    page.goto(ui.url("/kdp/devices/"))
    expect(page.locator("#device-table tbody tr").first).to_be_visible()
    expect(page.locator("#device-table input[type=checkbox]")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Delete"))).to_have_count(0)
    no_actions(ui)
    ui.screenshot("viewer-devices")

    page.goto(ui.url("/kdp/customers/"))
    expect(page.get_by_role("heading", name="Sandbox", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Refresh from Knox")).to_have_count(0)
    no_actions(ui)

    # Knox Guard: the device page shows the device and its history, not its actions.
    page.goto(ui.url("/guard/"))
    expect(page.get_by_role("button", name="Sync devices from Knox")).to_have_count(0)
    no_actions(ui)
    page.get_by_role("navigation", name="Knox Guard").get_by_role("link", name="Devices").click()
    locked = next(d for d in ui.stack.credentials["guard"]["devices"] if d["state"] == "Locked")
    page.get_by_role("link", name=locked["deviceUid"]).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(locked["deviceUid"])
    expect(page.locator("#device-actions")).to_have_count(0)
    no_actions(ui)
    device_path = re.sub(r"^https?://[^/]+", "", page.url)

    # E-FOTA: the groups are listed, without the register and change-licence forms.
    page.goto(ui.url("/efota/"))
    no_actions(ui)
    page.get_by_role("navigation", name="E-FOTA").get_by_role("link", name="Groups").click()
    expect(page.get_by_role("heading", name="Groups", exact=True)).to_be_visible()
    expect(page.locator("#register-group")).to_have_count(0)
    expect(page.get_by_role("button", name="Change licence")).to_have_count(0)
    no_actions(ui)

    # The server refuses the actions themselves (403 from the permission check, with a valid CSRF token).
    page.goto(ui.url("/accounts/"))
    account_path = page.get_by_role("link", name="Sandbox", exact=True).get_attribute("href")
    account_pk = re.search(r"/accounts/(\d+)/", account_path or "").group(1)
    jobs_before = ui.page.request.get(ui.url("/jobs/")).text().count("badge-")
    token = ui.csrf_token()
    efota = ui.stack.credentials["efota"]
    attempts = {
        f"/kdp/customers/{account_pk}/refresh/": {},
        "/kdp/uploads/": {"account": account_pk, "operation": "upload"},
        f"{device_path}act/": {"action": "complete"},
        "/guard/bulk/": {"account": account_pk},
        "/efota/groups/register/": {
            "account": account_pk,
            "customer_id": efota["customer_id"],
            "group_id": "VIEWER-GROUP",
            "licence": efota["license"],
        },
    }
    for path, form in attempts.items():
        answer = page.request.post(ui.url(path), form=form, headers={"X-CSRFToken": token}, max_redirects=0)
        assert answer.status == 403, f"POST {path} answered {answer.status}"
        assert "CSRF" not in answer.text(), f"POST {path} was refused for its CSRF token, not for the permission"
    assert ui.page.request.get(ui.url("/jobs/")).text().count("badge-") == jobs_before, "a viewer's POST queued a job"

    # The same token is good: logging out with it works.
    out = page.request.post(ui.url("/logout/"), headers={"X-CSRFToken": token}, max_redirects=0)
    assert out.status == 302 and out.headers["location"].endswith("/login/")
