"""Provisioning converges, never duplicates, fails permanently with a reason, and can be retried by an admin."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from accessreq import claims, provisioning, scopes, slots
from accessreq.models import AccessRequest, AuditEvent, PasswordSlot, RequestStatus, SealedPassword, SlotStatus, Token
from acr_emulator.testing import make_client
from tests.conftest import SUBSCRIPTION, login, race, request_data

pytestmark = pytest.mark.django_db




@pytest.fixture
def approved(registry, requester, approver) -> AccessRequest:
    assert login(requester).post("/requests/new", request_data(registry)).status_code == 302
    req = AccessRequest.objects.get()
    login(approver).post(f"/requests/{req.pk}/decide", {"decision": "approve"})
    req.refresh_from_db()
    assert req.status == RequestStatus.APPROVED
    return req


def _writes(emulator) -> list[dict]:
    return [c for c in emulator.requests() if c["method"] in {"PUT", "PATCH", "POST", "DELETE"}]


def test_it_creates_exactly_the_approved_scope_map(approved, acr) -> None:
    provisioning.provision(approved.pk)
    client = make_client(acr.url, subscription_id=SUBSCRIPTION)
    scope_map = client.scope_maps.get("portal-rg", "contosotest", approved.token_name)
    assert sorted(scope_map.actions) == [
        "repositories/myapp/api/content/read",
        "repositories/myapp/api/metadata/read",
    ]
    token = client.tokens.get("portal-rg", "contosotest", approved.token_name)
    assert token.status == "enabled" and token.scope_map_id.endswith(f"/scopeMaps/{approved.token_name}")
    stored = Token.objects.get()
    assert (stored.owner.username, stored.requester.username, stored.team) == ("alice", "alice", "Payments")
    assert stored.approvers == ["bob"]


def test_it_is_safe_to_run_twice(approved, acr) -> None:
    provisioning.provision(approved.pk)
    sealed = bytes(SealedPassword.objects.get().ciphertext)
    writes = len(_writes(acr))
    # As if the task were delivered again after the worker died before acknowledging it.
    AccessRequest.objects.filter(pk=approved.pk).update(status=RequestStatus.PROVISIONING)
    assert provisioning.provision(approved.pk) is None
    assert len(_writes(acr)) == writes  # no PUT, no new password
    assert bytes(SealedPassword.objects.get().ciphertext) == sealed
    assert Token.objects.count() == 1 and PasswordSlot.objects.count() == 1
    assert AccessRequest.objects.get(pk=approved.pk).status == RequestStatus.READY
    # And a third run on a ready request does nothing at all.
    assert provisioning.provision(approved.pk) is None
    assert len(_writes(acr)) == writes


def test_it_asks_to_retry_transient_errors_honouring_retry_after(approved, acr, settings) -> None:
    # A Retry-After past ACR_TIMEOUT is not waited out in the worker: the task is retried after it instead.
    settings.PROVISIONING_RETRY_SECONDS = 0.01
    settings.ACR_TIMEOUT = 1
    acr.add_fault(count=1, status=429, retry_after=2, operation="tokens.create")
    delay = provisioning.provision(approved.pk)
    assert delay is not None and 2 <= delay <= settings.CELERY_RETRY_MAX_DELAY
    assert AccessRequest.objects.get(pk=approved.pk).status == RequestStatus.PROVISIONING
    # Every worker holds back its writes until the Retry-After has passed, not only the one that was told.
    early = provisioning.provision(approved.pk)
    assert early is not None and early >= 0.5
    time.sleep(2)
    assert provisioning.provision(approved.pk) is None
    assert AccessRequest.objects.get(pk=approved.pk).status == RequestStatus.READY
    assert [c["status"] for c in acr.requests() if c["operation"] == "tokens.create"] == [429, 201]


def test_it_waits_out_a_short_retry_after_in_the_worker(approved, acr) -> None:
    acr.add_fault(count=1, status=429, retry_after=1, operation="tokens.create")
    started = time.monotonic()
    assert provisioning.provision(approved.pk) is None
    assert time.monotonic() - started >= 1
    assert AccessRequest.objects.get(pk=approved.pk).status == RequestStatus.READY
    assert [c["status"] for c in acr.requests() if c["operation"] == "tokens.create"] == [429, 201]


def test_it_gives_up_after_the_attempt_limit(approved, acr, settings, mailoutbox) -> None:
    settings.PROVISIONING_MAX_ATTEMPTS = 2
    acr.add_fault(count=10, status=503, operation="scope_maps.create")
    assert provisioning.provision(approved.pk) is not None
    assert provisioning.provision(approved.pk) is None
    req = AccessRequest.objects.get(pk=approved.pk)
    assert req.status == RequestStatus.FAILED
    assert "Gave up after 2 attempts" in req.failure_reason and "503" in req.failure_reason


def test_it_fails_permanently_on_a_token_it_does_not_own(approved, acr, requester, admin_user) -> None:
    client = make_client(acr.url, subscription_id=SUBSCRIPTION)
    client.scope_maps.begin_create(
        "portal-rg",
        "contosotest",
        approved.token_name,
        {"properties": {"description": "made by hand", "actions": ["repositories/x/content/read"]}},
    ).result()
    assert provisioning.provision(approved.pk) is None
    req = AccessRequest.objects.get(pk=approved.pk)
    assert req.status == RequestStatus.FAILED
    assert "not managed by the portal" in req.failure_reason
    # The hand-made scope map is left as it was.
    assert client.scope_maps.get("portal-rg", "contosotest", approved.token_name).description == "made by hand"
    # The requester sees that it failed, not the registry's internals; an admin sees the reason and may retry.
    assert "not managed by the portal" not in login(requester).get(f"/requests/{req.pk}/").content.decode()
    assert login(requester).post(f"/requests/{req.pk}/retry").status_code == 403
    admin = login(admin_user)
    assert "not managed by the portal" in admin.get(f"/requests/{req.pk}/").content.decode()
    client.scope_maps.begin_delete("portal-rg", "contosotest", approved.token_name).result()
    assert admin.post(f"/requests/{req.pk}/retry").status_code == 302
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.APPROVED
    assert provisioning.provision(req.pk) is None
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.READY
    assert AuditEvent.objects.filter(action="request.retried", actor_name="root").exists()


def test_it_sweeps_requests_stuck_in_provisioning(approved, settings) -> None:
    assert provisioning.sweep_stuck() == 0
    later = timezone.now() + timedelta(minutes=settings.PROVISIONING_STUCK_MINUTES + 1)
    with time_machine.travel(later):
        assert provisioning.sweep_stuck() == 1
        assert provisioning.sweep_stuck() == 0  # touched, so not queued twice


def test_it_names_tokens_validly_for_acr() -> None:
    from accessreq.flow import token_name_for

    assert token_name_for("ci", "Payments & Billing", 42) == "ci-payments-billing-42"
    long_name = token_name_for("partner", "x" * 80, 1234567)
    assert len(long_name) == 50 and long_name.endswith("-1234567")
    assert token_name_for("ci", "!!!", 7) == "ci-team-7"
    for name in (long_name, token_name_for("ci", "a", 1)):
        assert 5 <= len(name) <= 50 and all(c.isalnum() or c == "-" for c in name)


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [("myapp/api", True), ("myapp/*", True), ("*", True), ("a.b/c__d/e-f", True), ("myapp/*/x", False)],
)
def test_it_validates_patterns(pattern, ok) -> None:
    assert (scopes.validate_repository(pattern) is None) is ok


def test_it_writes_nothing_when_the_token_is_someone_elses(approved, acr) -> None:
    client = make_client(acr.url, subscription_id=SUBSCRIPTION)
    scope_map = client.scope_maps.begin_create(
        "portal-rg", "contosotest", "hand-made", {"properties": {"actions": ["repositories/x/content/read"]}}
    ).result()
    client.tokens.begin_create(
        "portal-rg", "contosotest", approved.token_name, {"properties": {"scopeMapId": scope_map.id}}
    ).result()
    writes = len(_writes(acr))
    assert provisioning.provision(approved.pk) is None
    req = AccessRequest.objects.get(pk=approved.pk)
    assert req.status == RequestStatus.FAILED
    assert "on scope map hand-made" in req.failure_reason
    # Both were read before either was written: no scope map of the request's name was made, nothing was changed.
    assert len(_writes(acr)) == writes
    assert approved.token_name not in acr.state.registries["contosotest"].scope_maps
    assert acr.state.registries["contosotest"].tokens[approved.token_name].scope_map == "hand-made"


def test_it_writes_the_token_row_once_the_sdk_has_looked_at_the_create(approved, acr) -> None:
    # The SDK's poller looks at the create at once, on its own thread: the row is written after that look, not
    # while it is made (one interpreter runs one thread at a time), and still before the create is done.
    acr.configure(lro_polls=1, lro_retry_after=0.3)
    acr.add_fault(count=1, delay=0.3, operation="operations.get")
    assert provisioning.provision(approved.pk) is None
    polls = [c for c in acr.requests() if c["operation"] == "operations.get"]
    first_look, last_look = (datetime.fromisoformat(polls[i]["time"]) for i in (0, -1))
    written = AuditEvent.objects.get(action="token.created").created_at
    assert first_look < written < last_look


def test_it_records_the_tokens_creation_before_its_password(approved, acr) -> None:
    assert provisioning.provision(approved.pk) is None
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions.index("token.created") < actions.index("password.generated") < actions.index("request.ready")
    assert actions.count("token.created") == 1


@pytest.mark.django_db(transaction=True)
def test_it_generates_a_slot_once_when_two_runs_overlap(approved, requester, acr) -> None:


    from acr_emulator.dataplane import allowed_actions

    # Provision everything but the password, then let two runs race to generate it, as a redelivered task would.
    req = AccessRequest.objects.select_related("registry").get(pk=approved.pk)
    slot, claim = provisioning._ensure_in_registry(req)
    assert claim is not None
    claims.release(PasswordSlot, slot.pk, claim.token)
    acr.add_fault(count=2, delay=0.3, operation="registries.generate_credentials")
    outcomes = race(lambda: slots.generate_slot(slot.pk), lambda: slots.generate_slot(slot.pk))
    assert sorted(outcomes) == [False, True]  # one generated it, the other found it claimed
    calls = [c for c in acr.requests() if c["operation"] == "registries.generate_credentials"]
    assert len(calls) == 1
    slot.refresh_from_db()
    assert slot.status == SlotStatus.AWAITING_REVEAL and slot.claimed_at is None
    password = slots.reveal(slot, requester, None).password
    assert allowed_actions(acr.state, "contosotest", approved.token_name, password, "myapp/api")
