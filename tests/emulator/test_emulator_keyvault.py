"""The Key Vault secrets data plane, driven by the real azure-keyvault-secrets SDK over HTTPS."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from acr_emulator.testing import Emulator, start_emulator


class Credential:
    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("emulator", 2**31)


def secret_client(emu: Emulator, url: str, credential: Credential | None = None, **kwargs: Any) -> SecretClient:
    kwargs.setdefault("verify_challenge_resource", False)
    return SecretClient(
        url, credential or Credential(), connection_verify=emu.key_vault_ca_bundle, retry_total=0, **kwargs
    )


def test_it_sets_gets_lists_and_updates_versions_with_the_sdk(emu: Emulator) -> None:
    url = emu.create_vault("contosokv")
    assert url.startswith("https://127.0.0.1:")
    credential = Credential()
    client = secret_client(emu, url, credential)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    first = client.set_secret("ci-token", "one", content_type="text/plain", expires_on=expires, tags={"t": "1"})
    second = client.set_secret("ci-token", "two")
    # The SDK answered the challenge with a token for the vault resource.
    assert credential.scopes == [("https://vault.azure.net/.default",)]
    assert first.id == f"{url}/secrets/ci-token/{first.properties.version}"
    assert first.properties.expires_on == expires and first.properties.content_type == "text/plain"
    assert client.get_secret("ci-token").value == "two"
    assert client.get_secret("ci-token", first.properties.version).value == "one"
    versions = {p.version: p for p in client.list_properties_of_secret_versions("ci-token")}
    assert set(versions) == {first.properties.version, second.properties.version}
    assert versions[first.properties.version].tags == {"t": "1"}
    updated = client.update_secret_properties("ci-token", first.properties.version, enabled=False, tags={"x": "y"})
    assert updated.enabled is False and updated.tags == {"x": "y"}
    with pytest.raises(HttpResponseError) as disabled:
        client.get_secret("ci-token", first.properties.version)
    assert disabled.value.status_code == 403
    assert [p.name for p in client.list_properties_of_secrets()] == ["ci-token"]
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("nope")


def test_it_pages_versions(emu: Emulator) -> None:
    client = secret_client(emu, emu.create_vault("pagedkv"))
    for i in range(30):
        client.set_secret("many", str(i))
    assert len(list(client.list_properties_of_secret_versions("many", max_page_size=7))) == 30


def test_it_challenges_then_refuses_a_denied_caller(emu: Emulator) -> None:
    url = emu.create_vault("deniedkv")
    context = ssl.create_default_context(cafile=emu.key_vault_ca_bundle)
    with pytest.raises(urllib.error.HTTPError) as challenged:
        urllib.request.urlopen(f"{url}/secrets/x/?api-version=7.5", context=context, timeout=5)
    assert challenged.value.code == 401
    challenge = challenged.value.headers["WWW-Authenticate"]
    assert 'resource="https://vault.azure.net"' in challenge and "authorization=" in challenge
    emu.deny_vault("deniedkv")
    with pytest.raises(HttpResponseError) as denied:
        secret_client(emu, url).set_secret("x", "y")
    assert denied.value.status_code == 403
    emu.deny_vault("deniedkv", denied=False)
    assert secret_client(emu, url).set_secret("x", "y").value == "y"


def test_the_sdk_insists_on_the_vault_domain_unless_told_not_to(emu: Emulator) -> None:
    url = emu.create_vault("strictkv")
    with pytest.raises(ValueError, match="verify_challenge_resource"):
        secret_client(emu, url, verify_challenge_resource=True).set_secret("x", "y")


def test_it_speaks_https_only_to_clients_that_trust_its_certificate(emu: Emulator) -> None:
    url = emu.create_vault("tlskv")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/secrets?api-version=7.5", timeout=5)


def test_it_refuses_an_unknown_api_version(emu: Emulator) -> None:
    url = emu.create_vault("versionkv")
    context = ssl.create_default_context(cafile=emu.key_vault_ca_bundle)
    request = urllib.request.Request(f"{url}/secrets?api-version=1999-01-01", headers={"Authorization": "Bearer x"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, context=context, timeout=5)
    assert refused.value.code == 400
    assert json.load(refused.value)["error"]["code"] == "BadParameter"


def test_vaults_secrets_and_certificate_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "emulator.json"
    first = start_emulator(state_file=state)
    try:
        url = first.create_vault("keptkv")
        bundle = Path(first.key_vault_ca_bundle).read_bytes()
        secret_client(first, url).set_secret("kept", "value")
    finally:
        first.stop()
    second = start_emulator(state_file=state)
    try:
        assert Path(second.key_vault_ca_bundle).read_bytes() == bundle
        assert secret_client(second, url).get_secret("kept").value == "value"
    finally:
        second.stop()


def test_admin_endpoints_create_list_and_deny_vaults(emu: Emulator) -> None:
    def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{emu.url}{path}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=5) as response:
            return dict(json.load(response))

    created = call("POST", "/_emulator/vaults", {"name": "adminkv"})
    assert created["url"].startswith("https://") and created["ca_bundle"] == emu.key_vault_ca_bundle
    call("POST", "/_emulator/vaults/deny", {"name": "adminkv"})
    listed = call("GET", "/_emulator/vaults")
    assert listed["vaults"] == [{"name": "adminkv", "url": created["url"], "denied": True, "secrets": []}]
    emu.reset()
    assert call("GET", "/_emulator/vaults")["vaults"] == []
