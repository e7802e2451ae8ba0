"""A password slot gets the same guarantees as a request: a lost message is sent again, a slot that keeps failing ends
FAILED with the reason, an admin can retry it, and a failed rotation leaves the old password in place."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accessreq import acr as registry_api
from accessreq import jobs, slots, tokens
from accessreq.models import AuditEvent, PasswordSlot, SlotStatus, Token
from portal.celery import app as celery_app
from tests.conftest import login, wait_until

GENERATE = "registries.generate_credentials"


@pytest.fixture
def token(ready_request, requester) -> Token:
    """alice's token with its first password revealed, so a rotation may start."""
    assert login(requester).post(f"/requests/{ready_request.pk}/reveal").status_code == 200
    return Token.objects.get(request=ready_request)


def _slot(token: Token, name: str) -> PasswordSlot:
    return PasswordSlot.objects.get(token=token, name=name)


def _delete_behind_the_portals_back(token: Token) -> None:
    """Someone with Azure access deletes the token: generating a password for it fails for good (404)."""
    registry_api.delete_token(token.registry, token.name)


def _put_back(token: Token) -> None:
    registry_api.ensure_token(token.registry, token.name, token.scope_map_name)


@pytest.mark.django_db(transaction=True)
def test_it_sends_a_lost_generation_again(token, requester, request, settings) -> None:
    tokens.rotate(token, requester, None)
    celery_app.control.purge()  # the message is lost, as in a broker restart
    request.getfixturevalue("celery_worker")
    assert _slot(token, "password2").status == SlotStatus.GENERATING
    assert jobs.sweep_stuck() == 0  # queued a moment ago: not stuck yet
    with time_machine.travel(timezone.now() + timedelta(minutes=settings.PROVISIONING_STUCK_MINUTES + 1)):
        assert jobs.sweep_stuck() == 1
        assert jobs.sweep_stuck() == 0  # touched, so not sent twice
        wait_until(lambda: _slot(token, "password2").status == SlotStatus.AWAITING_REVEAL)


def test_it_fails_a_slot_the_registry_refuses_and_keeps_the_old_password(token, requester, acr) -> None:
    tokens.rotate(token, requester, None)
    assert _slot(token, "password1").retire_after is not None
    _delete_behind_the_portals_back(token)
    assert slots.generate(_slot(token, "password2").pk) is None
    failed = _slot(token, "password2")
    assert failed.status == SlotStatus.FAILED and "404" in failed.failure_reason
    assert AuditEvent.objects.filter(action="password.failed").count() == 1
    # The rotation is off: the old password stays, with no deadline, and a new rotation may start.
    assert _slot(token, "password1").status == SlotStatus.REVEALED
    assert _slot(token, "password1").retire_after is None
    response = login(requester).post(f"/tokens/{token.pk}/reveal/password2")
    assert response.status_code == 410 and b"could not be generated" in response.content


def test_it_gives_up_after_the_attempt_limit(token, requester, acr, settings) -> None:
    settings.PROVISIONING_MAX_ATTEMPTS = 2
    tokens.rotate(token, requester, None)
    slot_id = _slot(token, "password2").pk
    acr.add_fault(count=5, status=503, retry_after=1, operation=GENERATE)
    assert slots.generate(slot_id) is not None  # transient: try again
    assert slots.generate(slot_id) is None  # the second of two attempts: no more
    assert _slot(token, "password2").status == SlotStatus.FAILED
    assert "Gave up after 2 attempts" in _slot(token, "password2").failure_reason


def test_it_lets_an_admin_retry_a_failed_slot(
    token, requester, admin_user, security, acr, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    tokens.rotate(token, requester, None)
    _delete_behind_the_portals_back(token)
    with django_capture_on_commit_callbacks(execute=True):
        slots.generate(_slot(token, "password2").pk)
    _put_back(token)
    assert any("password2" in m.body or "password2" in m.subject for m in mailoutbox)  # the owner is told
    url = f"/tokens/{token.pk}/retry/password2"
    assert login(requester).post(url).status_code == 403
    assert login(security).post(url).status_code == 403
    assert login(admin_user).get(url).status_code == 405
    assert login(admin_user).post(url).status_code == 302
    slot = _slot(token, "password2")
    assert (slot.status, slot.attempts, slot.failure_reason) == (SlotStatus.GENERATING, 0, "")
    assert AuditEvent.objects.filter(action="password.retried").count() == 1
    slots.generate(slot.pk)
    assert _slot(token, "password2").status == SlotStatus.AWAITING_REVEAL
    # Retrying a slot that did not fail changes nothing.
    response = login(admin_user).post(url, follow=True)
    assert b"Only a password that could not be generated can be retried." in response.content
    assert _slot(token, "password2").status == SlotStatus.AWAITING_REVEAL
