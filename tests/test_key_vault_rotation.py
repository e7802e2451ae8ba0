"""A token delivered to Key Vault, against a real Distribution registry: the secret's value logs in, and three
automatic rotations each prove the new password, write a new version and delete the old slot only after its grace
period, while the vault's current version keeps working at every step.

The portal's clock moves (time-machine) only around its jobs: the registry runs in another process on the real clock,
and the emulator's token server signs tokens that registry must accept."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Group

from accessreq import acr as acr_module
from accessreq import jobs, keyvault, provisioning, slots
from accessreq.models import (
    AccessRequest,
    AllowedVault,
    ApprovalRule,
    AuditEvent,
    KeyVaultDelivery,
    PasswordSlot,
    Registry,
    SlotStatus,
    Token,
)
from tests.conftest import SUBSCRIPTION, login, request_data
from tests.skopeo import Skopeo

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(data_plane: Any, settings: Any, groups: dict[str, Group]) -> tuple[Registry, str]:
    """A portal registry served by the data plane, and a vault allowed for it."""
    settings.ACR_ARM_ENDPOINT = data_plane.emulator.url
    settings.ACR_CREDENTIAL = "emulator"
    settings.ACR_POLLING_INTERVAL = 0
    settings.ACR_DATA_PLANE_SCHEME = "http"
    settings.ACR_VERIFY_PASSWORDS = True
    settings.ACR_VERIFY_SECONDS = 20
    acr_module._credential.cache_clear()
    reg = Registry(
        subscription_id=SUBSCRIPTION, resource_group="portal-rg", name="contosovault", admin_group=groups["admins"]
    )
    reg.login_server = acr_module.ensure_registry(reg, "westeurope", "Standard")
    reg.save()
    ApprovalRule.objects.create(registry=reg, pattern="kv/*", group=groups["owners"])
    vault_url = data_plane.emulator.create_vault("contosoci")
    settings.KEY_VAULT_CREDENTIAL = "emulator"
    settings.KEY_VAULT_CA_BUNDLE = data_plane.emulator.key_vault_ca_bundle
    settings.KEY_VAULT_ROTATION_GRACE_HOURS = 12
    keyvault._credential.cache_clear()
    AllowedVault.objects.create(registry=reg, url=vault_url)
    return reg, vault_url


def current(vault_url: str) -> tuple[str, str]:
    """The vault's current version and value, read as a consumer reads it, with the real SDK."""
    return keyvault.read_current(vault_url, "kv-pipeline")


def test_three_rotations_each_proven_each_old_slot_deleted_after_its_grace(
    served, requester, approver, second_approver, tmp_path: Path
) -> None:
    registry, vault_url = served
    data = request_data(
        registry,
        **{"rules-0-repository": "kv/app", "rules-0-actions": ["content/read", "content/write"]},
        delivery="key_vault",
        key_vault=vault_url,
        secret_name="kv-pipeline",
        rotate_every_days="10",
    )
    assert login(requester).post("/requests/new", data).status_code == 302
    req = AccessRequest.objects.latest("pk")
    for person in (approver, second_approver):
        assert login(person).post(f"/requests/{req.pk}/decide", {"decision": "approve"}).status_code == 302
    assert provisioning.provision(req.pk) is None
    token = Token.objects.get(request=req)
    assert token.verified_ok is True
    skopeo = Skopeo(tmp_path, registry.login_server)
    version, password = current(vault_url)
    assert skopeo.push("kv/app", token.name, password).ok
    assert skopeo.pull("kv/app", token.name, password).ok
    assert skopeo.push("kv/other", token.name, password).denied

    versions = [version]
    for rotation in range(1, 4):
        target = KeyVaultDelivery.objects.get(token=token)
        old_slot = PasswordSlot.objects.get(token=token, status=SlotStatus.DELIVERED)
        old_password = password
        # Not yet due: nothing happens.
        with time_machine.travel(target.next_rotation_at - timedelta(hours=1), tick=False):
            assert jobs.run("rotate-delivered") == 0
        with time_machine.travel(target.next_rotation_at + timedelta(minutes=1), tick=False):
            assert jobs.run("rotate-delivered") == 1
        # While the worker works, the vault still holds the old password, and it works.
        assert current(vault_url) == (versions[-1], old_password)
        assert skopeo.pull("kv/app", token.name, old_password).ok
        new_slot = PasswordSlot.objects.get(token=token, status=SlotStatus.GENERATING)
        assert new_slot.name != old_slot.name
        assert slots.generate(new_slot.pk) is None  # the worker's job: generate, prove, write
        new_slot.refresh_from_db()
        old_slot.refresh_from_db()
        assert new_slot.status == SlotStatus.DELIVERED
        version, password = current(vault_url)
        assert version not in versions and password != old_password
        versions.append(version)
        proof = Token.objects.get(pk=token.pk).verification
        assert proof["ok"] is True and proof["slot"] == new_slot.name
        # Both work during the grace period: consumers pick up the new version at their own pace.
        assert skopeo.pull("kv/app", token.name, password).ok
        assert skopeo.pull("kv/app", token.name, old_password).ok
        assert old_slot.status == SlotStatus.DELIVERED and old_slot.retire_after is not None
        with time_machine.travel(old_slot.retire_after - timedelta(minutes=1), tick=False):
            assert jobs.run("finish-rotations") == 0
        with time_machine.travel(old_slot.retire_after + timedelta(minutes=1), tick=False):
            assert jobs.run("finish-rotations") == 1
        old_slot.refresh_from_db()
        assert old_slot.status == SlotStatus.REVOKED
        assert skopeo.pull("kv/app", token.name, old_password).denied
        assert skopeo.pull("kv/app", token.name, password).ok
        assert KeyVaultDelivery.objects.get(token=token).rotations == rotation

    delivered = AuditEvent.objects.filter(action="password.delivered").order_by("id")
    assert [e.details["version"] for e in delivered] == versions
    assert all(e.details["verified"] is True for e in delivered)
