"""The revealed password as a .env file or a Kubernetes image pull Secret, made in the browser from the page: the
download asks the server for nothing, and without JavaScript the buttons are not there."""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Download, Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _text(download: Download) -> str:
    with open(download.path(), encoding="utf-8") as file:
        return file.read()


def _reveal(page: Page, ready_request: object) -> tuple[str, str, str]:
    """Reveal as alice; answer the login server, the username and the password the page shows."""
    page.goto(f"/requests/{ready_request.pk}/")  # type: ignore[attr-defined]
    with page.expect_response(re.compile(r"/reveal$")) as revealed:
        page.get_by_role("button", name="Reveal the password").click()
    cache_control = revealed.value.headers["cache-control"]
    assert "no-store" in cache_control and "private" in cache_control
    password = page.get_by_role("textbox", name=re.compile(r"^Password")).inner_text().strip()
    facts = page.locator("dl.facts")
    server = facts.locator("dt:has-text('Login server') + dd").inner_text().strip()
    username = facts.locator("dt:has-text('Username') + dd").inner_text().strip()
    return server, username, password


def test_it_downloads_a_dotenv_and_a_pull_secret(page: Page, ready_request: object) -> None:
    sign_in(page, "alice")
    server, username, password = _reveal(page, ready_request)
    assert len(password) >= 20 and server.endswith(".azurecr.io")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))

    with page.expect_download() as env_download:
        page.get_by_role("button", name="Download as .env").click()
    assert env_download.value.suggested_filename == f"{username.lower()}.env"
    env = _text(env_download.value)
    lines = dict(line.split("=", 1) for line in env.splitlines() if line and not line.startswith("#"))
    assert lines == {"ACR_REGISTRY": server, "ACR_USERNAME": username, "ACR_PASSWORD": password}

    with page.expect_download() as yaml_download:
        page.get_by_role("button", name="Download as a Kubernetes Secret").click()
    assert yaml_download.value.suggested_filename == f"{username.lower()}-pull-secret.yaml"
    manifest = _text(yaml_download.value)
    assert "\nkind: Secret\n" in manifest and "\ntype: kubernetes.io/dockerconfigjson\n" in manifest
    name = re.search(r"^  name: (\S+)$", manifest, re.MULTILINE)
    assert name and name.group(1) == username.lower()
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name.group(1)) and len(name.group(1)) <= 63
    encoded = re.search(r"^  \.dockerconfigjson: (\S+)$", manifest, re.MULTILINE)
    assert encoded
    config = json.loads(base64.b64decode(encoded.group(1)))
    entry = config["auths"][server]
    assert entry["username"] == username and entry["password"] == password
    assert base64.b64decode(entry["auth"]).decode() == f"{username}:{password}"
    assert password not in manifest  # only inside the base64, as Kubernetes expects

    # Both files came from the page: nothing was asked of the server, so the password crossed the wire once. (The
    # browser may fetch the site's icon whenever it likes; a static file carries nothing of the page's.)
    assert [url for url in asked if not url.startswith("blob:") and "/static/" not in url] == []


def test_it_names_the_secret_as_kubernetes_allows(page: Page, ready_request: object) -> None:
    sign_in(page, "alice")
    _reveal(page, ready_request)
    # The name is made from the username the page shows: one with capitals and odd characters still gives a name
    # that kubectl accepts.
    odd = "--Payments_CI..Build--" + "x" * 60
    page.locator("[data-downloads]").evaluate(f"box => box.setAttribute('data-username', '{odd}')")
    page.evaluate("document.querySelector('[data-downloads] .actions-row').replaceChildren()")
    page.add_script_tag(url="/static/download.js")
    with page.expect_download() as yaml_download:
        page.get_by_role("button", name="Download as a Kubernetes Secret").first.click()
    name = ("payments-ci-build-" + "x" * 60)[:63]
    assert yaml_download.value.suggested_filename == f"{name}-pull-secret.yaml"
    assert f"\n  name: {name}\n" in _text(yaml_download.value)


def test_it_leaves_the_commands_without_javascript(browser: object, live_server: object, ready_request: object) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        sign_in(page, "alice")
        page.goto(f"/requests/{ready_request.pk}/")  # type: ignore[attr-defined]
        page.get_by_role("button", name="Reveal the password").click()
        expect(page.get_by_role("textbox", name=re.compile(r"^Password"))).to_have_text(re.compile(r"\S{20,}"))
        expect(page.get_by_role("button", name=re.compile("^Download"))).to_have_count(0)
        expect(page.get_by_text("Or save the three as a file")).to_be_hidden()
        expect(page.get_by_text("kubectl create secret docker-registry")).to_be_visible()
    finally:
        context.close()
