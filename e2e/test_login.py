"""Logging in and out through the login form."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from e2e.conftest import Session


def test_operator_logs_in_and_out(ui: Session) -> None:
    page = ui.page
    # Every page but the login page needs a login, and the login comes back to the page asked for.
    page.goto(ui.url("/kdp/devices/"))
    expect(page).to_have_url(re.compile(r"/login/\?next=/kdp/devices/$"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()

    page.get_by_label("Username").fill("e2e-operator")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".errors")).to_contain_text("Please enter a correct username and password")
    expect(page.locator(".usermenu")).to_have_count(0)

    page.get_by_label("Username").fill("e2e-operator")
    page.get_by_label("Password").fill(ui.stack.password("e2e-operator"))
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(ui.url("/kdp/devices/"))
    expect(page.locator(".usermenu .who")).to_have_text("e2e-operator")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(
        ["Dashboard", "KDP", "Knox Guard", "E-FOTA", "Jobs", "Audit", "Accounts"]
    )
    expect(page.locator(".usermenu").get_by_role("link", name="Admin")).to_have_count(0)  # not staff

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    expect(page.locator("body")).to_contain_text("Logged in")  # the recent activity lists the login (in words)

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(ui.url("/login/"))
    expect(page.locator(".usermenu")).to_have_count(0)
    page.goto(ui.url("/"))
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
