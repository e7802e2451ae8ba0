"""The token page tells the truth about its passwords: a disabled token's password is not "in use"."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accessreq.models import Token
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _slot_states(body: str) -> list[str]:
    return re.findall(r'<td data-label="State"><span class="badge[^"]*">([^<]+)</span>', body)


def test_it_shows_passwords_disabled_with_their_token(ready_request, requester) -> None:
    alice = Client()
    alice.login(username=requester.username, password=PASSWORD)
    assert alice.post(f"/requests/{ready_request.pk}/reveal").status_code == 200
    token = Token.objects.get(request=ready_request)
    assert _slot_states(alice.get(f"/tokens/{token.pk}/").content.decode()) == ["In use"]

    alice.post(f"/tokens/{token.pk}/disable", {"reason": "the pipeline is paused"})
    token.refresh_from_db()
    assert token.status == "disabled"
    assert _slot_states(alice.get(f"/tokens/{token.pk}/").content.decode()) == ["Disabled with the token"]


def test_its_history_is_its_own_not_a_namesakes(ready_request, requester) -> None:
    from accessreq import audit, history
    from accessreq.models import AccessRequest

    token = Token.objects.get(request=ready_request)
    # Another registry's request for a token of the same name, in the same audit log.
    stranger = AccessRequest.objects.get(pk=ready_request.pk)
    stranger.pk = None
    stranger.save()
    audit.record("request.provisioning", actor=None, target=stranger, details={"token": token.name})
    mine = list(history.for_token(token))
    assert mine and all(str(event.target_id) != str(stranger.pk) for event in mine)
    assert any(event.action == "request.provisioning" for event in mine)
