from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m

from acr_emulator.testing import Emulator

from .helpers import READ, REGISTRY, REGISTRY_ID, RG, create_registry, create_scope_map, create_token, operations, raw


def test_it_creates_a_scope_map(client: ContainerRegistryManagementClient, registry: m.Registry) -> None:
    scope_map = create_scope_map(client, "team-a_pull", [READ, "repositories/sample/app/content/write"])
    assert scope_map.id == f"{REGISTRY_ID}/scopeMaps/team-a_pull"
    assert scope_map.type == "Microsoft.ContainerRegistry/registries/scopeMaps"
    assert scope_map.properties.type == "UserDefined"
    assert scope_map.provisioning_state == "Succeeded"
    assert scope_map.actions == [READ, "repositories/sample/app/content/write"]
    assert scope_map.description == "team-a_pull rules"


def test_it_answers_scope_map_put_with_200_succeeded_like_real_arm(emu: Emulator, registry: m.Registry) -> None:
    response = raw(emu, "PUT", f"{REGISTRY_ID}/scopeMaps/recorded", {"properties": {"actions": [READ]}})
    assert response.status == 200
    assert response.json()["properties"]["provisioningState"] == "Succeeded"
    assert "azure-asyncoperation" not in response.headers


def test_it_replaces_a_scope_map_on_put(client: ContainerRegistryManagementClient, registry: m.Registry) -> None:
    create_scope_map(client, "replaced", [READ])
    create_scope_map(client, "replaced", ["repositories/other/content/read"])
    assert client.scope_maps.get(RG, REGISTRY, "replaced").actions == ["repositories/other/content/read"]


def test_it_gets_a_scope_map(client: ContainerRegistryManagementClient, registry: m.Registry) -> None:
    create_scope_map(client, "Team-Pull", [READ])
    assert client.scope_maps.get(RG, REGISTRY, "team-pull").name == "Team-Pull"


def test_it_updates_a_scope_map(client: ContainerRegistryManagementClient, registry: m.Registry) -> None:
    create_scope_map(client, "patched", [READ])
    params = m.ScopeMapUpdateParameters(
        properties=m.ScopeMapPropertiesUpdateParameters(actions=["repositories/x/metadata/read"], description="new")
    )
    updated = client.scope_maps.begin_update(RG, REGISTRY, "patched", params).result()
    assert (updated.actions, updated.description) == (["repositories/x/metadata/read"], "new")


def test_it_deletes_a_scope_map(client: ContainerRegistryManagementClient, registry: m.Registry, emu: Emulator) -> None:
    create_scope_map(client, "doomed", [READ])
    client.scope_maps.begin_delete(RG, REGISTRY, "doomed").result()
    with pytest.raises(ResourceNotFoundError):
        client.scope_maps.get(RG, REGISTRY, "doomed")
    delete = operations(emu, "scope_maps.delete")[-1]
    polls = [r["status"] for r in operations(emu, "operations.get")]
    assert (delete["status"], polls) == (202, [202, 204])


def test_it_pages_scope_maps(client: ContainerRegistryManagementClient, registry: m.Registry, emu: Emulator) -> None:
    for i in range(4):
        create_scope_map(client, f"paged-{i}", [READ])
    emu.configure(page_size=3)
    names = [s.name for s in client.scope_maps.list(RG, REGISTRY)]
    assert len(names) == len(set(names)) == 9  # 5 system + 4 user
    assert len(operations(emu, "scope_maps.list")) == 3


def test_it_404s_an_unknown_scope_map(client: ContainerRegistryManagementClient, registry: m.Registry) -> None:
    with pytest.raises(ResourceNotFoundError) as exc:
        client.scope_maps.get(RG, REGISTRY, "missing-map")
    assert exc.value.error.code == "ResourceNotFound"


def test_it_404s_scope_maps_of_an_unknown_registry(client: ContainerRegistryManagementClient) -> None:
    with pytest.raises(ResourceNotFoundError):
        list(client.scope_maps.list(RG, "nosuchreg"))


