"""The password is revealed once, to the requester only, and revoked if nobody reveals it in time."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accessreq import slots
from accessreq.errors import Gone
from accessreq.models import AuditEvent, PasswordSlot, RequestStatus, SealedPassword, SlotStatus
from acr_emulator.dataplane import allowed_actions
from tests.conftest import login, race

pytestmark = pytest.mark.django_db




def test_it_is_ready_with_a_sealed_password(ready_request) -> None:
    assert ready_request.status == RequestStatus.READY
    slot = PasswordSlot.objects.get()
    assert slot.status == SlotStatus.AWAITING_REVEAL
    assert SealedPassword.objects.filter(slot=slot).exists()
    assert slot.expires_at - timezone.now() > timedelta(days=29)


def test_it_reveals_once_with_no_store(ready_request, requester, acr) -> None:
    alice = login(requester)
    response = alice.post(f"/requests/{ready_request.pk}/reveal")
    body = response.content.decode()
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert 'hx-history="false"' in body
    assert "kubectl create secret docker-registry" in body
    password = response.context["revealed"].password
    assert allowed_actions(acr.state, "contosotest", ready_request.token_name, password, "myapp/api")
    assert not SealedPassword.objects.exists()
    # The detail page never shows it again.
    assert password not in alice.get(f"/requests/{ready_request.pk}/").content.decode()
    again = alice.post(f"/requests/{ready_request.pk}/reveal")
    assert again.status_code == 410
    assert "revealed on" in again.content.decode()
    refused = AuditEvent.objects.get(action="password.reveal_refused")
    assert refused.actor_name == "alice" and refused.source_ip == "127.0.0.1"


def test_it_lets_only_the_requester_reveal(ready_request, approver, security, outsider) -> None:
    assert login(approver).post(f"/requests/{ready_request.pk}/reveal").status_code == 403
    assert login(security).post(f"/requests/{ready_request.pk}/reveal").status_code == 403
    assert login(outsider).post(f"/requests/{ready_request.pk}/reveal").status_code == 404
    assert SealedPassword.objects.count() == 1
    assert PasswordSlot.objects.get().status == SlotStatus.AWAITING_REVEAL


def test_it_rejects_get_on_reveal(ready_request, requester) -> None:
    assert login(requester).get(f"/requests/{ready_request.pk}/reveal").status_code == 405
    assert SealedPassword.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_reveals_to_exactly_one_of_two_simultaneous_attempts(ready_request, requester) -> None:
    slot = PasswordSlot.objects.get()

    def attempt() -> slots.Revealed:
        fresh = PasswordSlot.objects.select_related("token__registry", "token__request").get(pk=slot.pk)
        return slots.reveal(fresh, requester, None)

    outcomes = race(attempt, attempt)
    revealed = [o for o in outcomes if isinstance(o, slots.Revealed)]
    refused = [o for o in outcomes if isinstance(o, Gone)]
    assert len(revealed) == 1 and len(refused) == 1
    assert refused[0].revealed_at is not None
    assert not SealedPassword.objects.exists()
    assert AuditEvent.objects.filter(action="password.revealed").count() == 1


def test_it_revokes_an_unrevealed_password_after_the_ttl(ready_request, requester, acr, settings) -> None:
    from acr_emulator.testing import make_client
    from tests.conftest import SUBSCRIPTION

    client = make_client(acr.url, subscription_id=SUBSCRIPTION)
    token = client.tokens.get("portal-rg", "contosotest", ready_request.token_name)
    assert [p.name for p in token.credentials.passwords] == ["password1"]

    with time_machine.travel(timezone.now() + timedelta(hours=settings.REVEAL_TTL_HOURS - 1)):
        assert slots.expire_unrevealed() == 0
    with time_machine.travel(timezone.now() + timedelta(hours=settings.REVEAL_TTL_HOURS, minutes=1)):
        assert slots.expire_unrevealed() == 1
        assert slots.expire_unrevealed() == 0  # once only
        response = login(requester).post(f"/requests/{ready_request.pk}/reveal")
    assert response.status_code == 410
    assert "revoked" in response.content.decode()
    assert PasswordSlot.objects.get().status == SlotStatus.REVOKED
    assert not SealedPassword.objects.exists()
    token = client.tokens.get("portal-rg", "contosotest", ready_request.token_name)
    assert not token.credentials.passwords


def test_it_generates_a_fresh_password_after_revocation(
    ready_request, requester, approver, settings, django_capture_on_commit_callbacks
) -> None:
    with time_machine.travel(timezone.now() + timedelta(hours=settings.REVEAL_TTL_HOURS + 1)):
        slots.expire_unrevealed()
    slot = PasswordSlot.objects.get()
    assert login(approver).post(f"/requests/{ready_request.pk}/new-password").status_code == 403
    with django_capture_on_commit_callbacks() as callbacks:
        assert login(requester).post(f"/requests/{ready_request.pk}/new-password").status_code == 302
    assert len(callbacks) == 1  # the generate task is queued on commit
    slots.generate_slot(slot.pk)
    response = login(requester).post(f"/requests/{ready_request.pk}/reveal")
    assert response.status_code == 200
    assert response.context["revealed"].password


def test_it_keeps_the_password_out_of_audit_and_mail(ready_request, requester, mailoutbox) -> None:
    password = login(requester).post(f"/requests/{ready_request.pk}/reveal").context["revealed"].password
    for event in AuditEvent.objects.all():
        assert password not in str(event.details) and password not in event.target_repr
    for message in mailoutbox:
        assert password not in message.body


def test_it_offers_downloads_without_copying_the_password_into_the_page(ready_request, requester) -> None:
    response = login(requester).post(f"/requests/{ready_request.pk}/reveal")
    body = response.content.decode()
    revealed = response.context["revealed"]
    # The files are made in the browser from the one place the password is shown; the page holds it once.
    assert body.count(revealed.password) == 1
    assert 'data-downloads data-login-server="' in body and 'data-password-from="secret" hidden' in body
    assert "/static/download.js" in body
    assert "no-store" in response["Cache-Control"]
