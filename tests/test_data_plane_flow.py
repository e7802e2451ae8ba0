"""Through the portal's own flow, against a real Distribution registry whose token server is the emulator: the
password a person reveals was proven at the registry before it was handed over, and opens exactly what was approved;
disabling the token, and switching to a rotated password, close the door within seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group

from accessreq import acr as acr_module
from accessreq import provisioning, slots
from accessreq.models import AccessRequest, ApprovalRule, PasswordSlot, Registry, SlotStatus, Token
from tests.conftest import SUBSCRIPTION, login, request_data
from tests.skopeo import Skopeo


@pytest.fixture
def served(data_plane: Any, settings: Any, groups: dict[str, Group]) -> Registry:
    """A portal registry served by the data plane: its login server is the real registry's address."""
    settings.ACR_ARM_ENDPOINT = data_plane.emulator.url
    settings.ACR_CREDENTIAL = "emulator"
    settings.ACR_POLLING_INTERVAL = 0
    settings.ACR_DATA_PLANE_SCHEME = "http"
    settings.ACR_VERIFY_PASSWORDS = True
    settings.ACR_VERIFY_SECONDS = 20
    acr_module._credential.cache_clear()
    reg = Registry(
        subscription_id=SUBSCRIPTION, resource_group="portal-rg", name="contosoflow", admin_group=groups["admins"]
    )
    reg.login_server = acr_module.ensure_registry(reg, "westeurope", "Standard")
    reg.save()
    ApprovalRule.objects.create(registry=reg, pattern="myapp/*", group=groups["owners"])
    ApprovalRule.objects.create(registry=reg, pattern="shared/*", group=groups["shared"])
    assert reg.login_server == data_plane.login_server
    return reg


def _provisioned(served: Registry, requester: Any, approvers: list[Any], **rules: Any) -> tuple[Token, str]:
    """alice files through the page, the owners approve, the worker's function provisions, alice reveals."""
    alice = login(requester)
    assert alice.post("/requests/new", request_data(served, **rules)).status_code == 302
    req = AccessRequest.objects.latest("pk")
    for approver in approvers:
        assert login(approver).post(f"/requests/{req.pk}/decide", {"decision": "approve"}).status_code == 302
    assert provisioning.provision(req.pk) is None
    response = alice.post(f"/requests/{req.pk}/reveal")
    assert response.status_code == 200
    return Token.objects.get(request=req), response.context["revealed"].password


PUSH_PULL = {"rules-0-repository": "myapp/api", "rules-0-actions": ["content/read", "content/write"]}
UNDER_PREFIX = {"rules-0-repository": "myapp/*", "rules-0-actions": ["content/read", "content/write"]}


@pytest.mark.django_db
def test_it_hands_over_a_proven_password_that_opens_exactly_what_was_approved(
    served, requester, approver, second_approver, data_plane, tmp_path: Path
) -> None:
    token, password = _provisioned(served, requester, [approver, second_approver], **PUSH_PULL)
    assert token.verified_ok is True
    checks = {(c["repository"], c["action"]): c for c in token.verification["checks"]}
    assert checks[("myapp/api", "content/write")]["result"] is True
    assert any(c["expected"] is False and c["result"] is False for c in checks.values())  # refused elsewhere
    skopeo = Skopeo(tmp_path, served.login_server)
    assert skopeo.push("myapp/api", token.name, password).ok
    assert skopeo.pull("myapp/api", token.name, password).ok
    assert skopeo.push("myapp/web", token.name, password).denied
    assert skopeo.push("shared/sdk", token.name, password).denied
    assert skopeo.pull("myapp/api", token.name, password + "x").denied
    # The token page says what was proven, and when.
    page = login(requester).get(f"/tokens/{token.pk}/")
    assert b"Proven at the registry" in page.content


