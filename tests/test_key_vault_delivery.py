"""Delivery to Azure Key Vault, with the real azure-keyvault-secrets SDK against the emulator's vaults: the choice on
the form and in the API (field errors, nothing saved), the secret the worker writes, reveals refused, a vault that
answers 403, and automatic rotation that keeps the old password until the new version is in the vault."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from azure.keyvault.secrets import SecretClient
from django.core import mail
from django.utils import timezone

from accessreq import delivery, jobs, keyvault, provisioning, slots
from accessreq.models import (
    AccessRequest,
    AllowedVault,
    AuditEvent,
    KeyVaultDelivery,
    PasswordSlot,
    RequestStatus,
    SealedPassword,
    SlotStatus,
    StorageLocation,
    Token,
)
from tests.conftest import login, request_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def vault(acr: Any, settings: Any, registry: Any) -> str:
    """A vault in the emulator, trusted by the portal and allowed for the registry."""
    return serve_vault(acr, settings, registry, "contosokv")


def serve_vault(emulator: Any, settings: Any, registry: Any, name: str) -> str:
    url = emulator.create_vault(name)
    settings.KEY_VAULT_CREDENTIAL = "emulator"
    settings.KEY_VAULT_CA_BUNDLE = emulator.key_vault_ca_bundle
    settings.KEY_VAULT_ROTATION_GRACE_HOURS = 24
    keyvault._credential.cache_clear()
    AllowedVault.objects.create(registry=registry, url=url, description="CI secrets")
    return url


def reader(vault_url: str) -> SecretClient:
    """How a consumer reads the secret: the real SDK, as the portal's own client is built."""
    return keyvault.client(vault_url)


def delivered_data(registry: Any, vault_url: str, **overrides: Any) -> dict[str, Any]:
    data = request_data(registry, delivery="key_vault", key_vault=vault_url, secret_name="ci-payments-acr")
    data.update(overrides)
    return data


def file_and_provision(registry: Any, requester: Any, approver: Any, data: dict[str, Any]) -> AccessRequest:
    assert login(requester).post("/requests/new", data).status_code == 302
    req = AccessRequest.objects.latest("pk")
    assert login(approver).post(f"/requests/{req.pk}/decide", {"decision": "approve"}).status_code == 302
    assert provisioning.provision(req.pk) is None
    req.refresh_from_db()
    return req


def test_it_writes_the_password_to_the_vault_and_never_seals_it(vault, registry, requester, approver) -> None:
    req = file_and_provision(registry, requester, approver, delivered_data(registry, vault))
    assert req.status == RequestStatus.READY
    token = Token.objects.get(request=req)
    slot = PasswordSlot.objects.get(token=token, name="password1")
    assert slot.status == SlotStatus.DELIVERED and slot.expires_at is not None
    assert not SealedPassword.objects.exists()
    target = KeyVaultDelivery.objects.get(token=token)
    secret = reader(vault).get_secret("ci-payments-acr")
    assert target.secret_id == secret.id and target.secret_version == secret.properties.version
    assert secret.properties.content_type == keyvault.CONTENT_TYPE
    assert secret.properties.expires_on == slot.expires_at.replace(microsecond=0)
    assert secret.properties.tags == {
        "acr-token": token.name,
        "acr-username": token.name,
        "acr-registry": registry.name,
        "acr-login-server": registry.login_server,
        "acr-portal": f"http://127.0.0.1:8000/tokens/{token.pk}/",
    }
    event = AuditEvent.objects.get(action="password.delivered")
    assert event.details["vault"] == vault and event.details["secret_name"] == "ci-payments-acr"
    assert event.details["version"] == secret.properties.version
    # A rotation is due a third of the 30-day lifetime (at most 7 days) before expiry.
    assert target.next_rotation_at == slot.expires_at - timedelta(days=7)


def test_a_reveal_says_where_the_password_went(vault, registry, requester, approver) -> None:
    req = file_and_provision(registry, requester, approver, delivered_data(registry, vault))
    token = Token.objects.get(request=req)
    page = login(requester).post(f"/requests/{req.pk}/reveal")
    assert page.status_code == 410
    assert f"delivered to Key Vault {vault}, secret ci-payments-acr" in page.content.decode()
    api = login(requester).post(f"/api/v1/tokens/{token.pk}/passwords/password1/reveal")
    assert api.status_code == 410 and "ci-payments-acr" in api.content.decode()


