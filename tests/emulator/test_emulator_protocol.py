from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.mgmt.containerregistry import models as m

from acr_emulator.testing import Emulator, make_client

from .helpers import REGISTRY, REGISTRY_ID, RG, raw


def test_it_requires_an_api_version(emu: Emulator, registry: m.Registry) -> None:
    response = raw(emu, "GET", REGISTRY_ID, api_version=None)
    assert response.status == 400
    assert response.json()["error"]["code"] == "MissingApiVersionParameter"


def test_it_rejects_another_api_version(emu: Emulator, registry: m.Registry) -> None:
    response = raw(emu, "GET", REGISTRY_ID, api_version="2023-01-01-preview")
    assert response.status == 400
    assert response.json()["error"]["code"] == "InvalidApiVersionParameter"


@pytest.mark.parametrize("auth", [None, "Basic dXNlcjpwYXNz", "Bearer "])
def test_it_requires_a_bearer_token(emu: Emulator, registry: m.Registry, auth: str | None) -> None:
    response = raw(emu, "GET", REGISTRY_ID, auth=auth)
    assert response.status == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"
    assert "www-authenticate" in response.headers


def test_it_maps_401_to_the_sdk_authentication_error(emu: Emulator, registry: m.Registry) -> None:
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    with (
        make_client(emu.url, authentication_policy=SansIOHTTPPolicy()) as client,
        pytest.raises(ClientAuthenticationError) as exc,
    ):
        client.registries.get(RG, REGISTRY)
    assert exc.value.status_code == 401


def test_it_accepts_any_bearer_token(emu: Emulator, registry: m.Registry) -> None:
    assert raw(emu, "GET", REGISTRY_ID, auth="Bearer anything.at.all").status == 200


def test_it_404s_unknown_routes_in_arm_shape(emu: Emulator) -> None:
    response = raw(emu, "GET", "/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts")
    assert response.status == 404
    assert set(response.json()["error"]) >= {"code", "message"}


def test_it_rejects_a_body_that_is_not_json(emu: Emulator, registry: m.Registry) -> None:
    response = raw(emu, "PUT", f"{REGISTRY_ID}/scopeMaps/broken-map", body="not an object")
    assert response.status == 400
    assert response.json()["error"]["code"] == "InvalidRequestContent"


def test_it_sends_content_length_on_every_response(emu: Emulator, registry: m.Registry) -> None:
    for response in (
        raw(emu, "GET", REGISTRY_ID),
        raw(emu, "DELETE", f"{REGISTRY_ID}/tokens/absent-token"),
        raw(emu, "GET", REGISTRY_ID, auth=None),
    ):
        assert response.headers["content-length"] == str(len(response.body))


def test_it_treats_deleting_an_absent_child_as_done(emu: Emulator, registry: m.Registry) -> None:
    assert raw(emu, "DELETE", f"{REGISTRY_ID}/tokens/absent-token").status == 204
    assert raw(emu, "DELETE", f"{REGISTRY_ID}/scopeMaps/absent-map").status == 204
