"""With skopeo against a real Distribution registry whose token server is the emulator: a token opens exactly what its
scope map grants, and stops opening it when disabled, expired or deleted. And the portal's `accessreq.dataplane.verify`
against the same registry."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m

from accessreq.dataplane import CATALOG, verify
from acr_emulator.testing import DataPlane, make_client
from tests.skopeo import Skopeo

RG = "dataplane-rg"
REGISTRY = "dataplanereg"


class Registry:
    """The served registry, driven through the real SDK, as the portal provisions it."""

    def __init__(self, client: ContainerRegistryManagementClient) -> None:
        self.client = client
        found = client.registries.begin_create(
            RG, REGISTRY, m.Registry(location="westeurope", sku=m.Sku(name="Premium"))
        ).result()
        self.login_server = found.login_server
        self.id = found.id

    def token(self, name: str, actions: list[str], expiry: datetime | None = None) -> str:
        """A token on a scope map of its own holding `actions`; returns password1's value."""
        body = m.ScopeMap(properties=m.ScopeMapProperties(actions=actions))
        scope_map = self.client.scope_maps.begin_create(RG, REGISTRY, f"{name}-map", body).result()
        token = m.Token(properties=m.TokenProperties(scope_map_id=scope_map.id, status="enabled"))
        self.client.tokens.begin_create(RG, REGISTRY, name, token).result()
        return self.password(name, "password1", expiry)

    def password(self, name: str, slot: str, expiry: datetime | None = None) -> str:
        params = m.GenerateCredentialsParameters(token_id=f"{self.id}/tokens/{name}", name=slot, expiry=expiry)
        return self.client.registries.begin_generate_credentials(RG, REGISTRY, params).result().passwords[0].value

    def set_status(self, name: str, status: str) -> None:
        params = m.TokenUpdateParameters(properties=m.TokenUpdateProperties(status=status))
        self.client.tokens.begin_update(RG, REGISTRY, name, params).result()

    def keep_slots(self, name: str, *slots: str) -> None:
        keep = m.TokenCredentialsProperties(passwords=[m.TokenPassword(name=s) for s in slots])
        params = m.TokenUpdateParameters(properties=m.TokenUpdateProperties(credentials=keep))
        self.client.tokens.begin_update(RG, REGISTRY, name, params).result()


@pytest.fixture
def registry(data_plane: DataPlane) -> Registry:
    with make_client(data_plane.emulator.url) as client:
        yield Registry(client)


@pytest.fixture
def skopeo(data_plane: DataPlane, tmp_path: Path) -> Skopeo:
    return Skopeo(tmp_path, data_plane.login_server)


def _content(repository: str) -> list[str]:
    return [f"repositories/{repository}/content/read", f"repositories/{repository}/content/write"]


def test_it_serves_the_registry_at_the_data_plane(data_plane: DataPlane, registry: Registry) -> None:
    assert registry.login_server == data_plane.login_server


def test_it_pushes_and_pulls_its_own_repository(registry: Registry, skopeo: Skopeo) -> None:
    password = registry.token("builder", _content("own/app"))
    pushed = skopeo.push("own/app", "builder", password)
    assert pushed.ok, pushed.output
    pulled = skopeo.pull("own/app", "builder", password)
    assert pulled.ok, pulled.output


def test_it_is_denied_other_repositories(registry: Registry, skopeo: Skopeo) -> None:
    writer = registry.token("writer", _content("mine/app"))
    assert skopeo.push("mine/app", "writer", writer).ok
    other = registry.token("other", _content("theirs/app"))
    assert skopeo.push("theirs/app", "other", other).ok
    for result in (skopeo.push("theirs/app", "writer", writer), skopeo.pull("theirs/app", "writer", writer)):
        assert result.denied, result.output


def test_it_pulls_but_cannot_push_with_read_only(registry: Registry, skopeo: Skopeo) -> None:
    writer = registry.token("writer", _content("readonly/app"))
    assert skopeo.push("readonly/app", "writer", writer).ok
    reader = registry.token("reader", ["repositories/readonly/app/content/read"])
    assert skopeo.pull("readonly/app", "reader", reader).ok
    pushed = skopeo.push("readonly/app", "reader", reader, tag="v2")
    assert pushed.denied, pushed.output


