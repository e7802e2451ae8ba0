"""Bad input on a token's page is answered beside the field it concerns, with what was typed kept; nothing changes."""

from __future__ import annotations

import pytest

from accessreq.models import AuditEvent, Token, TokenStatus
from tests.conftest import login

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(ready_request, requester) -> Token:
    login(requester).post(f"/requests/{ready_request.pk}/reveal")
    return Token.objects.get(request=ready_request)


def test_it_says_beside_the_field_who_cannot_take_the_token(token, requester) -> None:
    events = AuditEvent.objects.count()
    response = login(requester).post(f"/tokens/{token.pk}/transfer", {"to": "nobdy"})
    assert response.status_code == 400
    body = response.content.decode()
    error = '<ul class="errorlist" id="transfer-to-error"><li>No active user is called &#x27;nobdy&#x27;.</li></ul>'
    assert error in body
    assert 'value="nobdy"' in body and 'aria-describedby="transfer-to-error" aria-invalid="true" autofocus' in body
    token.refresh_from_db()
    assert token.owner == requester and AuditEvent.objects.count() == events


def test_it_says_beside_the_field_that_a_reason_is_needed(token, requester) -> None:
    events = AuditEvent.objects.count()
    response = login(requester).post(f"/tokens/{token.pk}/disable", {"reason": "   "})
    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="disable-reason-error"><li>Say why the token is disabled' in body
    assert 'aria-describedby="disable-reason-help disable-reason-error" aria-invalid="true" autofocus' in body
    token.refresh_from_db()
    assert token.status == TokenStatus.ACTIVE and AuditEvent.objects.count() == events


def test_it_still_reports_a_conflict_at_the_top(token, requester) -> None:
    alice = login(requester)
    assert alice.post(f"/tokens/{token.pk}/retire", {"reason": "replaced"}).status_code == 302
    response = alice.post(f"/tokens/{token.pk}/disable", {"reason": "leaked"}, follow=True)
    assert response.status_code == 200
    assert "This token is retiring" in response.content.decode()
    assert 'id="disable-reason-error"' not in response.content.decode()


def test_it_still_hides_the_token_from_outsiders(token, outsider) -> None:
    assert login(outsider).post(f"/tokens/{token.pk}/transfer", {"to": "nobody"}).status_code == 404


def test_it_says_beside_the_field_where_the_password_should_be_recorded(token, requester) -> None:
    events = AuditEvent.objects.count()
    typed = "x" * 501
    response = login(requester).post(f"/tokens/{token.pk}/storage", {"location": typed})
    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="storage-location-error"><li>Keep it to 500 characters.' in body
    assert f'value="{typed}"' in body and 'storage-location-error" aria-invalid="true" autofocus' in body
    assert AuditEvent.objects.count() == events
