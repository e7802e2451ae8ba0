"""A claim held by a dead worker is not "done", lost work is re-driven in seconds, and every error ends somewhere."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery import current_app
from django.utils import timezone

from accessreq import enqueue, jobs, provisioning, slots
from accessreq.models import (
    AccessRequest,
    AuditEvent,
    OutboxMessage,
    PasswordSlot,
    RequestStatus,
    SlotStatus,
    Token,
)
from acr_emulator.dataplane import allowed_actions
from tests.conftest import login, request_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def approved(registry, requester, approver) -> AccessRequest:
    assert login(requester).post("/requests/new", request_data(registry)).status_code == 302
    req = AccessRequest.objects.get()
    login(approver).post(f"/requests/{req.pk}/decide", {"decision": "approve"})
    return AccessRequest.objects.get(pk=req.pk)


def _generations(acr) -> int:
    return len([c for c in acr.requests() if c["operation"] == "registries.generate_credentials"])


def _claimed_by_a_dead_worker(req: AccessRequest, seconds_ago: float) -> PasswordSlot:
    slot, _ = provisioning._ensure_in_registry(AccessRequest.objects.select_related("registry").get(pk=req.pk))
    PasswordSlot.objects.filter(pk=slot.pk).update(
        claimed_at=timezone.now() - timedelta(seconds=seconds_ago), claim_token="dead"
    )
    return slot


def test_it_is_not_ready_while_a_claimed_password_is_being_generated(approved, requester, acr, settings) -> None:
    settings.CLAIM_LEASE_SECONDS = 20
    slot = _claimed_by_a_dead_worker(approved, seconds_ago=1)
    delay = provisioning.provision(approved.pk)
    assert delay is not None and 1 <= delay <= 21  # look again when the claim would lapse
    req = AccessRequest.objects.get(pk=approved.pk)
    assert req.status == RequestStatus.PROVISIONING and req.provision_attempts == 0  # waiting is not an attempt
    assert _generations(acr) == 0
    # The claimer's heartbeat stopped a lease ago: the next run takes the claim over.
    PasswordSlot.objects.filter(pk=slot.pk).update(claimed_at=timezone.now() - timedelta(seconds=25))
    assert provisioning.provision(approved.pk) is None
    assert AccessRequest.objects.get(pk=approved.pk).status == RequestStatus.READY
    password = slots.reveal(PasswordSlot.objects.get(pk=slot.pk), requester, None).password
    assert allowed_actions(acr.state, "contosotest", approved.token_name, password, "myapp/api")


def test_a_request_claimed_by_a_live_run_is_left_to_it(approved, acr) -> None:
    AccessRequest.objects.filter(pk=approved.pk).update(claimed_at=timezone.now(), claim_token="alive")
    assert provisioning.provision(approved.pk) is not None
    assert acr.requests() == [] or _generations(acr) == 0
    assert AccessRequest.objects.get(pk=approved.pk).status == RequestStatus.APPROVED


def test_the_quick_sweep_redrives_dead_claims_and_lost_messages(approved, acr, settings) -> None:
    settings.CLAIM_LEASE_SECONDS = 20
    OutboxMessage.objects.update(sent_at=timezone.now())
    assert jobs.sweep_claims() == 0  # approved a moment ago: its message is on its way
    long_ago = timezone.now() - timedelta(seconds=30)
    AccessRequest.objects.filter(pk=approved.pk).update(
        status=RequestStatus.PROVISIONING, claimed_at=long_ago, claim_token="dead", updated_at=long_ago
    )
    assert jobs.sweep_claims() == 1
    assert jobs.sweep_claims() == 0  # touched, so not sent twice
    assert OutboxMessage.objects.filter(task=enqueue.PROVISION_REQUEST, sent_at__isnull=True).exists() or (
        OutboxMessage.objects.filter(task=enqueue.PROVISION_REQUEST).count() == 2
    )


def test_approve_commits_and_queues_through_the_outbox_when_the_broker_is_down(
    registry, requester, approver, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    assert login(requester).post("/requests/new", request_data(registry)).status_code == 302
    req = AccessRequest.objects.get()

    def broker_down(*args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(current_app, "send_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        response = login(approver).post(f"/requests/{req.pk}/decide", {"decision": "approve"})
    assert response.status_code == 302
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.APPROVED
    message = OutboxMessage.objects.get(task=enqueue.PROVISION_REQUEST)
    assert message.sent_at is None and "broker down" in message.last_error
    assert enqueue._broker_down_until > 0  # the next approvals leave their message to the relay at once
    sent: list[tuple[str, object]] = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args, **kw: sent.append((name, args)))
    OutboxMessage.objects.update(created_at=timezone.now() - timedelta(seconds=10))
    assert jobs.run("relay-outbox") == 1
    assert sent == [(enqueue.PROVISION_REQUEST, [req.pk])]
    assert jobs.run("relay-outbox") == 0
    assert enqueue._broker_down_until == 0  # the broker took one: sending at commit again


def test_a_permanent_error_fails_at_once_without_generating(approved, acr, settings) -> None:
    settings.PASSWORD_ENCRYPTION_KEYS = ["not-a-fernet-key"]
    from accessreq import vault

    vault._fernet.cache_clear()
    assert provisioning.provision(approved.pk) is None
    req = AccessRequest.objects.get(pk=approved.pk)
    assert req.status == RequestStatus.FAILED and "cannot be sealed" in req.failure_reason
    assert req.provision_attempts == 1
    assert _generations(acr) == 0  # no password was made to be lost
    # It took back what it made in the registry, and said so.
    assert acr.state.registries["contosotest"].tokens.get(approved.token_name) is None
    assert acr.state.registries["contosotest"].scope_maps.get(approved.token_name) is None
    assert not Token.objects.exists()
    assert AuditEvent.objects.get(action="request.cleaned_up").details["left"] == []


def test_an_unforeseen_error_counts_an_attempt_and_the_limit_applies(approved, acr, settings, monkeypatch) -> None:
    settings.PROVISIONING_MAX_ATTEMPTS = 2
    settings.PROVISIONING_RETRY_SECONDS = 0.01

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(provisioning, "_ensure_in_registry", broken)
    assert provisioning.provision(approved.pk) is not None
    assert provisioning.provision(approved.pk) is None
    req = AccessRequest.objects.get(pk=approved.pk)
    assert req.status == RequestStatus.FAILED
    assert "Gave up after 2 attempts" in req.failure_reason and "RuntimeError" in req.failure_reason


def test_an_admin_retry_after_a_failure_ends_ready(approved, requester, admin_user, acr, settings) -> None:
    from accessreq import flow

    settings.PROVISIONING_MAX_ATTEMPTS = 1
    acr.add_fault(count=1, operation="registries.generate_credentials", status=500)
    assert provisioning.provision(approved.pk) is None
    assert AccessRequest.objects.get(pk=approved.pk).status == RequestStatus.FAILED
    flow.retry(AccessRequest.objects.get(pk=approved.pk), admin_user, None)
    assert provisioning.provision(approved.pk) is None
    assert AccessRequest.objects.get(pk=approved.pk).status == RequestStatus.READY
    slot = PasswordSlot.objects.get(token__request=approved)
    assert slot.status == SlotStatus.AWAITING_REVEAL
