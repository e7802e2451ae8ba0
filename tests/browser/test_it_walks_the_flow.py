"""The whole flow in Chromium, with a real Celery worker and the emulator: file, approve twice, watch, reveal once.

A second test files a request with the keyboard alone, through a form error and its correction.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from django.utils import timezone

from accessreq.models import AccessRequest, RequestStatus
from tests.browser.conftest import TIMEOUT_MS, sign_in
from tests.conftest import PASSWORD

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from playwright.sync_api import Browser, BrowserContext, Page
    from pytest_django.live_server_helper import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Provisioning runs in the worker; the page only learns of it when it next polls. A bound, not a timing assertion.
SETTLE_MS = 30_000


@pytest.fixture
def another_browser(browser: Browser, live_server: LiveServer) -> Iterator[Callable[[], Page]]:
    """A page in a context of its own (its own cookies): another person at another computer."""
    contexts: list[BrowserContext] = []

    def new_page() -> Page:
        context = browser.new_context(base_url=live_server.url)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield new_page
    # Closed before the live server and the database go: a page left open would keep polling them.
    for context in contexts:
        context.close()


def test_it_walks_from_request_to_password(
    page: Page,
    another_browser: Callable[[], Page],
    celery_worker: object,
    registry: object,
    requester: object,
    approver: object,
    second_approver: object,
) -> None:
    from playwright.sync_api import expect

    # Alice files a request to push and pull myapp/api, and watches the preview say what it will create.
    sign_in(page, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New request").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New access request")
    expect(page.get_by_role("link", name="New request")).to_have_attribute("aria-current", "page")
    page.get_by_label("Registry").select_option(label="contosotest")
    page.get_by_label("Repository 1").fill("myapp/api")
    actions = page.get_by_role("group", name="Actions on repository 1")
    actions.get_by_label("content/read (pull)").check()
    actions.get_by_label("content/write (push)").check()
    page.get_by_label("Purpose").fill("The payments CI pipeline pushes the api image.")
    page.get_by_label("Client").select_option(label="CI pipeline")
    page.get_by_label("Team").fill("Payments")
    page.get_by_label("Password lifetime (days)").fill("14")
    page.get_by_label("Retirement date").fill((timezone.localdate() + timedelta(days=60)).isoformat())

    preview = page.locator("#preview")
    expect(preview).to_contain_text("repositories/myapp/api/content/read")
    expect(preview).to_contain_text("repositories/myapp/api/content/write")
    expect(preview).to_contain_text("Scope map (2 of at most 500 actions)")
    expect(preview).to_contain_text("ci-payments-N")
    expect(preview.get_by_role("listitem").filter(has_text="myapp-owners")).to_contain_text(
        re.compile(r"2 approvals for myapp/api\.\s+From bob, carol\.")
    )
    page.get_by_role("button", name="File the request").last.click()

    expect(page.get_by_role("heading", level=1)).to_contain_text(re.compile(r"^Request #\d+: ci-payments-\d+$"))
    req = AccessRequest.objects.get()
    assert req.status == RequestStatus.PENDING
    assert req.password_days == 14
    expect(page.get_by_role("status").first).to_contain_text(f"Request #{req.pk} is filed")
    status = page.locator("#request-status")
    expect(status).to_contain_text("Waiting for approval")

    # Bob approves from his queue; the row changes in place, without leaving the queue.
    bob = another_browser()
    sign_in(bob, "bob")
    bob.get_by_role("link", name="Approvals").click()
    row = bob.locator(f"#queue-row-{req.pk}")
    expect(row).to_contain_text("myapp/api")
    expect(row).to_contain_text("The payments CI pipeline pushes the api image.")
    bob.get_by_label(f"Comment on request #{req.pk}").fill("Fine for CI.")
    row.get_by_role("button", name=f"Approve request #{req.pk}").click()
    expect(row.get_by_role("status")).to_contain_text("Your decision is recorded.")
    expect(bob).to_have_url(re.compile(r"/approvals/$"))
    expect(row.get_by_role("button", name=re.compile("Approve"))).to_have_count(0)
    req.refresh_from_db()
    assert req.status == RequestStatus.PENDING  # a write needs a second approval

    # Carol approves from the request's page.
    carol = another_browser()
    sign_in(carol, "carol")
    carol.get_by_role("link", name="Approvals").click()
    carol.get_by_role("link", name=re.compile(rf"^#{req.pk}\b")).click()
    expect(carol.get_by_role("heading", level=1)).to_contain_text(f"Request #{req.pk}")
    carol.get_by_role("button", name="Approve").click()
    expect(carol.get_by_role("status").first).to_contain_text(f"Your decision on request #{req.pk} is recorded.")

    # Alice never reloads: her page polls, and shows the token ready with its password to reveal.
    expect(status.get_by_role("heading", name=re.compile("Status"))).to_contain_text("Ready", timeout=SETTLE_MS)
    expect(status.locator("li[aria-current=step]")).to_have_text("Ready")
    reveal = page.get_by_role("button", name="Reveal the password")
    expect(reveal).to_be_visible()
    # The same page in a second tab, left open from before the reveal.
    stale = page.context.new_page()
    stale.goto(page.url)
    expect(stale.get_by_role("button", name="Reveal the password")).to_be_visible()
    reveal.click()

    expect(page.get_by_role("heading", level=1)).to_have_text(f"The password for {req.token_name}")
    secret = page.get_by_role("textbox", name="Password (password1)", exact=True)
    expect(secret).to_have_text(re.compile(r"\S{20,}"))
    password = secret.inner_text().strip()
    server = registry.login_server  # type: ignore[attr-defined]
    login_command = f"docker login {server} --username {req.token_name} --password-stdin"
    expect(page.locator("pre").first).to_contain_text(login_command)

    # The tab left open still offers the button; pressing it is refused, and says when the password was revealed.
    stale.get_by_role("button", name="Reveal the password").click()
    expect(stale.get_by_role("heading", level=1)).to_have_text("The password cannot be shown")
    refusal = stale.get_by_role("alert")
    expect(refusal).to_contain_text("This password has already been revealed.")
    expect(refusal).to_contain_text(re.compile(r"It was revealed on \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"))
    assert password not in stale.content()

    # Going back, and loading the request's page again, shows the password as revealed, with when, and no button.
    page.go_back()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Request #{req.pk}")
    page.reload()
    slot = page.locator("#request-status")
    revealed = r"password1[^·]*· [^·]*expires in \d+ days\s*· revealed \d{4}-\d{2}-\d{2} \d{2}:\d{2}"
    expect(slot).to_contain_text(re.compile(revealed))
    expect(page.get_by_role("button", name="Reveal the password")).to_have_count(0)
    assert password not in page.content()


def _tab_to(page: Page, selector: str, limit: int = 80) -> None:
    """Press Tab until the element matching `selector` has the focus, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def _focused(page: Page) -> str:
    return page.evaluate("document.activeElement.id || document.activeElement.tagName")


