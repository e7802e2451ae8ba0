from __future__ import annotations

import time

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m

from acr_emulator import dataplane
from acr_emulator.faults import Fault
from acr_emulator.testing import Emulator, make_client

from .helpers import (
    REGISTRY,
    REGISTRY_ID,
    RG,
    create_registry,
    create_token,
    generate,
    operations,
    raw,
)


def test_it_throttles_with_retry_after(emu: Emulator, scope_map: m.ScopeMap) -> None:
    emu.add_fault(count=1, status=429, retry_after=1, operation="tokens.create")
    with make_client(emu.url, retry_total=0) as client, pytest.raises(HttpResponseError) as exc:
        create_token(client, "throttled", scope_map.id)
    assert exc.value.status_code == 429
    assert exc.value.error.code == "TooManyRequests"
    assert exc.value.response.headers["Retry-After"] == "1"


def test_it_lets_the_sdk_retry_through_throttling(
    client: ContainerRegistryManagementClient, emu: Emulator, scope_map: m.ScopeMap
) -> None:
    emu.add_fault(count=1, status=429, retry_after=0, operation="tokens.create")
    assert create_token(client, "retried", scope_map.id).provisioning_state == "Succeeded"
    assert [r["status"] for r in operations(emu, "tokens.create")] == [429, 201]


@pytest.mark.parametrize("status", [500, 503])
def test_it_injects_server_errors(emu: Emulator, scope_map: m.ScopeMap, status: int) -> None:
    emu.add_fault(count=1, status=status, operation="scope_maps.get")
    with make_client(emu.url, retry_total=0) as client, pytest.raises(HttpResponseError) as exc:
        client.scope_maps.get(RG, REGISTRY, "team-pull")
    assert exc.value.status_code == status


def test_it_recovers_from_a_server_error_with_default_retries(
    client: ContainerRegistryManagementClient, emu: Emulator, scope_map: m.ScopeMap
) -> None:
    emu.add_fault(count=1, status=503, operation="scope_maps.get")
    assert client.scope_maps.get(RG, REGISTRY, "team-pull").name == "team-pull"
    assert [r["status"] for r in operations(emu, "scope_maps.get")] == [503, 200]


def test_it_only_faults_the_named_operation(
    client: ContainerRegistryManagementClient, emu: Emulator, scope_map: m.ScopeMap
) -> None:
    emu.add_fault(count=5, status=500, operation="tokens.delete")
    create_token(client, "unaffected", scope_map.id)
    assert client.scope_maps.get(RG, REGISTRY, "team-pull").name == "team-pull"


def test_it_uses_up_a_fault_after_count_calls(emu: Emulator, scope_map: m.ScopeMap) -> None:
    emu.add_fault(count=2, status=500)
    with make_client(emu.url, retry_total=0) as client:
        for _ in range(2):
            with pytest.raises(HttpResponseError):
                client.scope_maps.get(RG, REGISTRY, "team-pull")
        assert client.scope_maps.get(RG, REGISTRY, "team-pull").name == "team-pull"


def test_it_leaves_polls_alone_unless_named(
    client: ContainerRegistryManagementClient, emu: Emulator, scope_map: m.ScopeMap
) -> None:
    emu.add_fault(count=1, status=500, operation="tokens.get")
    emu.add_fault(count=1, status=503, operation="operations.get")
    create_token(client, "polled", scope_map.id)
    assert [r["status"] for r in operations(emu, "operations.get")] == [503, 200, 200]


def test_it_delays_calls(client: ContainerRegistryManagementClient, emu: Emulator, scope_map: m.ScopeMap) -> None:
    emu.add_fault(count=1, delay=0.3, operation="scope_maps.get")
    started = time.monotonic()
    assert client.scope_maps.get(RG, REGISTRY, "team-pull").name == "team-pull"
    assert time.monotonic() - started >= 0.3


def test_it_fails_a_token_creation(
    client: ContainerRegistryManagementClient, emu: Emulator, scope_map: m.ScopeMap
) -> None:
    emu.add_fault(count=1, lro_fail=True, operation="tokens.create")
    with pytest.raises(HttpResponseError):
        create_token(client, "failing", scope_map.id)
    # As ARM does, the failed resource stays behind in Failed state; it authenticates nothing.
    assert client.tokens.get(RG, REGISTRY, "failing").provisioning_state == "Failed"
    last_poll = raw(emu, "GET", operations(emu, "operations.get")[-1]["path"]).json()
    assert last_poll["status"] == "Failed"
    assert last_poll["error"]["code"]
    # A retried PUT replaces it.
    assert create_token(client, "failing", scope_map.id).provisioning_state == "Succeeded"


def test_it_fails_a_scope_map_deletion_and_keeps_the_scope_map(
    client: ContainerRegistryManagementClient, emu: Emulator, scope_map: m.ScopeMap
) -> None:
    emu.add_fault(count=1, lro_fail=True, operation="scope_maps.delete")
    with pytest.raises(HttpResponseError):
        client.scope_maps.begin_delete(RG, REGISTRY, "team-pull").result()
    assert client.scope_maps.get(RG, REGISTRY, "team-pull").provisioning_state == "Succeeded"


def test_it_fails_credential_generation_without_changing_passwords(
    client: ContainerRegistryManagementClient, emu: Emulator, scope_map: m.ScopeMap
) -> None:
    token = create_token(client, "no-creds", scope_map.id)
    emu.add_fault(count=1, lro_fail=True, operation="registries.generate_credentials")
    with pytest.raises(HttpResponseError):
        generate(client, token.id)
    assert client.tokens.get(RG, REGISTRY, "no-creds").credentials.passwords == []


