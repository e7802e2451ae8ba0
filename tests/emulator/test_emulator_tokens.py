from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m

from acr_emulator.testing import Emulator

from .helpers import (
    READ,
    REGISTRY,
    REGISTRY_ID,
    RG,
    create_registry,
    create_scope_map,
    create_token,
    generate,
    operations,
    raw,
)


def test_it_creates_a_token(client: ContainerRegistryManagementClient, scope_map: m.ScopeMap) -> None:
    token = create_token(client, "ci-Token-1", scope_map.id)
    assert token.id == f"{REGISTRY_ID}/tokens/ci-Token-1"
    assert token.type == "Microsoft.ContainerRegistry/registries/tokens"
    assert token.provisioning_state == "Succeeded"
    assert token.scope_map_id == scope_map.id
    assert token.status == "enabled"
    assert token.credentials.passwords == []


def test_it_answers_token_put_like_the_recorded_arm_session(emu: Emulator, scope_map: m.ScopeMap) -> None:
    emu.configure(lro_polls=2)
    body = {"properties": {"scopeMapId": scope_map.id, "status": "enabled"}}
    response = raw(emu, "PUT", f"{REGISTRY_ID}/tokens/recorded", body)
    assert response.status == 201
    props = response.json()["properties"]
    assert props["provisioningState"] == "Creating"
    assert props["credentials"]["passwords"] == []
    operation_url = response.headers["azure-asyncoperation"]
    assert operation_url.startswith(emu.url + "/subscriptions/")
    path = operation_url[len(emu.url) :]  # carries its own api-version
    assert raw(emu, "GET", path, api_version=None).json()["status"] == "Creating"
    # A GET of the token is a look at the operation too, so clients that never poll still see it finish.
    assert raw(emu, "GET", f"{REGISTRY_ID}/tokens/recorded").json()["properties"]["provisioningState"] == "Creating"
    assert raw(emu, "GET", path, api_version=None).json()["status"] == "Succeeded"
    assert raw(emu, "GET", f"{REGISTRY_ID}/tokens/recorded").json()["properties"]["provisioningState"] == "Succeeded"


def test_it_reports_creating_for_the_configured_number_of_polls(
    client: ContainerRegistryManagementClient, scope_map: m.ScopeMap, emu: Emulator
) -> None:
    emu.configure(lro_polls=3)
    token = create_token(client, "slow-token", scope_map.id)
    assert token.provisioning_state == "Succeeded"
    polls = operations(emu, "operations.get")
    assert len(polls) == 4  # three "Creating", then "Succeeded"
    assert all("/operationStatuses/" in p["path"] for p in polls)


def test_it_gets_a_token(client: ContainerRegistryManagementClient, scope_map: m.ScopeMap) -> None:
    create_token(client, "get-token", scope_map.id)
    assert client.tokens.get(RG, REGISTRY, "GET-token").name == "get-token"


def test_it_disables_a_token(client: ContainerRegistryManagementClient, scope_map: m.ScopeMap) -> None:
    create_token(client, "to-disable", scope_map.id)
    params = m.TokenUpdateParameters(properties=m.TokenUpdateProperties(status="disabled"))
    assert client.tokens.begin_update(RG, REGISTRY, "to-disable", params).result().status == "disabled"
    assert client.tokens.get(RG, REGISTRY, "to-disable").status == "disabled"


def test_it_moves_a_token_to_another_scope_map(
    client: ContainerRegistryManagementClient, scope_map: m.ScopeMap
) -> None:
    create_token(client, "mover", scope_map.id)
    other = create_scope_map(client, "team-push", ["repositories/sample/*/content/write"])
    params = m.TokenUpdateParameters(properties=m.TokenUpdateProperties(scope_map_id=other.id))
    assert client.tokens.begin_update(RG, REGISTRY, "mover", params).result().scope_map_id == other.id


def test_it_deletes_a_token(client: ContainerRegistryManagementClient, scope_map: m.ScopeMap) -> None:
    create_token(client, "doomed-token", scope_map.id)
    client.tokens.begin_delete(RG, REGISTRY, "doomed-token").result()
    with pytest.raises(ResourceNotFoundError):
        client.tokens.get(RG, REGISTRY, "doomed-token")
    # and now the scope map is free to go
    client.scope_maps.begin_delete(RG, REGISTRY, "team-pull").result()


