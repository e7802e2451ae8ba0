from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m

from acr_emulator.testing import Emulator, make_client, start_emulator

from .helpers import READ, REGISTRY, create_registry, create_scope_map


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[Emulator]:
    emu = start_emulator(lro_polls=1, page_size=50)
    yield emu
    emu.stop()


@pytest.fixture
def emu(emulator_session: Emulator) -> Emulator:
    emulator_session.reset()
    return emulator_session


@pytest.fixture
def client(emu: Emulator) -> Iterator[ContainerRegistryManagementClient]:
    with make_client(emu.url) as c:
        yield c


@pytest.fixture
def registry(client: ContainerRegistryManagementClient) -> m.Registry:
    return create_registry(client, REGISTRY, sku="Standard")


@pytest.fixture
def scope_map(client: ContainerRegistryManagementClient, registry: m.Registry) -> m.ScopeMap:
    return create_scope_map(client, "team-pull", [READ])
