"""The token server's protocol (Docker token authentication as ACR serves it) and the data plane's events, over HTTP,
without a registry: the registry side is in tests/test_data_plane.py."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from acr_emulator.testing import Emulator, start_emulator
from acr_emulator.tokenserver import DEFAULT_TOKEN_LIFETIME, ISSUER, libtrust_key_id, parse_scopes

from .helpers import REGISTRY, RG, create_registry, create_scope_map, create_token, generate

SERVICE = f"{REGISTRY}.azurecr.io"


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = json.loads(body) if body else None

    @property
    def claims(self) -> dict[str, Any]:
        return jwt.decode(self.body["token"], options={"verify_signature": False})

    @property
    def access(self) -> dict[str, list[str]]:
        return {entry["name"]: entry["actions"] for entry in self.claims["access"]}


def ask(
    emu: Emulator,
    *scopes: str,
    username: str | None = "pusher",
    password: str | None = None,
    service: str | None = SERVICE,
    method: str = "GET",
) -> Answer:
    params = ([("service", service)] if service is not None else []) + [("scope", s) for s in scopes]
    request = urllib.request.Request(f"{emu.url}/oauth2/token?{urllib.parse.urlencode(params)}", method=method)
    if username is not None:
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, dict(exc.headers), exc.read())


def logins(emu: Emulator) -> list[dict[str, Any]]:
    return emu.events("ContainerRegistryLoginEvents")["ContainerRegistryLoginEvents"]


@pytest.fixture
def token(client: ContainerRegistryManagementClient, registry: m.Registry) -> tuple[m.Token, str]:
    scope_map = create_scope_map(
        client,
        "team-access",
        [
            "repositories/sample/app/content/read",
            "repositories/sample/app/content/write",
            "repositories/team/*/content/read",
            "repositories/team/*/metadata/read",
            "repositories/team/api/metadata/write",
        ],
    )
    created = create_token(client, "pusher", scope_map.id)
    return created, generate(client, created.id, name="password1").passwords[0].value


def test_it_grants_what_was_asked_and_the_scope_map_allows(emu: Emulator, token: tuple[m.Token, str]) -> None:
    _, password = token
    answer = ask(emu, "repository:sample/app:pull,push,delete", password=password)
    assert answer.status == 200
    assert answer.access == {"sample/app": ["pull", "push"]}
    assert answer.body["token"] == answer.body["access_token"]
    assert answer.body["expires_in"] == DEFAULT_TOKEN_LIFETIME
    issued = datetime.fromisoformat(answer.body["issued_at"].replace("Z", "+00:00"))
    assert abs((issued - datetime.now(UTC)).total_seconds()) < 10


def test_it_signs_a_jwt_a_registry_can_check(emu: Emulator, token: tuple[m.Token, str]) -> None:
    _, password = token
    signed = ask(emu, "repository:sample/app:pull", password=password).body["token"]
    header = jwt.get_unverified_header(signed)
    certificate = x509.load_pem_x509_certificate(emu.certificate_pem)
    assert header["alg"] == "RS256"
    assert base64.b64decode(header["x5c"][0]) == certificate.public_bytes(Encoding.DER)
    assert header["kid"] == libtrust_key_id(certificate.public_key())
    claims = jwt.decode(signed, certificate.public_key(), algorithms=["RS256"], audience=SERVICE, issuer=ISSUER)
    assert claims["sub"] == "pusher"
    assert claims["aud"] == SERVICE
    assert claims["exp"] - claims["iat"] == DEFAULT_TOKEN_LIFETIME
    assert claims["nbf"] <= claims["iat"]
    assert len(claims["jti"]) >= 16
    assert claims["access"] == [{"type": "repository", "name": "sample/app", "actions": ["pull"]}]
    other = ask(emu, "repository:sample/app:pull", password=password).body["token"]
    assert jwt.decode(other, options={"verify_signature": False})["jti"] != claims["jti"]


def test_it_leaves_out_what_the_scope_map_does_not_grant(emu: Emulator, token: tuple[m.Token, str]) -> None:
    _, password = token
    answer = ask(
        emu,
        "repository:elsewhere:pull,push",
        "repository:sample/app/sub:pull",
        "repository:sample:pull",
        "registry:catalog:*",
        "repository:NOT-A-NAME:pull",
        password=password,
    )
    assert answer.status == 200
    assert answer.claims["access"] == []


def test_it_honours_wildcards_for_repositories_nobody_made_yet(emu: Emulator, token: tuple[m.Token, str]) -> None:
    _, password = token
    answer = ask(
        emu,
        "repository:team/brand-new:pull,push",
        "repository:team/deep/er/still:pull",
        "repository:teamx/app:pull",
        "repository:team:pull",
        password=password,
    )
    assert answer.access == {"team/brand-new": ["pull"], "team/deep/er/still": ["pull"]}


def test_it_maps_metadata_actions(emu: Emulator, token: tuple[m.Token, str]) -> None:
    _, password = token
    answer = ask(emu, "repository:team/api:metadata_read,metadata_write,delete", password=password)
    assert answer.access == {"team/api": ["metadata_read", "metadata_write"]}
    answer = ask(emu, "repository:team/web:metadata_read,metadata_write", password=password)
    assert answer.access == {"team/web": ["metadata_read"]}


def test_it_takes_repeated_and_space_separated_scopes(emu: Emulator, token: tuple[m.Token, str]) -> None:
    _, password = token
    both = "repository:sample/app:pull repository:team/x:pull"
    answer = ask(emu, both, "repository:sample/app:push", password=password)
    assert answer.access == {"sample/app": ["pull", "push"], "team/x": ["pull"]}


def test_it_logs_in_without_a_scope(emu: Emulator, token: tuple[m.Token, str]) -> None:
    _, password = token
    answer = ask(emu, password=password)
    assert answer.status == 200
    assert answer.claims["access"] == []


def test_it_honours_a_bare_star(
    client: ContainerRegistryManagementClient, registry: m.Registry, emu: Emulator
) -> None:
    scope_map = create_scope_map(client, "everything", ["repositories/*/content/read"])
    created = create_token(client, "reader", scope_map.id)
    password = generate(client, created.id).passwords[0].value
    answer = ask(emu, "repository:any/thing:pull,push", "registry:catalog:*", username="reader", password=password)
    assert answer.claims["access"] == [{"type": "repository", "name": "any/thing", "actions": ["pull"]}]


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("pusher", "not-the-password", "wrong password"),
        ("nobody", None, "unknown token"),
        (None, None, "no basic credentials"),
    ],
)
def test_it_answers_401_to_bad_credentials(
    emu: Emulator, token: tuple[m.Token, str], username: str | None, password: str | None, reason: str
) -> None:
    answer = ask(emu, "repository:sample/app:pull", username=username, password=password or token[1])
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic ")
    assert answer.body["errors"][0]["code"] == "UNAUTHORIZED"
    assert logins(emu)[-1]["ResultDescription"] == reason


def test_it_answers_401_for_a_registry_it_does_not_know(emu: Emulator, token: tuple[m.Token, str]) -> None:
    answer = ask(emu, "repository:sample/app:pull", password=token[1], service="otherreg.azurecr.io")
    assert answer.status == 401


def test_it_needs_a_service(emu: Emulator, token: tuple[m.Token, str]) -> None:
    assert ask(emu, "repository:sample/app:pull", password=token[1], service=None).status == 400


def test_it_refuses_other_methods(emu: Emulator, token: tuple[m.Token, str]) -> None:
    assert ask(emu, password=token[1], method="DELETE").status == 405


def test_it_answers_401_for_a_disabled_token_and_again_200_once_enabled(
    client: ContainerRegistryManagementClient, emu: Emulator, token: tuple[m.Token, str]
) -> None:
    _, password = token
    for status, expected in (("disabled", 401), ("enabled", 200)):
        params = m.TokenUpdateParameters(properties=m.TokenUpdateProperties(status=status))
        client.tokens.begin_update(RG, REGISTRY, "pusher", params).result()
        assert ask(emu, "repository:sample/app:pull", password=password).status == expected
    assert [row["ResultDescription"] for row in logins(emu)] == ["token disabled", "Succeeded"]


def test_it_answers_401_for_an_expired_password_and_not_for_the_other_slot(
    client: ContainerRegistryManagementClient, emu: Emulator, token: tuple[m.Token, str]
) -> None:
    created, _ = token
    past = datetime.now(UTC) - timedelta(minutes=1)
    expired = generate(client, created.id, name="password1", expiry=past).passwords[0].value
    current = generate(client, created.id, name="password2").passwords[0].value
    assert ask(emu, "repository:sample/app:pull", password=expired).status == 401
    assert logins(emu)[-1]["ResultDescription"] == "password1 expired"
    assert ask(emu, "repository:sample/app:pull", password=current).status == 200


def test_it_answers_401_once_the_slot_is_deleted(
    client: ContainerRegistryManagementClient, emu: Emulator, token: tuple[m.Token, str]
) -> None:
    _, password = token
    keep = m.TokenCredentialsProperties(passwords=[])
    client.tokens.begin_update(
        RG, REGISTRY, "pusher", m.TokenUpdateParameters(properties=m.TokenUpdateProperties(credentials=keep))
    ).result()
    assert ask(emu, "repository:sample/app:pull", password=password).status == 401


def test_it_follows_scope_map_edits_at_once(
    client: ContainerRegistryManagementClient, emu: Emulator, token: tuple[m.Token, str]
) -> None:
    _, password = token
    params = m.ScopeMapUpdateParameters(
        properties=m.ScopeMapPropertiesUpdateParameters(actions=["repositories/other/content/read"])
    )
    client.scope_maps.begin_update(RG, REGISTRY, "team-access", params).result()
    answer = ask(emu, "repository:sample/app:pull", "repository:other:pull", password=password)
    assert answer.access == {"other": ["pull"]}


def test_it_records_login_events(emu: Emulator, token: tuple[m.Token, str]) -> None:
    _, password = token
    ask(emu, "repository:sample/app:pull,push", "repository:elsewhere:pull", password=password)
    ask(emu, "repository:sample/app:pull", password="wrong")
    ok, refused = logins(emu)
    assert ok["Identity"] == "pusher"
    assert ok["OperationName"] == "Login"
    assert ok["LoginServer"] == SERVICE
    assert ok["ResultType"] == "200"
    assert ok["CallerIpAddress"] == "127.0.0.1"
    assert ok["ScopesRequested"] == ["repository:sample/app:pull,push", "repository:elsewhere:pull"]
    assert ok["ScopesGranted"] == ["repository:sample/app:pull,push"]
    assert ok["_ResourceId"].endswith(f"/registries/{REGISTRY}")
    datetime.fromisoformat(ok["TimeGenerated"].replace("Z", "+00:00"))
    assert (refused["ResultType"], refused["ResultDescription"], refused["ScopesGranted"]) == (
        "401",
        "wrong password",
        [],
    )
    assert password not in json.dumps(emu.events())


def _post_notification(emu: Emulator, events: list[dict[str, Any]]) -> dict[str, Any]:
    body = json.dumps({"events": events}).encode()
    request = urllib.request.Request(
        f"{emu.url}/_emulator/registry/notifications",
        data=body,
        method="POST",
        headers={"Content-Type": "application/vnd.docker.distribution.events.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.load(response))


def _event(event_id: str, action: str, media_type: str, tag: str = "v1") -> dict[str, Any]:
    return {
        "id": event_id,
        "timestamp": "2026-01-02T03:04:05.123456789Z",
        "action": action,
        "target": {
            "mediaType": media_type,
            "size": 418,
            "digest": "sha256:" + "a" * 64,
            "repository": "sample/app",
            "tag": tag,
        },
        "request": {"id": "req-1", "addr": "192.0.2.7:40112", "method": "PUT", "useragent": "skopeo/1.9.3"},
        "actor": {"name": "pusher"},
    }


def test_it_records_repository_events_from_registry_notifications(emu: Emulator, registry: m.Registry) -> None:
    emu.set_data_plane("127.0.0.1:5999", REGISTRY)
    manifest = "application/vnd.oci.image.manifest.v1+json"
    answer = _post_notification(
        emu,
        [
            _event("e1", "push", manifest),
            _event("e2", "push", "application/octet-stream"),  # a layer: not an artifact event
            _event("e3", "mount", manifest),
            _event("e4", "pull", manifest),
        ],
    )
    assert answer == {"recorded": 2}
    assert _post_notification(emu, [_event("e1", "push", manifest)]) == {"recorded": 0}  # redelivered
    push, pull = emu.events("ContainerRegistryRepositoryEvents")["ContainerRegistryRepositoryEvents"]
    assert push == {
        "TimeGenerated": "2026-01-02T03:04:05.123456Z",
        "Category": "ContainerRegistryRepositoryEvents",
        "Type": "ContainerRegistryRepositoryEvents",
        "OperationName": "Push",
        "LoginServer": "127.0.0.1:5999",
        "Identity": "pusher",
        "Repository": "sample/app",
        "Tag": "v1",
        "Digest": "sha256:" + "a" * 64,
        "MediaType": manifest,
        "ArtifactType": "",
        "Size": 418,
        "CallerIpAddress": "192.0.2.7",
        "UserAgent": "skopeo/1.9.3",
        "CorrelationId": "req-1",
        "ResultType": "Succeeded",
        "ResultDescription": "",
        "DurationMs": "",
        "Region": "",
        "UserTenantId": "",
        "_ResourceId": registry.id,
        "_SubscriptionId": registry.id.split("/")[2],
        "EventId": "e1",
    }
    assert pull["OperationName"] == "Pull"


def test_it_refuses_what_is_not_a_notification(emu: Emulator) -> None:
    request = urllib.request.Request(f"{emu.url}/_emulator/registry/notifications", data=b"[]", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400


def test_it_clears_events_on_reset_and_on_delete(emu: Emulator, token: tuple[m.Token, str]) -> None:
    ask(emu, password=token[1])
    assert len(logins(emu)) == 1
    urllib.request.urlopen(urllib.request.Request(f"{emu.url}/_emulator/events", method="DELETE"), timeout=10)
    assert logins(emu) == []
    ask(emu, password=token[1])
    emu.reset()
    assert logins(emu) == []


def test_it_keeps_tables_bounded(emu: Emulator) -> None:
    from acr_emulator.state import MAX_EVENTS_PER_TABLE

    for i in range(MAX_EVENTS_PER_TABLE + 5):
        emu.state.record_event("ContainerRegistryLoginEvents", {"n": i})
    rows = emu.state.events["ContainerRegistryLoginEvents"]
    assert len(rows) == MAX_EVENTS_PER_TABLE
    assert rows[0] == {"n": 5}


def test_it_reports_the_data_plane_as_login_server_of_the_registry_it_serves(
    client: ContainerRegistryManagementClient, emu: Emulator
) -> None:
    emu.set_data_plane("127.0.0.1:5999")
    served = create_registry(client, "servedreg1")
    other = create_registry(client, "otherreg1")
    assert served.login_server == "127.0.0.1:5999"
    assert other.login_server == "otherreg1.azurecr.io"  # one data plane serves one registry
    scope_map = create_scope_map(client, "readers", ["repositories/a/content/read"], registry="servedreg1")
    created = create_token(client, "reader", scope_map.id, registry="servedreg1")
    params = m.GenerateCredentialsParameters(token_id=created.id)
    password = client.registries.begin_generate_credentials(RG, "servedreg1", params).result().passwords[0].value
    answer = ask(emu, "repository:a:pull", username="reader", password=password, service="127.0.0.1:5999")
    assert answer.claims["aud"] == "127.0.0.1:5999"
    assert answer.access == {"a": ["pull"]}
    emu.set_data_plane(None)
    assert client.registries.get(RG, "servedreg1").login_server == "servedreg1.azurecr.io"


def test_it_serves_a_named_registry_that_already_exists(
    client: ContainerRegistryManagementClient, registry: m.Registry, emu: Emulator
) -> None:
    assert registry.login_server == f"{REGISTRY}.azurecr.io"
    emu.set_data_plane("127.0.0.1:5999", REGISTRY.upper())
    assert client.registries.get(RG, REGISTRY).login_server == "127.0.0.1:5999"
    assert create_registry(client, "latecomer1").login_server == "latecomer1.azurecr.io"
    emu.reset()
    assert create_registry(client, "latecomer1").login_server == "latecomer1.azurecr.io"  # start-up config again


def test_it_keeps_its_signing_key_and_events_across_restarts(tmp_path: Path) -> None:
    state_file = tmp_path / "emulator.json"
    with start_emulator(state_file=state_file) as first:
        certificate = first.certificate_pem
        first.state.record_event("ContainerRegistryLoginEvents", {"Identity": "someone"})
        first._server.persist(force=True)
    key = tmp_path / "emulator-tokenserver" / "token-signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    with start_emulator(state_file=state_file) as second:
        assert second.certificate_pem == certificate
        assert second.events()["ContainerRegistryLoginEvents"] == [{"Identity": "someone"}]
    with start_emulator() as unrelated:
        assert unrelated.certificate_pem != certificate


def test_it_serves_its_certificate(emu: Emulator) -> None:
    with urllib.request.urlopen(f"{emu.url}/_emulator/tokenserver/certificate", timeout=10) as response:
        body = json.load(response)
    assert body["certificate"].encode() == emu.certificate_pem
    assert body["kid"] == libtrust_key_id(x509.load_pem_x509_certificate(emu.certificate_pem).public_key())


def test_it_writes_libtrust_key_ids() -> None:
    kid = libtrust_key_id(ec.generate_private_key(ec.SECP256R1()).public_key())
    groups = kid.split(":")
    assert len(groups) == 12
    assert all(len(g) == 4 and set(g) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for g in groups)


def test_it_parses_scopes() -> None:
    query = urllib.parse.urlencode(
        [("scope", "repository:a/b:pull,push registry:catalog:*"), ("scope", "garbage"), ("scope", "repository:c:")]
    )
    assert [str(s) for s in parse_scopes(query)] == ["repository:a/b:pull,push", "registry:catalog:*", "repository:c:"]