def test_it_pushes_under_a_wildcard_to_a_new_repository_but_not_to_a_sibling_prefix(
    registry: Registry, skopeo: Skopeo
) -> None:
    password = registry.token("team-a", _content("teama/*"))
    created_later = skopeo.push("teama/made-up-later/service", "team-a", password)
    assert created_later.ok, created_later.output
    assert skopeo.pull("teama/made-up-later/service", "team-a", password).ok
    sibling = skopeo.push("teamab/service", "team-a", password)
    assert sibling.denied, sibling.output
    other_team = skopeo.push("teamb/service", "team-a", password)
    assert other_team.denied, other_team.output


def test_it_refuses_a_wrong_password(registry: Registry, skopeo: Skopeo) -> None:
    registry.token("builder", _content("wrongpw/app"))
    result = skopeo.push("wrongpw/app", "builder", "not-the-password")
    assert result.denied, result.output


def test_it_refuses_a_password_once_it_expires_and_takes_the_other_slot(registry: Registry, skopeo: Skopeo) -> None:
    # Six seconds: room for the push under a loaded CI machine, short enough to wait out.
    expiry = datetime.now(UTC) + timedelta(seconds=6)
    soon_expired = registry.token("rotating", _content("expiry/app"), expiry=expiry)
    pushed = skopeo.push("expiry/app", "rotating", soon_expired)
    assert pushed.ok, pushed.output
    assert datetime.now(UTC) < expiry
    current = registry.password("rotating", "password2")
    time.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds()) + 0.5)
    refused = skopeo.pull("expiry/app", "rotating", soon_expired)
    assert refused.denied, refused.output
    assert skopeo.pull("expiry/app", "rotating", current).ok


def test_it_refuses_a_password_that_expired_before_it_was_used(registry: Registry, skopeo: Skopeo) -> None:
    expired = registry.token("stale", _content("expired/app"), expiry=datetime.now(UTC) - timedelta(minutes=1))
    refused = skopeo.push("expired/app", "stale", expired)
    assert refused.denied, refused.output


def test_it_refuses_a_disabled_token_within_seconds(registry: Registry, skopeo: Skopeo) -> None:
    password = registry.token("builder", _content("disable/app"))
    assert skopeo.push("disable/app", "builder", password).ok
    registry.set_status("builder", "disabled")
    started = time.monotonic()
    refused = skopeo.pull("disable/app", "builder", password)
    assert refused.denied, refused.output
    assert time.monotonic() - started < 10
    registry.set_status("builder", "enabled")
    assert skopeo.pull("disable/app", "builder", password).ok


def test_it_refuses_a_deleted_password_slot(registry: Registry, skopeo: Skopeo) -> None:
    first = registry.token("rotating", _content("slots/app"))
    second = registry.password("rotating", "password2")
    assert skopeo.push("slots/app", "rotating", first).ok
    registry.keep_slots("rotating", "password2")
    refused = skopeo.pull("slots/app", "rotating", first)
    assert refused.denied, refused.output
    assert skopeo.pull("slots/app", "rotating", second).ok


def test_it_records_pushes_pulls_deletes_and_logins(
    data_plane: DataPlane, registry: Registry, skopeo: Skopeo
) -> None:
    password = registry.token("builder", [*_content("events/app"), "repositories/events/app/content/delete"])
    assert skopeo.push("events/app", "builder", password).ok
    assert skopeo.pull("events/app", "builder", password).ok
    deleted = skopeo.delete("events/app", "builder", password)
    assert deleted.ok, deleted.output
    table = "ContainerRegistryRepositoryEvents"

    def row(operation: str) -> dict[str, Any]:
        return data_plane.wait_for_event(
            table, lambda r: r["OperationName"] == operation and r["Repository"] == "events/app"
        )

    push, pull, delete = row("Push"), row("Pull"), row("Delete")
    assert (push["Identity"], push["Tag"], push["Digest"]) == ("builder", "v1", skopeo.digest)
    assert push["CallerIpAddress"] == "127.0.0.1"
    assert push["LoginServer"] == data_plane.login_server
    assert (pull["Identity"], pull["Digest"]) == ("builder", skopeo.digest)
    assert (delete["Identity"], delete["Digest"]) == ("builder", skopeo.digest)
    logins = data_plane.events("ContainerRegistryLoginEvents")
    assert any(
        r["Identity"] == "builder" and "repository:events/app:pull,push" in r["ScopesGranted"] for r in logins
    )
    assert not any(password in str(r) for r in [*logins, *data_plane.events(table)])