def test_it_fails_an_update_and_leaves_the_resource_unchanged(
    client: ContainerRegistryManagementClient, emu: Emulator, scope_map: m.ScopeMap
) -> None:
    create_token(client, "steady", scope_map.id)
    emu.add_fault(count=1, lro_fail=True)  # no operation: the next long-running call
    params = m.TokenUpdateParameters(properties=m.TokenUpdateProperties(status="disabled"))
    with pytest.raises(HttpResponseError):
        client.tokens.begin_update(RG, REGISTRY, "steady", params).result()
    assert client.tokens.get(RG, REGISTRY, "steady").status == "enabled"


@pytest.mark.parametrize("operation", ["registries.get", "tokens.create"])
def test_it_drops_the_connection(emu: Emulator, scope_map: m.ScopeMap, operation: str) -> None:
    emu.add_fault(count=1, drop=True, operation=operation)
    with make_client(emu.url, retry_total=0) as client, pytest.raises((ServiceRequestError, ServiceResponseError)):
        if operation == "registries.get":
            client.registries.get(RG, REGISTRY)
        else:
            create_token(client, "dropped", scope_map.id)
    assert operations(emu, operation)[-1]["status"] == 0
    # The emulator itself is fine afterwards.
    assert raw(emu, "GET", REGISTRY_ID).status == 200


def test_it_clears_faults(emu: Emulator, scope_map: m.ScopeMap) -> None:
    emu.add_fault(count=3, status=500)
    emu.clear_faults()
    assert raw(emu, "GET", REGISTRY_ID).status == 200


def test_it_takes_faults_over_http(emu: Emulator, scope_map: m.ScopeMap) -> None:
    fault = {"count": 1, "operation": "registries.get", "status": 429, "retry_after": 0}
    assert raw(emu, "POST", "/_emulator/faults", fault, auth=None, api_version=None).status == 201
    response = raw(emu, "GET", REGISTRY_ID)
    assert (response.status, response.headers["retry-after"]) == (429, "0")
    assert response.json()["error"]["code"] == "TooManyRequests"
    raw(emu, "POST", "/_emulator/faults", {"count": 2, "status": 500}, auth=None, api_version=None)
    assert raw(emu, "DELETE", "/_emulator/faults", auth=None, api_version=None).status == 204
    assert raw(emu, "GET", REGISTRY_ID).status == 200


@pytest.mark.parametrize(
    "fault",
    [
        {"count": 0, "status": 500},
        {"count": 1, "status": 404},
        {"count": 1, "operation": "tokens.explode", "status": 500},
        {"count": 1},
        {"count": 1, "lro_fail": True, "operation": "tokens.get"},
        {"count": 1, "status": 500, "colour": "red"},
        {"count": 1, "status": 500, "probability": 0},
        {"count": 1, "status": 500, "probability": 1.5},
        {"count": 1, "status": 500, "probability": True},
    ],
)
def test_it_rejects_bad_faults(emu: Emulator, fault: dict[str, object]) -> None:
    assert raw(emu, "POST", "/_emulator/faults", fault, auth=None, api_version=None).status == 400


def test_it_faults_a_share_of_calls_with_a_probability() -> None:
    from acr_emulator.faults import FaultBook

    book = FaultBook(seed=7)
    book.add(Fault.from_dict({"count": 10_000, "status": 503, "probability": 0.3}))
    hits = sum(book.take("tokens.get") is not None for _ in range(2000))
    assert 500 < hits < 700  # about 30%
    assert book.list()[0]["count"] == 10_000 - hits  # calls that escaped it did not use it up
    assert Fault.parse_spec("status=500,probability=0.25").probability == 0.25


def test_it_parses_cli_fault_specs() -> None:
    fault = Fault.parse_spec("count=2,status=429,retry_after=1,operation=tokens.create")
    assert (fault.count, fault.status, fault.retry_after, fault.operation) == (2, 429, 1, "tokens.create")
    assert Fault.parse_spec('{"count": 1, "drop": true}').drop is True
    assert Fault.parse_spec("delay=0.5").delay == 0.5
    assert Fault.parse_spec("lro_fail=true,operation=tokens.create").lro_fail is True
    with pytest.raises(ValueError):
        Fault.parse_spec("status")


def test_it_leaves_a_failed_token_without_access(
    client: ContainerRegistryManagementClient, emu: Emulator, scope_map: m.ScopeMap
) -> None:
    emu.add_fault(count=1, lro_fail=True, operation="tokens.create")
    with pytest.raises(HttpResponseError):
        create_token(client, "half-made", scope_map.id)
    password = generate(client, f"{REGISTRY_ID}/tokens/half-made").passwords[0].value
    assert dataplane.allowed_actions(emu.state, REGISTRY, "half-made", password, "sample/app") == frozenset()


def test_it_repairs_a_failed_registry_creation_on_retry(
    client: ContainerRegistryManagementClient, emu: Emulator
) -> None:
    emu.add_fault(count=1, lro_fail=True, operation="registries.create")
    with pytest.raises(HttpResponseError):
        create_registry(client, "flakyreg1")
    assert client.registries.get(RG, "flakyreg1").provisioning_state == "Failed"
    assert create_registry(client, "flakyreg1").provisioning_state == "Succeeded"