def test_approvers_and_the_api_see_the_destination(vault, registry, requester, approver) -> None:
    assert login(requester).post("/requests/new", delivered_data(registry, vault)).status_code == 302
    req = AccessRequest.objects.get()
    destination = f"{vault}/secrets/ci-payments-acr"
    assert destination in login(approver).get("/approvals/").content.decode()
    assert destination in login(approver).get(f"/requests/{req.pk}/").content.decode()
    body = login(requester).get(f"/api/v1/requests/{req.pk}").json()
    assert body["delivery"]["key_vault"] == vault and body["delivery"]["secret_name"] == "ci-payments-acr"
    assert body["delivery"]["rotation"] == "7 days before the password expires"


def test_the_api_files_a_delivered_request(vault, registry, requester, approver) -> None:
    payload = {
        "registry": registry.name,
        "rules": [{"repository": "myapp/api", "actions": ["content/read"]}],
        "purpose": "The payments CI pipeline pulls the base image.",
        "client_kind": "ci",
        "team": "Payments",
        "password_lifetime_days": 30,
        "retire_on": (timezone.localdate() + timedelta(days=90)).isoformat(),
        "delivery": {"key_vault": vault + "/", "secret_name": "payments-pull", "rotate_every_days": 10},
    }
    response = login(requester).post("/api/v1/requests", payload, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["delivery"]["rotation"] == "every 10 days"
    assert KeyVaultDelivery.objects.get().vault_url == vault


BAD_TARGETS = [
    ({"key_vault": "http://contosokv.vault.azure.net"}, "key_vault", "starts with https://"),
    ({"key_vault": "https://contosokv.vault.azure.net/secrets/x"}, "key_vault", "no path"),
    ({"key_vault": "https://elsewhere.vault.azure.net"}, "key_vault", "may not deliver to"),
    ({"secret_name": "has_underscore"}, "secret_name", "letters, digits and dashes"),
    ({"secret_name": "x" * 128}, "secret_name", "letters, digits and dashes"),
    ({"secret_name": ""}, "secret_name", "letters, digits and dashes"),
    ({"rotate_every_days": 30}, "rotate_every_days", "more often than the password's lifetime"),
    ({"rotate_every_days": 5, "rotate_before_expiry_days": 3}, "rotate_every_days", "not both"),
]


@pytest.mark.parametrize(("override", "field", "message"), BAD_TARGETS)
def test_bad_targets_are_field_errors_on_the_form_and_nothing_is_saved(
    vault, registry, requester, approver, override, field, message
) -> None:
    response = login(requester).post("/requests/new", delivered_data(registry, vault, **override))
    assert response.status_code == 200
    form = response.context["new"].form
    assert field in form.errors or (field == "key_vault" and "key_vault" in form.errors)
    assert any(message in e for e in form.errors.get(field, [])), form.errors
    assert not AccessRequest.objects.exists() and not KeyVaultDelivery.objects.exists()


API_FIELDS = {
    "key_vault": "delivery.key_vault",
    "secret_name": "delivery.secret_name",
    "rotate_every_days": "delivery.rotate_every_days",
}


@pytest.mark.parametrize(("override", "field", "message"), BAD_TARGETS)
def test_bad_targets_are_field_errors_in_the_api_and_nothing_is_saved(
    vault, registry, requester, approver, override, field, message
) -> None:
    target = {"key_vault": vault, "secret_name": "ci-payments-acr"}
    target.update({k: v for k, v in override.items() if k in ("key_vault", "secret_name", "rotate_every_days")})
    if "rotate_before_expiry_days" in override:
        target["rotate_days_before_expiry"] = override["rotate_before_expiry_days"]
    payload = {
        "registry": registry.name,
        "rules": [{"repository": "myapp/api", "actions": ["content/read"]}],
        "purpose": "The payments CI pipeline pulls the base image.",
        "client_kind": "ci",
        "team": "Payments",
        "password_lifetime_days": 30,
        "retire_on": (timezone.localdate() + timedelta(days=90)).isoformat(),
        "delivery": target,
    }
    response = login(requester).post("/api/v1/requests", payload, content_type="application/json")
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert any(message in e for e in errors[API_FIELDS[field]]), errors
    assert not AccessRequest.objects.exists() and not KeyVaultDelivery.objects.exists()


def test_the_api_refuses_unknown_delivery_fields(vault, registry, requester, approver) -> None:
    payload = {
        "registry": registry.name,
        "rules": [{"repository": "myapp/api", "actions": ["content/read"]}],
        "purpose": "The payments CI pipeline pulls the base image.",
        "client_kind": "ci",
        "team": "Payments",
        "password_lifetime_days": 30,
        "retire_on": (timezone.localdate() + timedelta(days=90)).isoformat(),
        "delivery": {"key_vault": vault, "secret_name": "x", "reveal_too": True},
    }
    response = login(requester).post("/api/v1/requests", payload, content_type="application/json")
    assert response.status_code == 400
    assert not AccessRequest.objects.exists()


def test_a_secret_another_live_token_writes_is_taken(vault, registry, requester, approver) -> None:
    file_and_provision(registry, requester, approver, delivered_data(registry, vault))
    response = login(requester).post("/requests/new", delivered_data(registry, vault, secret_name="CI-payments-acr"))
    assert "Another token already delivers" in str(response.context["new"].form.errors["secret_name"])
    assert AccessRequest.objects.count() == 1


def test_a_vault_that_answers_403_fails_the_request_with_a_reason_and_a_retry(
    vault, acr, registry, requester, approver, admin_user, django_capture_on_commit_callbacks
) -> None:
    acr.deny_vault("contosokv")
    with django_capture_on_commit_callbacks(execute=True):
        req = file_and_provision(registry, requester, approver, delivered_data(registry, vault))
    assert req.status == RequestStatus.FAILED
    assert "403" in req.failure_reason and "Key Vault Secrets Officer" in req.failure_reason
    assert vault in req.failure_reason
    assert not SealedPassword.objects.exists()
    assert any("Key Vault Secrets Officer" in m.body for m in mail.outbox)
    # The role is granted; an admin retries.
    acr.deny_vault("contosokv", denied=False)
    assert login(admin_user).post(f"/requests/{req.pk}/retry").status_code == 302
    assert provisioning.provision(req.pk) is None
    req.refresh_from_db()
    assert req.status == RequestStatus.READY
    assert reader(vault).get_secret("ci-payments-acr").value
    assert PasswordSlot.objects.get(token__request=req).status == SlotStatus.DELIVERED


def test_a_failed_rotation_keeps_the_old_password_and_tells_owner_and_security(
    vault, acr, registry, requester, approver, security, admin_user, django_capture_on_commit_callbacks
) -> None:
    req = file_and_provision(registry, requester, approver, delivered_data(registry, vault))
    token = Token.objects.get(request=req)
    before = reader(vault).get_secret("ci-payments-acr")
    target = KeyVaultDelivery.objects.get(token=token)
    acr.deny_vault("contosokv")
    mail.outbox.clear()
    with time_machine.travel(target.next_rotation_at + timedelta(minutes=1), tick=False):
        assert jobs.run("rotate-delivered") == 1
        new = PasswordSlot.objects.get(token=token, name="password2")
        with django_capture_on_commit_callbacks(execute=True):
            assert slots.generate(new.pk) is None
    new.refresh_from_db()
    assert new.status == SlotStatus.FAILED and "Key Vault Secrets Officer" in new.failure_reason
    old = PasswordSlot.objects.get(token=token, name="password1")
    assert old.status == SlotStatus.DELIVERED and old.retire_after is None
    acr.deny_vault("contosokv", denied=False)
    assert reader(vault).get_secret("ci-payments-acr").properties.version == before.properties.version
    told = {address for m in mail.outbox for address in m.to}
    assert {requester.email, security.email} <= told
    assert any("previous password stays in the vault" in m.body for m in mail.outbox)
    # An admin retries the slot: the new version lands, and only then does the old slot get its grace period.
    assert login(admin_user).post(f"/tokens/{token.pk}/retry/password2").status_code == 302
    assert slots.generate(new.pk) is None
    new.refresh_from_db()
    old.refresh_from_db()
    assert new.status == SlotStatus.DELIVERED and old.retire_after is not None
    assert reader(vault).get_secret("ci-payments-acr").properties.version != before.properties.version


def test_the_job_does_nothing_before_the_policy_says_so(vault, registry, requester, approver) -> None:
    file_and_provision(registry, requester, approver, delivered_data(registry, vault))
    assert jobs.run("rotate-delivered") == 0
    assert not PasswordSlot.objects.filter(name="password2").exists()


def test_the_owner_can_rotate_a_delivered_token_now(vault, registry, requester, approver) -> None:
    req = file_and_provision(registry, requester, approver, delivered_data(registry, vault))
    token = Token.objects.get(request=req)
    first = reader(vault).get_secret("ci-payments-acr").properties.version
    assert login(requester).post(f"/tokens/{token.pk}/rotate").status_code == 302
    new = PasswordSlot.objects.get(token=token, name="password2")
    assert slots.generate(new.pk) is None
    assert reader(vault).get_secret("ci-payments-acr").properties.version != first
    # A second rotation waits for the first one's grace period to end.
    assert login(requester).post(f"/api/v1/tokens/{token.pk}/rotate").status_code == 409


def test_it_rotates_a_delivered_token_with_the_lifetime_asked_for(vault, registry, requester, approver) -> None:
    req = file_and_provision(registry, requester, approver, delivered_data(registry, vault))
    token = Token.objects.get(request=req)
    assert token.password_days == 30
    response = login(requester).post(
        f"/api/v1/tokens/{token.pk}/rotate", {"password_lifetime_days": 7}, content_type="application/json"
    )
    assert response.status_code == 202, response.json()
    new = PasswordSlot.objects.get(token=token, name="password2")
    assert new.lifetime_days == 7
    assert slots.generate(new.pk) is None
    new.refresh_from_db()
    assert new.expires_at is not None
    assert timedelta(days=7) - timedelta(minutes=5) < new.expires_at - timezone.now() <= timedelta(days=7)
    started = AuditEvent.objects.get(action="token.rotation_started")
    assert started.details["password_days"] == 7
    # The vault's copy says when it stops working, so its readers can plan.
    expires_on = reader(vault).get_secret("ci-payments-acr").properties.expires_on
    assert expires_on is not None and abs(expires_on - new.expires_at) < timedelta(seconds=1)


def test_rotation_policy_defaults(vault, registry, requester, approver) -> None:
    assert login(requester).post("/requests/new", delivered_data(registry, vault, password_days="6")).status_code == 302
    assert KeyVaultDelivery.objects.get().rotate_before_expiry_days == 2
    assert timedelta(days=1) == delivery.RETRY_AFTER_FAILURE


# --- where a revealed password is stored ------------------------------------------------------------------------------


def test_the_requester_records_where_a_revealed_password_is_stored(
    ready_request, requester, approver, security, outsider
) -> None:
    token = Token.objects.get(request=ready_request)
    alice = login(requester)
    page = alice.post(f"/requests/{ready_request.pk}/reveal")
    assert f"/tokens/{token.pk}/#storage-title" in page.content.decode()
    refused = alice.post(f"/tokens/{token.pk}/storage", {"location": "  "}, follow=True)
    assert "Say where you stored the password" in refused.content.decode()
    refused = alice.post(f"/tokens/{token.pk}/storage", {"location": "x" * 501}, follow=True)
    assert "Keep it to 500 characters" in refused.content.decode()
    assert not StorageLocation.objects.exists()
    place = "https://dev.azure.com/contoso/payments/_library?variableGroupId=7"
    assert alice.post(f"/tokens/{token.pk}/storage", {"location": place}).status_code == 302
    assert AuditEvent.objects.filter(action="token.storage_recorded", details__location=place).exists()
    # The owner (alice here) and security see it; an approver who may see the token does not.
    assert place in alice.get(f"/tokens/{token.pk}/").content.decode()
    assert place in login(security).get(f"/tokens/{token.pk}/").content.decode()
    assert place not in login(approver).get(f"/tokens/{token.pk}/").content.decode()
    assert login(approver).post(f"/tokens/{token.pk}/storage", {"location": "elsewhere"}).status_code == 403
    assert login(outsider).post(f"/tokens/{token.pk}/storage", {"location": "elsewhere"}).status_code == 404
    assert login(requester).get(f"/tokens/{token.pk}/storage").status_code == 405
    assert alice.get(f"/api/v1/tokens/{token.pk}").json()["stored_at"] == place


def test_a_delivered_token_page_names_its_secret(vault, registry, requester, approver) -> None:
    req = file_and_provision(registry, requester, approver, delivered_data(registry, vault))
    token = Token.objects.get(request=req)
    page = login(requester).get(f"/tokens/{token.pk}/").content.decode()
    target = KeyVaultDelivery.objects.get(token=token)
    assert "Delivered to Key Vault" in page and target.secret_id in page
    login(requester).post(f"/tokens/{token.pk}/storage", {"location": "x"})  # refused: the vault is the place
    assert not StorageLocation.objects.exists()
    assert login(requester).get(f"/api/v1/tokens/{token.pk}").json()["delivery"]["secret_id"] == target.secret_id
