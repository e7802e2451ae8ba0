from __future__ import annotations

import json
import urllib.request

from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m

from acr_emulator.testing import Emulator

from .helpers import REGISTRY, REGISTRY_ID, RG, raw


def _admin(emu: Emulator, method: str, path: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{emu.url}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        raw_body = response.read()
        return response.status, json.loads(raw_body) if raw_body else None


def test_it_reports_health(emu: Emulator) -> None:
    assert _admin(emu, "GET", "/_emulator/health") == (200, {"status": "ok"})


def test_it_logs_requests(client: ContainerRegistryManagementClient, registry: m.Registry, emu: Emulator) -> None:
    client.registries.get(RG, REGISTRY)
    status, body = _admin(emu, "GET", "/_emulator/requests")
    assert status == 200
    assert isinstance(body, dict)
    last = body["requests"][-1]
    assert {k: last[k] for k in ("method", "path", "status", "operation")} == {
        "method": "GET",
        "path": REGISTRY_ID,
        "status": 200,
        "operation": "registries.get",
    }
    assert "?" not in last["path"]
    assert last["time"]
    assert emu.requests()[-1]["path"] == REGISTRY_ID


def test_it_resets_over_http(client: ContainerRegistryManagementClient, registry: m.Registry, emu: Emulator) -> None:
    emu.add_fault(count=5, status=500, operation="tokens.list")
    assert _admin(emu, "POST", "/_emulator/reset")[0] == 204
    assert emu.requests() == []
    assert raw(emu, "GET", REGISTRY_ID).status == 404
    assert raw(emu, "GET", f"{REGISTRY_ID}/tokens").status == 404  # the fault is gone too


def test_it_resets_in_process(client: ContainerRegistryManagementClient, registry: m.Registry, emu: Emulator) -> None:
    emu.configure(page_size=1)
    emu.reset()
    assert emu.state.registries == {}
    assert emu.requests() == []
    defaults = {"lro_retry_after": 0, "write_budget": None, "data_plane": None, "data_plane_registry": None}
    assert _admin(emu, "GET", "/_emulator/config") == (200, {"lro_polls": 1, "page_size": 50, **defaults})


def test_it_configures_over_http(
    client: ContainerRegistryManagementClient, registry: m.Registry, emu: Emulator
) -> None:
    assert _admin(emu, "POST", "/_emulator/config", {"lro_polls": 0, "page_size": 2}) == (
        200,
        {
            "lro_polls": 0,
            "page_size": 2,
            "lro_retry_after": 0,
            "write_budget": None,
            "data_plane": None,
            "data_plane_registry": None,
        },
    )
    assert len(raw(emu, "GET", f"{REGISTRY_ID}/scopeMaps").json()["value"]) == 2
    sm = raw(emu, "PUT", f"{REGISTRY_ID}/scopeMaps/quick", {"properties": {"actions": ["repositories/a/content/read"]}})
    token = raw(emu, "PUT", f"{REGISTRY_ID}/tokens/quick", {"properties": {"scopeMapId": sm.json()["id"]}})
    operation_path = token.headers["azure-asyncoperation"][len(emu.url) :]
    assert raw(emu, "GET", operation_path, api_version=None).json()["status"] == "Succeeded"