# ---- accessreq.dataplane.verify against the same registry ------------------------------------------------------


@pytest.fixture
def http_data_plane(settings: Any) -> None:
    settings.ACR_DATA_PLANE_SCHEME = "http"


RULES = [
    {"repository": "myapp/api", "actions": ["content/read", "content/write"]},
    {"repository": "shared/*", "actions": ["content/read"]},
]
RULE_ACTIONS = [
    "repositories/myapp/api/content/read",
    "repositories/myapp/api/content/write",
    "repositories/shared/*/content/read",
]


def test_it_verifies_a_token_that_opens_exactly_its_rules(registry: Registry, http_data_plane: None) -> None:
    password = registry.token("approved", RULE_ACTIONS)
    result = verify(registry.login_server, "approved", password, RULES, deadline_seconds=10)
    assert result.ok, result
    assert result.error is None
    allowed = {(c.repository, c.action) for c in result.checks if c.result}
    assert ("myapp/api", "content/read") in allowed and ("myapp/api", "content/write") in allowed
    shared = [c for c in result.checks if c.repository.startswith("shared/") and c.action == "content/read"]
    assert shared and shared[0].expected and shared[0].result  # a made-up repository under the prefix
    outside = [c for c in result.checks if not c.expected]
    assert any(c.repository == CATALOG for c in outside)
    assert any(not c.repository.startswith(("myapp/", "shared/")) and c.repository != CATALOG for c in outside)
    assert all(not c.result for c in outside)
    assert abs((result.checked_at - datetime.now(UTC)).total_seconds()) < 30


def test_it_fails_a_token_whose_scope_map_grants_more_than_the_rules(
    registry: Registry, http_data_plane: None
) -> None:
    password = registry.token("greedy", [*RULE_ACTIONS, "repositories/*/content/read"])
    result = verify(registry.login_server, "greedy", password, RULES, deadline_seconds=10)
    assert not result.ok
    assert result.checks
    wrong = result.mismatches
    assert wrong and all(c.action == "content/read" and not c.expected and c.result for c in wrong)
    assert "content/read" in (result.error or "")


def test_it_fails_a_wrong_password_within_the_deadline(registry: Registry, http_data_plane: None) -> None:
    registry.token("approved", RULE_ACTIONS)
    started = time.monotonic()
    result = verify(registry.login_server, "approved", "not-the-password", RULES, deadline_seconds=2.5)
    elapsed = time.monotonic() - started
    assert not result.ok
    assert result.checks == []
    assert "401" in (result.error or "")
    assert 2.0 <= elapsed < 6
    assert "not-the-password" not in (result.error or "")


def test_it_fails_when_the_registry_does_not_answer(http_data_plane: None) -> None:
    from acr_emulator.distribution import free_port

    result = verify(f"127.0.0.1:{free_port()}", "someone", "secret", RULES, deadline_seconds=1)
    assert not result.ok
    assert result.error


def test_it_waits_for_a_password_that_starts_working(
    data_plane: DataPlane, registry: Registry, http_data_plane: None
) -> None:
    # As with a regenerated password still replicating: refused at first, accepted a little later.
    password = registry.token("latecomer", RULE_ACTIONS)
    registry.set_status("latecomer", "disabled")
    enable = threading.Timer(1.5, registry.set_status, args=("latecomer", "enabled"))
    enable.start()
    try:
        result = verify(registry.login_server, "latecomer", password, RULES, deadline_seconds=15)
    finally:
        enable.join()
    assert result.ok, result
    failures = [r for r in data_plane.events("ContainerRegistryLoginEvents") if r["ResultType"] == "401"]
    assert failures
