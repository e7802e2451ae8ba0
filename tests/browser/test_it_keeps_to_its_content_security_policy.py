"""Every page works under the strict Content-Security-Policy: Chromium reports no violation, and htmx still works."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.conftest import PASSWORD

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


def test_it_reports_no_violation(page: Page, registry, requester, approver, security, admin_user) -> None:
    from playwright.sync_api import expect

    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)

    def sign_in(username: str) -> None:
        page.context.clear_cookies()
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", level=1)).to_be_visible()

    sign_in("alice")
    page.goto("/requests/new")
    page.get_by_label("Repository 1").fill("myapp/api")
    page.get_by_label("content/read (pull)").first.check()
    page.get_by_label("Team").fill("Payments")
    # The preview is htmx: it appearing proves htmx runs under the policy.
    expect(page.locator("#preview")).to_contain_text("repositories/myapp/api", timeout=10_000)
    for url in ("/", "/requests/", "/tokens/", "/api-keys/", "/api/v1/docs"):
        page.goto(url)
    sign_in("bob")
    page.goto("/approvals/")
    sign_in("sam")
    for url in ("/security/", "/audit/"):
        page.goto(url)
    page.context.clear_cookies()
    page.goto("/admin/login/")
    page.get_by_label(re.compile("Username")).fill("root")
    page.get_by_label(re.compile("Password")).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto("/admin/accessreq/registry/add/")
    assert violations == []
