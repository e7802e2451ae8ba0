"""The token list filters as soon as a filter changes, like the request list; without JavaScript, Show does it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from accessreq.models import Token
from tests.browser.conftest import sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_filters_on_change(page: Page, ready_request: object) -> None:
    from playwright.sync_api import expect

    token = Token.objects.get(request=ready_request)
    sign_in(page, "alice")
    page.goto("/tokens/")
    expect(page.get_by_role("button", name="Show")).to_have_count(0)
    results = page.locator("#token-results")
    expect(results.get_by_role("link", name=token.name)).to_be_visible()

    page.get_by_label("Status").select_option(label="Retired")
    expect(results).to_contain_text("No tokens match these filters.")
    expect(page).to_have_url(re.compile(r"/tokens/\?.*\bstatus=retired&flag=&"))
    expect(page.locator("#token-results")).to_have_count(1)  # swapped, not nested
    expect(page.get_by_role("heading", level=1)).to_have_count(1)

    page.get_by_label("Status").select_option(label="Live")
    expect(results.get_by_role("link", name=token.name)).to_be_visible()
    page.get_by_label("Needing attention").select_option(index=1)
    expect(results).to_contain_text("No tokens match these filters.")


def test_it_filters_with_show_without_javascript(browser: object, live_server: object, ready_request: object) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        sign_in(page, "alice")
        page.goto("/tokens/")
        page.get_by_label("Status").select_option(label="Retired")
        page.get_by_role("button", name="Show").click()
        expect(page).to_have_url(re.compile(r"/tokens/\?.*\bstatus=retired"))
        expect(page.locator("#token-results")).to_contain_text("No tokens match these filters.")
    finally:
        context.close()
