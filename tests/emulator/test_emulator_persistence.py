from __future__ import annotations

import json
from pathlib import Path

from azure.mgmt.containerregistry import models as m

from acr_emulator import dataplane
from acr_emulator.testing import make_client, start_emulator

from .helpers import REGISTRY, RG, create_registry, create_scope_map, create_token, generate


def test_it_keeps_state_across_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "acr.json"
    emu = start_emulator(state_file=state_file)
    try:
        with make_client(emu.url) as client:
            create_registry(client, REGISTRY)
            scope_map = create_scope_map(client, "kept-map", ["repositories/kept/*/content/read"])
            token = create_token(client, "kept-token", scope_map.id)
            password = generate(client, token.id).passwords[0].value
    finally:
        emu.stop()
    assert state_file.exists()
    assert password not in state_file.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["acr.json"]  # no temp files left behind

    emu = start_emulator(state_file=state_file)
    try:
        with make_client(emu.url) as client:
            token = client.tokens.get(RG, REGISTRY, "kept-token")
            assert token.provisioning_state == "Succeeded"
            assert [p.name for p in token.credentials.passwords] == ["password1", "password2"]
            assert client.scope_maps.get(RG, REGISTRY, "kept-map").actions == ["repositories/kept/*/content/read"]
        granted = dataplane.allowed_actions(emu.state, REGISTRY, "kept-token", password, "kept/app")
        assert granted == {"content/read"}
    finally:
        emu.stop()


def test_it_writes_state_after_each_change(tmp_path: Path) -> None:
    state_file = tmp_path / "acr.json"
    emu = start_emulator(state_file=state_file)
    try:
        with make_client(emu.url) as client:
            create_registry(client, "writtenreg", sku="Basic")
            saved = json.loads(state_file.read_text())
            assert [r["name"] for r in saved["registries"]] == ["writtenreg"]
            params = m.RegistryUpdateParameters(
                properties=m.RegistryPropertiesUpdateParameters(admin_user_enabled=True)
            )
            client.registries.begin_update(RG, "writtenreg", params).result()
            assert json.loads(state_file.read_text())["registries"][0]["admin_user_enabled"] is True
        emu.reset()
        assert json.loads(state_file.read_text())["registries"] == []
    finally:
        emu.stop()