def test_it_files_a_request_with_the_keyboard_alone(
    page: Page, registry: object, requester: object, approver: object, second_approver: object
) -> None:
    from playwright.sync_api import expect

    page.goto("/accounts/login/")
    assert _focused(page) == "id_username"
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^Welcome"))

    # The first Tab reaches the skip link, which shows itself and moves the focus to the main content.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#main$"))
    expect(page.locator("main")).to_be_focused()

    _tab_to(page, "a.button.primary[href='/requests/new']")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("New access request")

    # A repository in capitals, and Enter pressed in a text field: the request is not filed.
    _tab_to(page, "#id_registry")
    _tab_to(page, "#id_rules-0-repository")
    page.keyboard.type("MyApp")
    _tab_to(page, "#id_rules-0-actions_0")
    page.keyboard.press("Space")
    _tab_to(page, "#id_rules-0-actions_1")
    page.keyboard.press("Space")
    _tab_to(page, "#id_purpose")
    page.keyboard.type("The payments CI pipeline pushes the api image.")
    _tab_to(page, "#id_team")
    page.keyboard.type("Payments")
    page.keyboard.press("Enter")

    # The summary has the focus, in view, and says what is wrong; the error sits by its field and is tied to it.
    summary = page.get_by_role("alert")
    expect(summary).to_be_focused()
    expect(summary).to_be_in_viewport()
    expect(summary).to_contain_text("The request was not filed")
    repository = page.get_by_label("Repository 1")
    expect(repository).to_have_attribute("aria-invalid", "true")
    expect(repository).to_have_accessible_description("Repository names are lowercase.")
    expect(repository).to_have_value("MyApp")
    expect(page.locator("#id_rules-0-repository_error")).to_be_visible()
    assert AccessRequest.objects.count() == 0

    # The summary's link leads to the field; correcting it and pressing Enter files the request.
    page.keyboard.press("Tab")
    link = summary.get_by_role("link", name="Repository 1: Repository names are lowercase.")
    expect(link).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#id_rules-0-repository$"))
    expect(repository).to_be_focused()
    expect(repository).to_be_in_viewport()
    page.keyboard.press("Control+A")
    page.keyboard.type("myapp/api")
    expect(page.locator("#preview")).to_contain_text("repositories/myapp/api/content/write")
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", level=1)).to_contain_text(re.compile(r"^Request #\d+: ci-payments-\d+$"))
    req = AccessRequest.objects.get()
    assert req.rules == [{"repository": "myapp/api", "actions": ["content/read", "content/write"]}]
    assert req.team == "Payments"