def test_it_pages_tokens(client: ContainerRegistryManagementClient, scope_map: m.ScopeMap, emu: Emulator) -> None:
    for i in range(5):
        create_token(client, f"paged-{i}", scope_map.id)
    emu.configure(page_size=2)
    assert sorted(t.name for t in client.tokens.list(RG, REGISTRY)) == [f"paged-{i}" for i in range(5)]
    lists = operations(emu, "tokens.list")
    assert len(lists) == 3
    first = raw(emu, "GET", f"{REGISTRY_ID}/tokens").json()
    assert len(first["value"]) == 2
    assert first["nextLink"].startswith(emu.url + "/subscriptions/")
    assert "skipToken" in first["nextLink"]


def test_it_404s_an_unknown_token(client: ContainerRegistryManagementClient, registry: m.Registry) -> None:
    with pytest.raises(ResourceNotFoundError) as exc:
        client.tokens.get(RG, REGISTRY, "ghost-token")
    assert exc.value.error.code == "ResourceNotFound"


@pytest.mark.parametrize("name", ["abcd", "x" * 51, "under_score", "dot.ted"])
def test_it_rejects_invalid_token_names(
    client: ContainerRegistryManagementClient, scope_map: m.ScopeMap, name: str
) -> None:
    with pytest.raises(HttpResponseError) as exc:
        create_token(client, name, scope_map.id)
    assert exc.value.status_code == 400
    assert exc.value.error.code == "InvalidTokenName"


def test_it_rejects_a_scope_map_id_that_does_not_exist(
    client: ContainerRegistryManagementClient, scope_map: m.ScopeMap
) -> None:
    with pytest.raises(HttpResponseError) as exc:
        create_token(client, "orphan", scope_map.id.replace("team-pull", "no-such-map"))
    assert (exc.value.status_code, exc.value.error.code) == (400, "InvalidScopeMapId")


def test_it_rejects_a_scope_map_of_another_registry(
    client: ContainerRegistryManagementClient, scope_map: m.ScopeMap
) -> None:
    create_registry(client, "otherreg9")
    foreign = create_scope_map(client, "team-pull", [READ], registry="otherreg9")
    with pytest.raises(HttpResponseError) as exc:
        create_token(client, "crosser", foreign.id)
    assert exc.value.status_code == 400


def test_it_requires_a_scope_map_id(emu: Emulator, scope_map: m.ScopeMap) -> None:
    response = raw(emu, "PUT", f"{REGISTRY_ID}/tokens/no-scope", {"properties": {"status": "enabled"}})
    assert response.status == 400
    assert response.json()["error"]["target"] == "scopeMapId"


def test_it_rejects_an_unknown_status(emu: Emulator, scope_map: m.ScopeMap) -> None:
    body = {"properties": {"scopeMapId": scope_map.id, "status": "paused"}}
    assert raw(emu, "PUT", f"{REGISTRY_ID}/tokens/paused-tok", body).status == 400


def test_it_limits_tokens_by_sku(client: ContainerRegistryManagementClient) -> None:
    create_registry(client, "basicreg2", sku="Basic")
    scope_map = create_scope_map(client, "basic-pull", [READ], registry="basicreg2")
    body = m.Token(properties=m.TokenProperties(scope_map_id=scope_map.id))
    for i in range(100):
        client.tokens.begin_create(RG, "basicreg2", f"tok-{i:03}", body, polling=False)
    with pytest.raises(ResourceExistsError) as exc:
        client.tokens.begin_create(RG, "basicreg2", "one-too-many", body).result()
    assert (exc.value.status_code, exc.value.error.code) == (409, "QuotaExceeded")


# ---- credentials ---------------------------------------------------------------------------------------


def test_it_generates_both_passwords(client: ContainerRegistryManagementClient, scope_map: m.ScopeMap) -> None:
    token = create_token(client, "creds-token", scope_map.id)
    result = generate(client, token.id)
    assert result.username == "creds-token"
    assert [p.name for p in result.passwords] == ["password1", "password2"]
    values = [p.value for p in result.passwords]
    assert all(len(v) >= 40 for v in values)
    assert values[0] != values[1]
    assert all(p.creation_time is not None and p.expiry is None for p in result.passwords)


def test_it_answers_generate_credentials_with_200_and_both_passwords(
    client: ContainerRegistryManagementClient, scope_map: m.ScopeMap, emu: Emulator
) -> None:
    token = create_token(client, "raw-creds", scope_map.id)
    response = raw(emu, "POST", f"{REGISTRY_ID}/generateCredentials", {"tokenId": token.id})
    assert response.status == 200
    body = response.json()
    assert body["username"] == "raw-creds"
    assert [p["name"] for p in body["passwords"]] == ["password1", "password2"]


