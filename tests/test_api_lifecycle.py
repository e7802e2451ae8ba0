"""The token lifecycle over the API: the same functions, rights and refusals as the pages."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accessreq import slots
from accessreq.models import AuditEvent, PasswordSlot, SlotStatus, Token, TokenStatus
from acr_emulator.dataplane import allowed_actions
from tests.test_api import API, _api

pytestmark = pytest.mark.django_db


def _post(client: Client, path: str, body: object = None):
    data = json.dumps(body) if body is not None else ""
    return client.post(f"{API}{path}", data, content_type="application/json")


@pytest.fixture
def token(ready_request, requester) -> Token:
    assert _post(_api(requester), f"/requests/{ready_request.pk}/reveal").status_code == 200
    return Token.objects.get(request=ready_request)


def test_it_rotates_and_reveals_the_new_password_once(token, requester, acr, django_capture_on_commit_callbacks):
    alice = _api(requester)
    with django_capture_on_commit_callbacks() as queued:
        response = _post(alice, f"/tokens/{token.pk}/rotate")
    assert response.status_code == 202
    assert [p["name"] for p in response.json()["passwords"]] == ["password1", "password2"]
    assert len(queued) == 1  # the generation task, on commit
    slots.generate_slot(PasswordSlot.objects.get(token=token, name="password2").pk)

    first = _post(alice, f"/tokens/{token.pk}/passwords/password2/reveal")
    assert first.status_code == 200 and first["Cache-Control"].startswith("no-store")
    password = first.json()["password"]
    assert allowed_actions(acr.state, "contosotest", token.name, password, "myapp/api")
    assert _post(alice, f"/tokens/{token.pk}/passwords/password2/reveal").status_code == 410
    assert _post(alice, f"/tokens/{token.pk}/rotate").status_code == 409  # the switch is not confirmed yet
    confirmed = _post(alice, f"/tokens/{token.pk}/confirm-switch")
    assert confirmed.status_code == 200
    statuses = {p["name"]: p["status"] for p in confirmed.json()["passwords"]}
    assert statuses == {"password1": SlotStatus.REVOKED, "password2": SlotStatus.REVEALED}


def test_it_disables_enables_and_retires(token, requester, approver, acr) -> None:
    bob = _api(approver)
    refused = _post(bob, f"/tokens/{token.pk}/disable", {"reason": " "})
    assert refused.status_code == 400 and "reason" in refused.json()["errors"]
    disabled = _post(bob, f"/tokens/{token.pk}/disable", {"reason": "leaked"})
    assert disabled.status_code == 200 and disabled.json()["status"] == TokenStatus.DISABLED
    assert disabled.json()["status_reason"] == "leaked"
    assert _post(_api(requester), f"/tokens/{token.pk}/enable").json()["status"] == TokenStatus.ACTIVE
    assert _post(bob, f"/tokens/{token.pk}/retire").status_code == 403  # an approver may stop it, not retire it
    retired = _post(_api(requester), f"/tokens/{token.pk}/retire", {"reason": "replaced"})
    assert retired.json()["status"] == TokenStatus.RETIRING and retired.json()["delete_after"]
    assert _post(_api(requester), f"/tokens/{token.pk}/disable", {"reason": "x"}).status_code == 409
    assert AuditEvent.objects.filter(action__startswith="token.").count() >= 3


def test_it_hides_tokens_from_outsiders(token, outsider, approver) -> None:
    olive = _api(outsider)
    for path in ("rotate", "enable", "retire", "confirm-switch", "passwords/password1/reveal"):
        assert _post(olive, f"/tokens/{token.pk}/{path}").status_code == 404
    assert olive.get(f"{API}/tokens/{token.pk}").status_code == 404
    assert _post(_api(approver), f"/tokens/{token.pk}/passwords/password1/reveal").status_code == 403
    assert _api(approver).get(f"{API}/tokens/{token.pk}/rotate").status_code == 405
    assert Client().post(f"{API}/tokens/{token.pk}/rotate").status_code == 401
