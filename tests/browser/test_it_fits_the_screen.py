"""Every page fits a phone's width without scrolling sideways, and every table fits its card on a laptop.

The data is the kind that made pages too wide: a token during rotation (one password being generated, one to
reveal), an unmanaged token found by reconcile, an API key, a request waiting for approval and an audit log.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from django.test import Client

from accessreq import reconcile, slots
from accessreq.models import PasswordSlot, SlotStatus, Token, WebhookDelivery, WebhookEndpoint
from tests.browser.conftest import sign_in
from tests.conftest import PASSWORD, SUBSCRIPTION, request_data

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1366, "height": 900}

# How far the page, and each table, reach beyond where they should end; zero when everything fits.
MEASURE = """() => {
  const page = document.documentElement.scrollWidth - window.innerWidth;
  const tables = [...document.querySelectorAll("main table")].map((table) => {
    const box = table.closest(".card") || table.closest("main");
    const style = getComputedStyle(box);
    const inner = box.getBoundingClientRect().right - parseFloat(style.paddingRight)
      - parseFloat(style.borderRightWidth);
    const wrap = table.closest(".table-wrap");
    return {
      caption: (table.caption && table.caption.textContent.trim()) || "table",
      beyondBox: Math.max(0, Math.round(table.getBoundingClientRect().right - inner)),
      hiddenInWrap: wrap ? Math.max(0, wrap.scrollWidth - wrap.clientWidth) : 0,
    };
  });
  return {page, tables};
}"""


def _login(username: str) -> Client:
    client = Client()
    client.login(username=username, password=PASSWORD)
    return client


def _handmade_token(acr: object, name: str, actions: list[str]) -> None:
    from acr_emulator.testing import make_client

    sdk = make_client(acr.url, subscription_id=SUBSCRIPTION)  # type: ignore[attr-defined]
    rg, reg = "portal-rg", "contosotest"
    sdk.scope_maps.begin_create(rg, reg, f"{name}-map", {"properties": {"actions": actions}}).result()
    registry_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries"
    scope_map_id = f"{registry_id}/{reg}/scopeMaps/{name}-map"
    sdk.tokens.begin_create(rg, reg, name, {"properties": {"scopeMapId": scope_map_id}}).result()


@pytest.fixture
def rotating_token(ready_request: object, requester: object, approver: object, acr: object, registry: object) -> Token:
    """alice's token after Rotate, its new password still being generated; a second request waits for bob;
    reconcile has found a token made by hand; alice has an API key."""
    alice = _login("alice")
    assert alice.post(f"/requests/{ready_request.pk}/reveal").status_code == 200  # type: ignore[attr-defined]
    token = Token.objects.get(request=ready_request)
    assert alice.post(f"/tokens/{token.pk}/rotate").status_code == 302
    assert alice.post("/api-keys/", {"name": "deploy-pipeline", "days": "30"}).status_code == 200
    alice.post("/requests/new", request_data(registry, **{"rules-0-repository": "myapp/a-rather-long-repository/name"}))
    _handmade_token(acr, "legacy-puller-from-the-old-build-farm", ["repositories/legacy/app/content/read"])
    reconcile.reconcile(registry)  # type: ignore[arg-type]
    hook = WebhookEndpoint.objects.create(name="Security operations centre", url="https://hooks.example/x", secret="s")
    WebhookDelivery.objects.create(
        endpoint=hook, event="unmanaged_token.found", payload={}, status="failed", attempts=6, last_status_code=503,
        last_error="the receiver answered 503",
    )
    return token


def _overflows(page: Page, urls: list[str]) -> dict[str, object]:
    found: dict[str, object] = {}
    for url in urls:
        page.goto(url)
        measured = page.evaluate(MEASURE)
        if measured["page"] > 0:
            found[f"{url} page"] = measured["page"]
        for table in measured["tables"]:
            if table["beyondBox"] or table["hiddenInWrap"]:
                found[f"{url} {table['caption']}"] = (table["beyondBox"], table["hiddenInWrap"])
    return found


def _visit_all(page: Page, token: Token, request_pk: int, check: object) -> dict[str, object]:
    found: dict[str, object] = {}
    sign_in(page, "alice")
    pages = ["/", "/requests/", f"/requests/{request_pk}/", "/requests/new", "/tokens/", f"/tokens/{token.pk}/"]
    found |= check(page, [*pages, "/api-keys/"])  # type: ignore[operator]
    # The new password is generated: a Reveal button takes the place of "being generated…".
    slots.generate_slot(PasswordSlot.objects.get(token=token, status=SlotStatus.GENERATING).pk)
    found |= {f"{k} (to reveal)": v for k, v in check(page, [f"/tokens/{token.pk}/"]).items()}  # type: ignore[operator]
    # The page that shows the password once, with its long commands; and a page that is not there.
    page.get_by_role("button", name="Reveal password2").click()
    page.get_by_role("heading", name=re.compile("^The password for")).wait_for()
    if (reveal := page.evaluate(MEASURE)["page"]) > 0:
        found["reveal page"] = reveal
    found |= check(page, ["/tokens/999999/"])  # type: ignore[operator]
    sign_in(page, "bob")
    found |= check(page, ["/approvals/"])  # type: ignore[operator]
    sign_in(page, "sam")
    found |= check(page, ["/security/", "/audit/", "/tokens/", f"/tokens/{token.pk}/", "/security/webhooks"])  # type: ignore[operator]
    return found


def test_it_never_scrolls_sideways_on_a_phone(page: Page, rotating_token: Token, security: object) -> None:
    page.set_viewport_size(PHONE)
    token = rotating_token
    found = _visit_all(page, token, token.request_id, lambda p, urls: {
        k: v for k, v in _overflows(p, urls).items() if k.endswith(("page", "page (to reveal)"))
    })
    assert found == {}


def test_it_fits_each_table_in_its_card_on_a_laptop(page: Page, rotating_token: Token, security: object) -> None:
    page.set_viewport_size(LAPTOP)
    token = rotating_token
    found = _visit_all(page, token, token.request_id, _overflows)
    assert found == {}
