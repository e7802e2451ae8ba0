from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m

from acr_emulator import names
from acr_emulator.dataplane import allowed_actions, effective_actions
from acr_emulator.testing import Emulator

from .helpers import REGISTRY, RG, create_scope_map, create_token, generate

# Microsoft's example from the repository-scoped permissions documentation.
DOCUMENTED = [
    "repositories/sample/*/content/read",
    "repositories/sample/teamA/*/content/write",
    "repositories/sample/teamA/projectB/content/delete",
]


def test_it_follows_the_documented_example() -> None:
    # The documentation writes "teamA"; repository names are lowercase, so the rules use the lowercase form.
    actions = [a.replace("teamA", "teama").replace("projectB", "projectb") for a in DOCUMENTED]
    assert effective_actions(actions, "sample/teama/projectb") == {"content/read", "content/write", "content/delete"}
    assert effective_actions(actions, "sample/teama/projectc") == {"content/read", "content/write"}
    assert effective_actions(actions, "sample/teamb/projectd") == {"content/read"}
    assert effective_actions(actions, "other/x") == frozenset()
    assert effective_actions(actions, "sample") == frozenset()


def test_it_treats_a_bare_star_as_every_repository() -> None:
    assert effective_actions(["repositories/*/metadata/read"], "any/thing/at/all") == {"metadata/read"}


def test_it_matches_exact_repositories_only_exactly() -> None:
    actions = ["repositories/app/content/read"]
    assert effective_actions(actions, "app") == {"content/read"}
    assert effective_actions(actions, "app/sub") == frozenset()
    assert effective_actions(actions, "application") == frozenset()


def test_it_rejects_malformed_rules() -> None:
    with pytest.raises(ValueError):
        effective_actions(["repositories/a/team*/content/read"], "a/team1")


@pytest.mark.parametrize("repository", ["a", "a/b", "a.b/c_d/e__f/g-h/i--j", "x" * 255])
def test_it_accepts_oci_repository_names(repository: str) -> None:
    assert names.is_valid_repository(repository)


@pytest.mark.parametrize("repository", ["", "A", "a/", "/a", "a//b", "-a", "a_", "a___b", "a..b", "x" * 256])
def test_it_rejects_invalid_repository_names(repository: str) -> None:
    assert not names.is_valid_repository(repository)


@pytest.mark.parametrize("pattern", ["*", "a/*", "a/b/*"])
def test_it_accepts_wildcards(pattern: str) -> None:
    assert names.is_valid_pattern(pattern)


@pytest.mark.parametrize("pattern", ["a/*/b", "a/team*", "**", "a/**", "*/*", "/*", "a*"])
def test_it_rejects_invalid_wildcards(pattern: str) -> None:
    assert not names.is_valid_pattern(pattern)


@pytest.fixture
def access(client: ContainerRegistryManagementClient, registry: m.Registry) -> tuple[m.Token, str]:
    scope_map = create_scope_map(
        client,
        "team-access",
        ["repositories/sample/*/content/read", "repositories/sample/teama/*/content/write"],
    )
    token = create_token(client, "pusher", scope_map.id)
    return token, generate(client, token.id).passwords[0].value


def test_it_grants_a_token_its_scope_map(emu: Emulator, access: tuple[m.Token, str]) -> None:
    _, password = access
    assert allowed_actions(emu.state, REGISTRY, "pusher", password, "sample/teama/app") == {
        "content/read",
        "content/write",
    }
    assert allowed_actions(emu.state, REGISTRY, "pusher", password, "sample/teamb/app") == {"content/read"}
    assert allowed_actions(emu.state, REGISTRY, "pusher", password, "elsewhere") == frozenset()


def test_it_denies_a_wrong_password(emu: Emulator, access: tuple[m.Token, str]) -> None:
    assert allowed_actions(emu.state, REGISTRY, "pusher", "not-the-password", "sample/x") == frozenset()


def test_it_denies_unknown_tokens_and_registries(emu: Emulator, access: tuple[m.Token, str]) -> None:
    _, password = access
    assert allowed_actions(emu.state, REGISTRY, "someone-else", password, "sample/x") == frozenset()
    assert allowed_actions(emu.state, "otherreg", "pusher", password, "sample/x") == frozenset()


def test_it_denies_a_disabled_token(
    client: ContainerRegistryManagementClient, emu: Emulator, access: tuple[m.Token, str]
) -> None:
    _, password = access
    params = m.TokenUpdateParameters(properties=m.TokenUpdateProperties(status="disabled"))
    client.tokens.begin_update(RG, REGISTRY, "pusher", params).result()
    assert allowed_actions(emu.state, REGISTRY, "pusher", password, "sample/x") == frozenset()


def test_it_denies_an_expired_slot_and_allows_the_other(
    client: ContainerRegistryManagementClient, emu: Emulator, access: tuple[m.Token, str]
) -> None:
    token, _ = access
    expiry = datetime.now(UTC) + timedelta(hours=1)
    short = generate(client, token.id, name="password1", expiry=expiry).passwords[0].value
    long = generate(client, token.id, name="password2").passwords[0].value
    assert allowed_actions(emu.state, REGISTRY, "pusher", short, "sample/x") == {"content/read"}
    later = expiry + timedelta(seconds=1)
    assert allowed_actions(emu.state, REGISTRY, "pusher", short, "sample/x", now=later) == frozenset()
    assert allowed_actions(emu.state, REGISTRY, "pusher", long, "sample/x", now=later) == {"content/read"}


def test_it_denies_a_deleted_slot(
    client: ContainerRegistryManagementClient, emu: Emulator, access: tuple[m.Token, str]
) -> None:
    _, password = access
    keep = m.TokenCredentialsProperties(passwords=[m.TokenPassword(name="password2")])
    params = m.TokenUpdateParameters(properties=m.TokenUpdateProperties(credentials=keep))
    client.tokens.begin_update(RG, REGISTRY, "pusher", params).result()
    assert allowed_actions(emu.state, REGISTRY, "pusher", password, "sample/x") == frozenset()


def test_it_follows_scope_map_edits_at_once(
    client: ContainerRegistryManagementClient, emu: Emulator, access: tuple[m.Token, str]
) -> None:
    _, password = access
    params = m.ScopeMapUpdateParameters(
        properties=m.ScopeMapPropertiesUpdateParameters(actions=["repositories/other/content/delete"])
    )
    client.scope_maps.begin_update(RG, REGISTRY, "team-access", params).result()
    assert allowed_actions(emu.state, REGISTRY, "pusher", password, "sample/x") == frozenset()
    assert allowed_actions(emu.state, REGISTRY, "pusher", password, "other") == {"content/delete"}
