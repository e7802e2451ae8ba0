"""Ready is confirmed: a scope map or token that is not `Succeeded` in the registry is repaired or waited for before a
password is generated, and reconcile flags a managed token the registry has as Failed."""

from __future__ import annotations

import pytest

from accessreq import acr as acr_module
from accessreq import provisioning, reconcile, slots
from accessreq.models import AccessRequest, AuditEvent, RequestStatus, Token
from acr_emulator.dataplane import allowed_actions
from acr_emulator.testing import make_client
from tests.conftest import SUBSCRIPTION, login, request_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def approved(registry, requester, approver) -> AccessRequest:
    assert login(requester).post("/requests/new", request_data(registry)).status_code == 302
    req = AccessRequest.objects.get()
    login(approver).post(f"/requests/{req.pk}/decide", {"decision": "approve"})
    return AccessRequest.objects.get(pk=req.pk)


def _state(acr, kind: str, name: str) -> str:
    ops = getattr(make_client(acr.url, subscription_id=SUBSCRIPTION), kind)
    return ops.get("portal-rg", "contosotest", name).provisioning_state


def _works(acr, req: AccessRequest, requester) -> bool:
    slot = Token.objects.get(request=req).slots.get(name="password1")
    password = slots.reveal(slot, requester, None).password
    return bool(allowed_actions(acr.state, "contosotest", req.token_name, password, "myapp/api"))


def test_it_repairs_a_token_whose_creation_failed(approved, requester, acr) -> None:
    acr.add_fault(count=1, operation="tokens.create", lro_fail=True)
    assert provisioning.provision(approved.pk) is not None  # the failed create is retried
    assert _state(acr, "tokens", approved.token_name) == "Failed"
    # Its row, the audit of its creation and its first password's slot were written, and the slot claimed, while ARM
    # was creating it; nothing that needs it ready happened: no password, and the claim given back uncounted.
    assert [c for c in acr.requests() if c["operation"] == "registries.generate_credentials"] == []
    slot = approved.token.slots.get()
    assert (slot.claim_token, slot.claimed_at, slot.attempts) == ("", None, 0)
    assert AuditEvent.objects.filter(action="token.created").count() == 1
    assert provisioning.provision(approved.pk) is None
    assert _state(acr, "tokens", approved.token_name) == "Succeeded"
    assert AccessRequest.objects.get(pk=approved.pk).status == RequestStatus.READY
    assert AuditEvent.objects.filter(action="token.created").count() == 1  # the repair made no second one
    assert _works(acr, approved, requester)


def test_it_repairs_a_scope_map_whose_creation_failed(approved, requester, acr) -> None:
    acr.add_fault(count=1, operation="scope_maps.create", lro_fail=True)
    assert provisioning.provision(approved.pk) is not None
    assert _state(acr, "scope_maps", approved.token_name) == "Failed"
    assert provisioning.provision(approved.pk) is None
    assert _state(acr, "scope_maps", approved.token_name) == "Succeeded"
    assert _works(acr, approved, requester)


def test_it_drives_a_token_left_creating_to_completion(approved, requester, acr) -> None:
    # An interrupted run: the scope map and the token's PUT went out, nobody polled the operation.
    acr.configure(lro_polls=4)
    registry = approved.registry
    description = f"{acr_module.MANAGED_MARKER} (request {approved.pk})"
    acr_module.ensure_scope_map(registry, approved.token_name, approved.scope_map_actions, description)
    client = make_client(acr.url, subscription_id=SUBSCRIPTION)
    scope_map_id = client.scope_maps.get("portal-rg", "contosotest", approved.token_name).id
    client.tokens.begin_create(
        "portal-rg", "contosotest", approved.token_name, {"properties": {"scopeMapId": scope_map_id}}, polling=False
    )
    assert acr.state.registries["contosotest"].tokens[approved.token_name].provisioning_state == "Creating"
    assert provisioning.provision(approved.pk) is None
    assert _state(acr, "tokens", approved.token_name) == "Succeeded"
    assert _works(acr, approved, requester)


def test_it_never_calls_ready_a_token_the_registry_has_as_failed(approved, acr) -> None:
    acr.add_fault(count=20, operation="tokens.create", lro_fail=True)
    for _ in range(12):
        if provisioning.provision(approved.pk) is None:
            break
    req = AccessRequest.objects.get(pk=approved.pk)
    assert req.status == RequestStatus.FAILED
    assert "Gave up after" in req.failure_reason and "failed" in req.failure_reason
    # What it made is taken back, and said so.
    assert acr.state.registries["contosotest"].tokens.get(approved.token_name) is None
    assert AuditEvent.objects.filter(action="request.cleaned_up").exists()


def test_reconcile_flags_a_managed_token_the_registry_has_as_failed(ready_request, acr) -> None:
    token = Token.objects.get(request=ready_request)
    acr.state.registries["contosotest"].tokens[token.name].provisioning_state = "Failed"
    report = reconcile.reconcile(token.registry)
    assert report.broken == 1
    token.refresh_from_db()
    assert token.registry_state == "Failed"
    assert AuditEvent.objects.filter(action="token.registry_failed").count() == 1
    reconcile.reconcile(token.registry)
    assert AuditEvent.objects.filter(action="token.registry_failed").count() == 1  # flagged once
    acr.state.registries["contosotest"].tokens[token.name].provisioning_state = "Succeeded"
    reconcile.reconcile(token.registry)
    token.refresh_from_db()
    assert token.registry_state == ""


def test_reconcile_leaves_a_token_still_being_made_to_its_provisioning(ready_request, acr) -> None:
    token = Token.objects.get(request=ready_request)
    AccessRequest.objects.filter(pk=ready_request.pk).update(status=RequestStatus.PROVISIONING)
    acr.state.registries["contosotest"].tokens[token.name].provisioning_state = "Creating"
    report = reconcile.reconcile(token.registry)
    assert (report.broken, report.gone) == (0, 0)
    token.refresh_from_db()
    assert token.registry_state == ""
    assert not AuditEvent.objects.filter(action="token.registry_failed").exists()
