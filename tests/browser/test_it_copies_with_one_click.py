"""Copy buttons beside the one-time password, the commands that use it, and a new API key; "Copied" is announced."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _clipboard(page: Page) -> str:
    return page.evaluate("navigator.clipboard.readText()")


def test_it_copies_the_password_and_the_login_command(page: Page, ready_request: object) -> None:
    from playwright.sync_api import expect

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, "alice")
    page.goto(f"/requests/{ready_request.pk}/")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Reveal the password").click()
    secret = page.get_by_role("textbox", name=re.compile(r"^Password"))
    password = secret.inner_text().strip()
    assert len(password) >= 20

    page.get_by_role("button", name="Copy the password").click()
    assert _clipboard(page) == password
    expect(page.get_by_role("status")).to_have_text("Copied the password.")
    expect(page.get_by_role("button", name="Copy the password")).to_have_text("Copied")

    page.get_by_role("button", name="Copy the docker login command").click()
    assert re.fullmatch(
        r"printf '%s' \"\$ACR_PASSWORD\" \| docker login \S+ --username \S+ --password-stdin", _clipboard(page)
    )
    expect(page.get_by_role("status")).to_have_text("Copied the docker login command.")
    assert password not in _clipboard(page)


def test_it_copies_a_new_api_key(page: Page, requester: object) -> None:
    from playwright.sync_api import expect

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, "alice")
    page.goto("/api-keys/")
    expect(page.get_by_role("button", name=re.compile("^Copy"))).to_have_count(0)  # no key shown, nothing to copy
    page.get_by_label("Name").fill("deploy")
    page.get_by_role("button", name="Make the key").click()
    key = page.get_by_role("textbox", name="API key").inner_text().strip()
    page.get_by_role("button", name="Copy the API key").click()
    assert _clipboard(page) == key
    expect(page.get_by_role("status")).to_have_text("Copied the API key.")


def test_it_shows_the_password_without_javascript(browser: object, live_server: object, ready_request: object) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        sign_in(page, "alice")
        page.goto(f"/requests/{ready_request.pk}/")  # type: ignore[attr-defined]
        page.get_by_role("button", name="Reveal the password").click()
        expect(page.get_by_role("textbox", name=re.compile(r"^Password"))).to_have_text(re.compile(r"\S{20,}"))
        expect(page.get_by_role("button", name=re.compile("^Copy"))).to_have_count(0)
    finally:
        context.close()
