from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

PASSWORD = "demo-password"


@pytest.fixture
def alice(transactional_db: None) -> User:
    return User.objects.create_user("alice", "alice@example.com", PASSWORD, first_name="Alice", last_name="Archer")


def test_it_signs_in_and_out(page: Page, alice: User) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    # Anonymous visitors are sent to sign in, and come back to where they were going.
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^Welcome, Alice Archer"))

    page.get_by_role("button", name="Sign out").click()

    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))


def test_it_refuses_a_wrong_password(page: Page, alice: User) -> None:
    from playwright.sync_api import expect

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("alert")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
