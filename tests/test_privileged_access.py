"""Privileged secret access is governed: security and admins stop tokens, but do not mint passwords of tokens they do
not own, neither directly nor by handing the token to themselves first."""

from __future__ import annotations

import pytest

from accessreq.models import AuditEvent, PasswordSlot, Token, TokenStatus
from tests.conftest import login

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(ready_request) -> Token:
    return Token.objects.get(request=ready_request)


def test_security_and_admins_cannot_rotate_a_token_they_do_not_own(token, security, admin_user) -> None:
    for user in (security, admin_user):
        client = login(user)
        assert client.post(f"/tokens/{token.pk}/rotate").status_code == 403
        assert "Rotate the password" not in client.get(f"/tokens/{token.pk}/").content.decode()
    assert PasswordSlot.objects.filter(token=token).count() == 1
    assert not AuditEvent.objects.filter(action="token.rotated").exists()


def test_the_api_says_the_same(token, security) -> None:
    from django.test import Client

    from accessreq import apikeys

    _, raw = apikeys.create(security, "matrix")
    response = Client(headers={"Authorization": f"Bearer {raw}"}).post(f"/api/v1/tokens/{token.pk}/rotate")
    assert response.status_code == 403


def test_security_cannot_hand_a_token_to_themselves(token, security) -> None:
    response = login(security).post(f"/tokens/{token.pk}/transfer", {"to": security.username})
    assert response.status_code == 403
    assert Token.objects.get(pk=token.pk).owner.username == "alice"


def test_security_still_stops_and_hands_over_any_token(token, security, second_approver) -> None:
    client = login(security)
    assert client.post(f"/tokens/{token.pk}/disable", {"reason": "Leaked"}).status_code == 302
    assert Token.objects.get(pk=token.pk).status == TokenStatus.DISABLED
    assert client.post(f"/tokens/{token.pk}/enable").status_code == 302
    assert client.post(f"/tokens/{token.pk}/transfer", {"to": second_approver.username}).status_code == 302
    assert Token.objects.get(pk=token.pk).owner == second_approver
    assert client.post(f"/tokens/{token.pk}/retire").status_code == 302


def test_the_owner_rotates(token, requester) -> None:
    from accessreq import slots

    slots.reveal(PasswordSlot.objects.get(token=token), requester, None)
    assert login(requester).post(f"/tokens/{token.pk}/rotate").status_code == 302
    assert AuditEvent.objects.filter(action="token.rotated").exists()