@pytest.mark.django_db
def test_it_opens_repositories_made_later_under_its_prefix_only(
    served, requester, approver, second_approver, tmp_path: Path
) -> None:
    token, password = _provisioned(served, requester, [approver, second_approver], **UNDER_PREFIX)
    skopeo = Skopeo(tmp_path, served.login_server)
    assert skopeo.push("myapp/brand-new", token.name, password).ok
    assert skopeo.push("myappx/api", token.name, password).denied
    assert skopeo.push("shared/sdk", token.name, password).denied


@pytest.mark.django_db
def test_it_shuts_the_door_on_disable_and_on_the_old_password_after_a_switch(
    served, requester, approver, second_approver, tmp_path: Path
) -> None:
    token, old = _provisioned(served, requester, [approver, second_approver], **PUSH_PULL)
    skopeo = Skopeo(tmp_path, served.login_server)
    alice = login(requester)
    assert alice.post(f"/tokens/{token.pk}/disable", {"reason": "Leaked in a build log"}).status_code == 302
    assert skopeo.pull("myapp/api", token.name, old).denied
    assert alice.post(f"/tokens/{token.pk}/enable").status_code == 302
    assert skopeo.push("myapp/api", token.name, old).ok

    assert alice.post(f"/tokens/{token.pk}/rotate").status_code == 302
    slots.generate(PasswordSlot.objects.get(token=token, name="password2").pk)
    new = alice.post(f"/tokens/{token.pk}/reveal/password2").context["revealed"].password
    assert skopeo.pull("myapp/api", token.name, old).ok  # both work until the switch
    assert skopeo.pull("myapp/api", token.name, new).ok
    assert alice.post(f"/tokens/{token.pk}/confirm-switch").status_code == 302
    assert PasswordSlot.objects.get(token=token, name="password1").status == SlotStatus.REVOKED
    assert skopeo.pull("myapp/api", token.name, old).denied
    assert skopeo.pull("myapp/api", token.name, new).ok


@pytest.mark.django_db
def test_it_marks_a_password_it_could_not_prove_and_still_hands_it_over(
    served, requester, approver, second_approver, settings
) -> None:
    settings.ACR_VERIFY_SECONDS = 1
    settings.ACR_DATA_PLANE_SCHEME = "https"  # the registry speaks http: every check fails to connect
    token, _ = _provisioned(served, requester, [approver, second_approver], **PUSH_PULL)
    assert token.verified_ok is False
    assert token.verification["error"]
    assert AccessRequest.objects.get(pk=token.request_id).status == "ready"
    page = login(requester).get("/tokens/?flag=unverified")
    assert token.name.encode() in page.content


@pytest.mark.django_db
def test_it_marks_the_proof_outdated_when_the_access_changes_and_proves_the_next_password(
    served, requester, approver, second_approver
) -> None:
    token, _ = _provisioned(served, requester, [approver, second_approver], **PUSH_PULL)
    wider = request_data(
        served,
        **PUSH_PULL,
        **{"rules-TOTAL_FORMS": "2", "rules-1-repository": "myapp/web", "rules-1-actions": ["content/read"]},
        renew=str(token.pk),
    )
    alice = login(requester)
    assert alice.post(f"/requests/new?renew={token.pk}", wider).status_code == 302
    change = AccessRequest.objects.latest("pk")
    for user in (approver, second_approver):
        assert login(user).post(f"/requests/{change.pk}/decide", {"decision": "approve"}).status_code == 302
    assert provisioning.provision(change.pk) is None
    token.refresh_from_db()
    assert token.verification["outdated"] is True and token.verified_ok is None
    assert b"access changed after this check" in alice.get(f"/tokens/{token.pk}/").content
    # The next password is proven against the new access.
    assert alice.post(f"/tokens/{token.pk}/rotate").status_code == 302
    slots.generate(PasswordSlot.objects.get(token=token, name="password2").pk)
    token.refresh_from_db()
    assert token.verified_ok is True and "outdated" not in token.verification
    checks = {(c["repository"], c["action"]): c["result"] for c in token.verification["checks"]}
    assert checks[("myapp/web", "content/read")] is True