@pytest.mark.parametrize("name", ["abcd", "x" * 51, "has space", "dot.ted", "_reserved"])
def test_it_rejects_invalid_scope_map_names(
    client: ContainerRegistryManagementClient, registry: m.Registry, name: str
) -> None:
    with pytest.raises(HttpResponseError) as exc:
        create_scope_map(client, name, [READ])
    assert exc.value.status_code == 400
    assert exc.value.error.code == "InvalidScopeMapName"


@pytest.mark.parametrize(
    "action",
    [
        "repositories/a/*/b/content/read",
        "repositories/a/team*/content/read",
        "repositories/**/content/read",
        "repositories/a/**/content/read",
        "repositories/*/*/content/read",
        "repositories/a/metadata/delete",
        "repositories/a/content/admin",
        "repositories/Upper/content/read",
        "repositories//content/read",
        "repositories/a-/content/read",
        "registries/a/content/read",
        "repositories/a/content/read/",
    ],
)
def test_it_rejects_invalid_actions(
    client: ContainerRegistryManagementClient, registry: m.Registry, action: str
) -> None:
    with pytest.raises(HttpResponseError) as exc:
        create_scope_map(client, "bad-actions", [action])
    assert exc.value.status_code == 400
    assert exc.value.error.code == "InvalidScopeMapActions"


@pytest.mark.parametrize(
    "action",
    [
        "repositories/*/content/read",
        "repositories/samples/*/content/write",
        "repositories/a/b__c/d-e/f.g/content/delete",
        "repositories/a--b/metadata/write",
        "repositories/team/content/content/read",
    ],
)
def test_it_accepts_valid_actions(client: ContainerRegistryManagementClient, registry: m.Registry, action: str) -> None:
    assert create_scope_map(client, "good-actions", [action]).actions == [action]


def test_it_rejects_an_empty_action_list(emu: Emulator, registry: m.Registry) -> None:
    response = raw(emu, "PUT", f"{REGISTRY_ID}/scopeMaps/no-actions", {"properties": {"actions": []}})
    assert response.status == 400


def test_it_allows_500_actions_and_not_501(client: ContainerRegistryManagementClient, registry: m.Registry) -> None:
    actions = [f"repositories/repo{i}/content/read" for i in range(501)]
    assert len(create_scope_map(client, "big-map", actions[:500]).actions) == 500
    with pytest.raises(HttpResponseError) as exc:
        create_scope_map(client, "too-big", actions)
    assert exc.value.status_code == 400


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_it_refuses_to_change_system_scope_maps(emu: Emulator, registry: m.Registry, method: str) -> None:
    body = {"properties": {"actions": [READ]}} if method != "DELETE" else None
    response = raw(emu, method, f"{REGISTRY_ID}/scopeMaps/_repositories_admin", body)
    assert response.status == 400
    assert response.json()["error"]["code"] == "SystemScopeMapReadOnly"


def test_it_refuses_to_delete_a_scope_map_in_use(
    client: ContainerRegistryManagementClient, registry: m.Registry
) -> None:
    scope_map = create_scope_map(client, "in-use", [READ])
    create_token(client, "holder", scope_map.id)
    with pytest.raises(ResourceExistsError) as exc:
        client.scope_maps.begin_delete(RG, REGISTRY, "in-use").result()
    assert exc.value.status_code == 409
    assert exc.value.error.code == "ScopeMapInUse"
    assert "holder" in exc.value.error.message


def test_it_limits_user_scope_maps_by_sku(client: ContainerRegistryManagementClient) -> None:
    create_registry(client, "basicreg1", sku="Basic")
    body = m.ScopeMap(properties=m.ScopeMapProperties(actions=[READ]))
    for i in range(100):
        client.scope_maps.begin_create(RG, "basicreg1", f"map-{i:03}", body).result()
    with pytest.raises(ResourceExistsError) as exc:
        client.scope_maps.begin_create(RG, "basicreg1", "one-too-many", body).result()
    assert exc.value.status_code == 409
    assert exc.value.error.code == "QuotaExceeded"
    # Replacing an existing one is not a new scope map.
    client.scope_maps.begin_create(RG, "basicreg1", "map-000", body).result()
