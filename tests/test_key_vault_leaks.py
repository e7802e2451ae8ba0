"""A password delivered to Key Vault, and its rotation, exist in the vault only: not in a log line, an e-mail, a
broker message, a task's arguments, a page or API answer, or any column of any table."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery.signals import before_task_publish
from django.core import mail

from accessreq import keyvault
from accessreq.models import AccessRequest, AllowedVault, PasswordSlot, RequestStatus, SlotStatus, Token
from tests.conftest import login, request_data, wait_until
from tests.test_no_secret_leaks import _every_cell

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_delivered_password_is_in_the_vault_and_nowhere_else(
    celery_worker, acr: Any, settings: Any, registry, requester, approver, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    vault_url = acr.create_vault("leakkv")
    settings.KEY_VAULT_CREDENTIAL = "emulator"
    settings.KEY_VAULT_CA_BUNDLE = acr.key_vault_ca_bundle
    keyvault._credential.cache_clear()
    AllowedVault.objects.create(registry=registry, url=vault_url)
    published: list[str] = []

    def capture(body: object = None, headers: object = None, **kwargs: object) -> None:
        published.append(f"{body!r} {headers!r}")

    before_task_publish.connect(capture, weak=False)
    try:
        alice, bob = login(requester), login(approver)
        data = request_data(registry, delivery="key_vault", key_vault=vault_url, secret_name="leak-check")
        assert alice.post("/requests/new", data).status_code == 302
        req = AccessRequest.objects.get()
        bob.post(f"/requests/{req.pk}/decide", {"decision": "approve"})
        wait_until(lambda: AccessRequest.objects.get(pk=req.pk).status == RequestStatus.READY)
        _, password = keyvault.read_current(vault_url, "leak-check")
        token = Token.objects.get()
        assert alice.post(f"/api/v1/tokens/{token.pk}/rotate").status_code == 202
        wait_until(lambda: PasswordSlot.objects.get(token=token, name="password2").status == SlotStatus.DELIVERED)
        _, rotated = keyvault.read_current(vault_url, "leak-check")
        later_pages = [
            alice.get(f"/requests/{req.pk}/").content.decode(),
            alice.get(f"/tokens/{token.pk}/").content.decode(),
            alice.post(f"/requests/{req.pk}/reveal").content.decode(),
            alice.get("/api/v1/tokens").content.decode(),
            alice.get(f"/api/v1/requests/{req.pk}").content.decode(),
        ]
    finally:
        before_task_publish.disconnect(capture)

    assert len(password) >= 32 and len(rotated) >= 32 and password != rotated
    assert "delivered to Key Vault" in later_pages[2]
    assert published and caplog.records and mail.outbox
    places = {
        "logs": [r.getMessage() for r in caplog.records] + [caplog.text],
        "e-mails": [f"{m.subject} {m.body} {m.to}" for m in mail.outbox],
        "broker messages": published,
        "later pages": later_pages,
        "database": _every_cell(),
    }
    for where, texts in places.items():
        for secret in (password, rotated):
            assert not [t for t in texts if secret in t], f"a password was found in the {where}"
