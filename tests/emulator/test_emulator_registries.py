from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m

from acr_emulator.testing import Emulator

from .helpers import REGISTRY, REGISTRY_ID, RG, create_registry, raw


def test_it_creates_a_registry(client: ContainerRegistryManagementClient) -> None:
    body = m.Registry(
        location="westeurope",
        sku=m.Sku(name="Premium"),
        properties=m.RegistryProperties(admin_user_enabled=True),
    )
    registry = client.registries.begin_create(RG, "MyRegistry1", body).result()
    assert registry.id.endswith("/registries/MyRegistry1")
    assert registry.name == "MyRegistry1"
    assert registry.type == "Microsoft.ContainerRegistry/registries"
    assert registry.location == "westeurope"
    assert (registry.sku.name, registry.sku.tier) == ("Premium", "Premium")
    assert registry.login_server == "myregistry1.azurecr.io"
    assert registry.admin_user_enabled is True
    assert registry.provisioning_state == "Succeeded"
    assert registry.creation_date is not None


def test_it_gets_a_registry(client: ContainerRegistryManagementClient, registry: m.Registry) -> None:
    got = client.registries.get(RG, REGISTRY)
    assert got.id == REGISTRY_ID
    assert got.login_server == f"{REGISTRY}.azurecr.io"


def test_it_matches_path_segments_and_names_case_insensitively(
    client: ContainerRegistryManagementClient, registry: m.Registry, emu: Emulator
) -> None:
    assert client.registries.get(RG.upper(), REGISTRY.upper()).name == REGISTRY
    path = REGISTRY_ID.replace("resourceGroups", "RESOURCEGROUPS").replace(
        "Microsoft.ContainerRegistry", "microsoft.containerregistry"
    )
    assert raw(emu, "GET", path).status == 200


def test_it_lists_registries_in_a_resource_group(client: ContainerRegistryManagementClient) -> None:
    create_registry(client, "firstreg1")
    create_registry(client, "secondreg2")
    create_registry(client, "elsewhere3", rg="other-rg")
    assert sorted(r.name for r in client.registries.list_by_resource_group(RG)) == ["firstreg1", "secondreg2"]
    assert len(list(client.registries.list())) == 3


def test_it_updates_admin_user(client: ContainerRegistryManagementClient, registry: m.Registry) -> None:
    params = m.RegistryUpdateParameters(properties=m.RegistryPropertiesUpdateParameters(admin_user_enabled=True))
    assert client.registries.begin_update(RG, REGISTRY, params).result().admin_user_enabled is True
    assert client.registries.get(RG, REGISTRY).admin_user_enabled is True


def test_it_deletes_a_registry(client: ContainerRegistryManagementClient, registry: m.Registry) -> None:
    client.registries.begin_delete(RG, REGISTRY).result()
    with pytest.raises(ResourceNotFoundError):
        client.registries.get(RG, REGISTRY)


def test_it_answers_delete_with_202_and_location(emu: Emulator, registry: m.Registry) -> None:
    response = raw(emu, "DELETE", REGISTRY_ID)
    assert response.status == 202
    assert response.headers["location"].startswith(emu.url + "/subscriptions/")


def test_it_gives_every_registry_system_scope_maps(
    client: ContainerRegistryManagementClient, registry: m.Registry
) -> None:
    maps = {s.name: s for s in client.scope_maps.list(RG, REGISTRY)}
    assert {"_repositories_admin", "_repositories_pull", "_repositories_push"} <= set(maps)
    assert all(s.properties.type == "SystemDefined" for s in maps.values())
    assert maps["_repositories_pull"].actions == ["repositories/*/content/read"]
    assert set(maps["_repositories_push"].actions) == {"repositories/*/content/read", "repositories/*/content/write"}


def test_it_404s_an_unknown_registry(client: ContainerRegistryManagementClient) -> None:
    with pytest.raises(ResourceNotFoundError) as exc:
        client.registries.get(RG, "nosuchreg")
    assert exc.value.error.code == "ResourceNotFound"


def test_it_404s_a_registry_in_another_resource_group(
    client: ContainerRegistryManagementClient, registry: m.Registry
) -> None:
    with pytest.raises(ResourceNotFoundError):
        client.registries.get("another-rg", REGISTRY)


@pytest.mark.parametrize("name", ["abc", "has-dash", "x" * 51, "under_score"])
def test_it_rejects_invalid_registry_names(client: ContainerRegistryManagementClient, name: str) -> None:
    with pytest.raises(HttpResponseError) as exc:
        create_registry(client, name)
    assert exc.value.status_code == 400
    assert exc.value.error.code == "InvalidRegistryName"


def test_it_rejects_an_unknown_sku(client: ContainerRegistryManagementClient) -> None:
    body = m.Registry(location="westeurope", sku=m.Sku(name="Classic"))
    with pytest.raises(HttpResponseError) as exc:
        client.registries.begin_create(RG, "classicreg", body).result()
    assert exc.value.status_code == 400


def test_it_keeps_registry_names_globally_unique(
    client: ContainerRegistryManagementClient, registry: m.Registry
) -> None:
    with pytest.raises(ResourceExistsError) as exc:
        create_registry(client, REGISTRY, rg="another-rg")
    assert exc.value.status_code == 409
    assert exc.value.error.code == "AlreadyInUse"
