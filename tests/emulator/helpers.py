"""Shared helpers for the emulator tests: SDK shortcuts and a raw HTTP client."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any

from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m

from acr_emulator.testing import DEFAULT_SUBSCRIPTION, Emulator

RG = "rg-portal"
REGISTRY = "portalreg1"
REGISTRY_ID = (
    f"/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry"
    f"/registries/{REGISTRY}"
)


# A wildcard pull rule, the action most tests need.
READ = "repositories/sample/*/content/read"

def create_registry(
    client: ContainerRegistryManagementClient, name: str, sku: str = "Standard", rg: str = RG
) -> m.Registry:
    return client.registries.begin_create(rg, name, m.Registry(location="westeurope", sku=m.Sku(name=sku))).result()


def create_scope_map(
    client: ContainerRegistryManagementClient, name: str, actions: list[str], registry: str = REGISTRY
) -> m.ScopeMap:
    body = m.ScopeMap(properties=m.ScopeMapProperties(actions=actions, description=f"{name} rules"))
    return client.scope_maps.begin_create(RG, registry, name, body).result()


def create_token(
    client: ContainerRegistryManagementClient,
    name: str,
    scope_map_id: str,
    status: str = "enabled",
    registry: str = REGISTRY,
) -> m.Token:
    body = m.Token(properties=m.TokenProperties(scope_map_id=scope_map_id, status=status))
    return client.tokens.begin_create(RG, registry, name, body).result()


def generate(client: ContainerRegistryManagementClient, token_id: str, **kwargs: Any) -> m.GenerateCredentialsResult:
    params = m.GenerateCredentialsParameters(token_id=token_id, **kwargs)
    return client.registries.begin_generate_credentials(RG, REGISTRY, params).result()


class Raw:
    """A raw HTTP answer, for what the SDK cannot express or hides (headers, exact status codes)."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def raw(
    emu: Emulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    auth: str | None = "Bearer emulator",
    api_version: str | None = "2025-11-01",
) -> Raw:
    if api_version is not None:
        path = f"{path}{'&' if '?' in path else '?'}{urllib.parse.urlencode({'api-version': api_version})}"
    parsed = urllib.parse.urlsplit(emu.url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        return Raw(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def operations(emu: Emulator, name: str) -> list[dict[str, Any]]:
    return [r for r in emu.requests() if r["operation"] == name]
