"""Chromium's console stays free of errors while someone types quickly into the request form, and no page makes
the browser ask for a /favicon.ico that does not exist."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.conftest import PASSWORD

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_logs_no_error_when_previews_overtake_each_other(
    page: Page, registry: object, requester: object, approver: object
) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    asked: list[str] = []
    page.on("request", lambda req: asked.append(req.url) if req.url.endswith("/favicon.ico") else None)

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^Welcome"))
    page.goto("/requests/new")

    # Each box checked sends a preview at once, before the last one has answered; typing sends more.
    page.get_by_label("Registry").select_option(label="contosotest")
    page.get_by_label("Repository 1").press_sequentially("myapp/api", delay=20)
    actions = page.get_by_role("group", name="Actions on repository 1")
    for _ in range(2):  # each box on, then off again
        actions.get_by_label("content/read (pull)").click()
        actions.get_by_label("metadata/read").click()
        actions.get_by_label("content/write (push)").click()
    actions.get_by_label("content/read (pull)").click()
    actions.get_by_label("content/write (push)").click()
    page.get_by_label("Team").press_sequentially("Payments", delay=10)

    # The last preview wins: it shows the last state of the form (read and write, no metadata/read).
    preview = page.locator("#preview")
    expect(preview).to_contain_text("repositories/myapp/api/content/write")
    expect(preview).not_to_contain_text("metadata/read")
    expect(preview).to_contain_text("ci-payments-N")
    page.wait_for_load_state("networkidle")
    assert errors == []
    assert asked == []