def test_it_regenerates_one_named_slot(client: ContainerRegistryManagementClient, scope_map: m.ScopeMap) -> None:
    token = create_token(client, "rotator", scope_map.id)
    first = generate(client, token.id)
    second = generate(client, token.id, name="password2")
    assert [p.name for p in second.passwords] == ["password2"]
    assert second.passwords[0].value != first.passwords[1].value
    slots = client.tokens.get(RG, REGISTRY, "rotator").credentials.passwords
    assert [p.name for p in slots] == ["password1", "password2"]


def test_it_honours_expiry(client: ContainerRegistryManagementClient, scope_map: m.ScopeMap) -> None:
    token = create_token(client, "expiring", scope_map.id)
    expiry = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    result = generate(client, token.id, name="password1", expiry=expiry)
    assert result.passwords[0].expiry == expiry
    [slot] = client.tokens.get(RG, REGISTRY, "expiring").credentials.passwords
    assert (slot.name, slot.expiry) == ("password1", expiry)


def test_it_never_shows_password_values_on_get(
    client: ContainerRegistryManagementClient, scope_map: m.ScopeMap, emu: Emulator
) -> None:
    token = create_token(client, "secretive", scope_map.id)
    values = [p.value for p in generate(client, token.id).passwords]
    single = raw(emu, "GET", f"{REGISTRY_ID}/tokens/secretive")
    listed = raw(emu, "GET", f"{REGISTRY_ID}/tokens")
    for response in (single, listed):
        assert not any(v in response.body.decode() for v in values)
    for token_json in (single.json(), *listed.json()["value"]):
        passwords = token_json["properties"]["credentials"]["passwords"]
        assert [set(p) for p in passwords] == [{"name", "creationTime"}] * 2
    stored = str(emu.state.to_dict())
    assert not any(v in stored for v in values)


def test_it_deletes_one_slot_by_patching_the_rest(
    client: ContainerRegistryManagementClient, scope_map: m.ScopeMap
) -> None:
    token = create_token(client, "slot-drop", scope_map.id)
    generate(client, token.id)
    keep = m.TokenCredentialsProperties(passwords=[m.TokenPassword(name="password2")])
    params = m.TokenUpdateParameters(properties=m.TokenUpdateProperties(credentials=keep))
    updated = client.tokens.begin_update(RG, REGISTRY, "slot-drop", params).result()
    assert [p.name for p in updated.credentials.passwords] == ["password2"]
    # A PATCH that says nothing about credentials leaves them alone.
    params = m.TokenUpdateParameters(properties=m.TokenUpdateProperties(status="enabled"))
    client.tokens.begin_update(RG, REGISTRY, "slot-drop", params).result()
    assert [p.name for p in client.tokens.get(RG, REGISTRY, "slot-drop").credentials.passwords] == ["password2"]


def test_it_404s_credentials_for_an_unknown_token(
    client: ContainerRegistryManagementClient, scope_map: m.ScopeMap
) -> None:
    with pytest.raises(ResourceNotFoundError) as exc:
        generate(client, f"{REGISTRY_ID}/tokens/ghost-token")
    assert exc.value.error.code == "ResourceNotFound"


def test_it_rejects_an_unknown_slot_name(client: ContainerRegistryManagementClient, scope_map: m.ScopeMap) -> None:
    token = create_token(client, "slotty", scope_map.id)
    with pytest.raises(HttpResponseError) as exc:
        generate(client, token.id, name="password3")
    assert exc.value.status_code == 400


def test_it_rejects_a_malformed_expiry(
    client: ContainerRegistryManagementClient, scope_map: m.ScopeMap, emu: Emulator
) -> None:
    token = create_token(client, "bad-expiry", scope_map.id)
    response = raw(emu, "POST", f"{REGISTRY_ID}/generateCredentials", {"tokenId": token.id, "expiry": "soon"})
    assert (response.status, response.json()["error"]["target"]) == (400, "expiry")


def test_it_requires_a_token_id(emu: Emulator, scope_map: m.ScopeMap) -> None:
    assert raw(emu, "POST", f"{REGISTRY_ID}/generateCredentials", {"name": "password1"}).status == 400


def test_it_keeps_expiry_per_slot(client: ContainerRegistryManagementClient, scope_map: m.ScopeMap) -> None:
    token = create_token(client, "two-expiries", scope_map.id)
    soon = datetime.now(UTC) + timedelta(days=1)
    generate(client, token.id, name="password1", expiry=soon)
    generate(client, token.id, name="password2")
    slots = {p.name: p.expiry for p in client.tokens.get(RG, REGISTRY, "two-expiries").credentials.passwords}
    assert slots["password2"] is None
    assert abs((slots["password1"] - soon).total_seconds()) < 1
