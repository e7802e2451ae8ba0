"""The whole flow with a real Celery worker, the real Azure SDK and the emulator: file, approve, provision, reveal."""

from __future__ import annotations

import pytest

from accessreq.models import AccessRequest, AuditEvent, PasswordSlot, RequestStatus, SealedPassword, Token
from acr_emulator.dataplane import allowed_actions
from tests.conftest import login, request_data, wait_until

pytestmark = pytest.mark.django_db(transaction=True)




def _file_and_approve(registry, requester, approvers, **overrides) -> AccessRequest:
    response = login(requester).post("/requests/new", request_data(registry, **overrides))
    assert response.status_code == 302, response.content.decode()[:2000]
    req = AccessRequest.objects.get()
    for approver in approvers:
        response = login(approver).post(f"/requests/{req.pk}/decide", {"decision": "approve", "comment": "ok"})
        assert response.status_code == 302
    return req


def test_it_provisions_and_reveals_once(celery_worker, registry, requester, approver, acr) -> None:
    req = _file_and_approve(registry, requester, [approver])
    wait_until(lambda: AccessRequest.objects.get(pk=req.pk).status == RequestStatus.READY)

    token = Token.objects.get(request=req)
    assert token.name == req.token_name
    in_registry = acr.state  # the emulator's own view of the registry
    alice = login(requester)
    response = alice.post(f"/requests/{req.pk}/reveal")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    password = response.context["revealed"].password
    assert f"docker login {registry.login_server} --username {token.name} --password-stdin" in response.content.decode()
    assert allowed_actions(in_registry, registry.name, token.name, password, "myapp/api") == {
        "content/read",
        "metadata/read",
    }
    assert allowed_actions(in_registry, registry.name, token.name, password, "myapp/other") == frozenset()
    assert not SealedPassword.objects.exists()

    again = alice.post(f"/requests/{req.pk}/reveal")
    assert again.status_code == 410
    assert "already been revealed" in again.content.decode()
    assert password not in again.content.decode()
    assert AuditEvent.objects.filter(action="password.reveal_refused").count() == 1
    slot = PasswordSlot.objects.get(token=token)
    assert slot.revealed_at is not None


def test_it_converges_through_throttling_and_server_errors(celery_worker, registry, requester, approver, acr,
                                                          settings) -> None:
    settings.PROVISIONING_RETRY_SECONDS = 0.05
    acr.add_fault(count=2, status=429, retry_after=0, operation="scope_maps.create")
    acr.add_fault(count=2, status=500, operation="tokens.create")
    acr.add_fault(count=1, status=503, operation="registries.generate_credentials")
    req = _file_and_approve(registry, requester, [approver])
    wait_until(lambda: AccessRequest.objects.get(pk=req.pk).status == RequestStatus.READY)

    req.refresh_from_db()
    assert req.provision_attempts >= 4
    calls = acr.requests()
    token_puts = [c for c in calls if c["operation"] == "tokens.create" and c["status"] < 300]
    assert len(token_puts) == 1
    client = acr_client(acr)
    assert [t.name for t in client.tokens.list("portal-rg", registry.name)] == [req.token_name]
    user_maps = [m.name for m in client.scope_maps.list("portal-rg", registry.name) if not m.name.startswith("_")]
    assert user_maps == [req.token_name]


def acr_client(emulator):
    from acr_emulator.testing import make_client
    from tests.conftest import SUBSCRIPTION

    return make_client(emulator.url, subscription_id=SUBSCRIPTION, polling_interval=0)
