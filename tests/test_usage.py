"""Which tokens are used, and for what: skopeo against a real registry, the registry's events read back through the
emulator's Log Analytics query API by collect-usage, and what the portal shows and suggests from them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.containerregistry import models as m
from django.contrib.auth.models import Group, User
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from accessreq import usage
from accessreq.models import AuditEvent, ClientKind, FailedLoginBurst, Registry, Token, TokenUsage, UsageCursor
from acr_emulator.testing import DataPlane, make_client
from tests.conftest import SUBSCRIPTION, login
from tests.skopeo import Skopeo

RG = "usage-rg"
WORKSPACE = "6f1c2a34-0000-4000-8000-00000000feed"
RULES = [{"repository": "myapp/*", "actions": ["content/read", "content/write", "content/delete"]}]


@pytest.fixture
def portal(data_plane: DataPlane, settings: Any, groups: dict[str, Group]) -> Registry:
    """The data plane's registry, known to the portal, with its logs in a workspace."""
    from accessreq import acr as acr_module
    from accessreq import loganalytics

    url = data_plane.emulator.url
    settings.ACR_ARM_ENDPOINT = url
    settings.ACR_CREDENTIAL = "emulator"
    settings.ACR_POLLING_INTERVAL = 0
    settings.LOG_ANALYTICS_ENDPOINT = url
    settings.LOG_ANALYTICS_CREDENTIAL = "emulator"
    acr_module._credential.cache_clear()
    loganalytics._credential.cache_clear()
    reg = Registry(subscription_id=SUBSCRIPTION, resource_group=RG, name="usagereg", admin_group=groups["admins"])
    reg.login_server = acr_module.ensure_registry(reg, "westeurope", "Premium")
    reg.log_analytics_workspace_id = WORKSPACE
    reg.save()
    return reg


def _provision(registry: Registry, owner: User, name: str, rules: list[dict]) -> tuple[Token, str]:
    """The token in the registry (scope map, token, password1) and in the portal, made 60 days ago."""
    from django.conf import settings

    actions = [f"repositories/{r['repository']}/{a}" for r in rules for a in r["actions"]]
    with make_client(settings.ACR_ARM_ENDPOINT, subscription_id=SUBSCRIPTION) as client:
        scope_map = client.scope_maps.begin_create(
            RG, registry.name, f"{name}-map", m.ScopeMap(properties=m.ScopeMapProperties(actions=actions))
        ).result()
        body = m.Token(properties=m.TokenProperties(scope_map_id=scope_map.id, status="enabled"))
        made = client.tokens.begin_create(RG, registry.name, name, body).result()
        params = m.GenerateCredentialsParameters(token_id=made.id, name="password1")
        password = client.registries.begin_generate_credentials(RG, registry.name, params).result().passwords[0].value
    token = Token.objects.create(
        registry=registry,
        name=name,
        scope_map_name=f"{name}-map",
        owner=owner,
        requester=owner,
        team="payments",
        purpose="CI",
        client_kind=ClientKind.CI,
        rules=rules,
        retire_on=timezone.localdate() + timedelta(days=90),
    )
    Token.objects.filter(pk=token.pk).update(created_at=timezone.now() - timedelta(days=60))
    token.refresh_from_db()
    return token, password


@pytest.fixture
def skopeo(data_plane: DataPlane, tmp_path: Path) -> Skopeo:
    return Skopeo(tmp_path, data_plane.login_server)


def _pushes_and_pulls(data_plane: DataPlane, skopeo: Skopeo, name: str, password: str) -> None:
    for repository in ("myapp/api", "myapp/web"):
        assert skopeo.push(repository, name, password).ok
    assert skopeo.pull("myapp/api", name, password).ok
    for operation, repository in (("Push", "myapp/web"), ("Pull", "myapp/api")):
        data_plane.wait_for_event(
            "ContainerRegistryRepositoryEvents",
            lambda r, o=operation, p=repository: r["OperationName"] == o and r["Repository"] == p,
        )


def test_it_collects_last_use_and_usage_per_repository_and_action(
    data_plane: DataPlane, portal: Registry, skopeo: Skopeo, requester: User, security: User
) -> None:
    token, password = _provision(portal, requester, "ci-usage", RULES)
    _pushes_and_pulls(data_plane, skopeo, token.name, password)
    events = data_plane.events("ContainerRegistryRepositoryEvents")

    call_command("maintenance", "collect-usage")

    token.refresh_from_db()
    assert token.last_used_at is not None
    assert abs((timezone.now() - token.last_used_at).total_seconds()) < 120
    counts = {(u.repository, u.action): u.count for u in TokenUsage.objects.filter(token=token)}
    expected: dict[tuple[str, str], int] = {}
    for row in events:
        key = (row["Repository"], usage.OPERATIONS[row["OperationName"]].value)
        expected[key] = expected.get(key, 0) + 1
    assert counts == expected
    assert counts[("myapp/api", "push")] >= 1 and counts[("myapp/api", "pull")] >= 1
    assert ("myapp/web", "pull") not in counts

    # A second run counts nothing twice.
    assert usage.collect(portal) == 0
    assert {(u.repository, u.action): u.count for u in TokenUsage.objects.filter(token=token)} == counts
    assert UsageCursor.objects.filter(registry=portal).count() == 2

    # Shown on the page, in the API and as a suggestion.
    assert usage.never_used_actions(token) == ["repositories/myapp/*/content/delete"]
    page = login(requester).get(token.get_absolute_url())
    assert page.status_code == 200
    html = page.content.decode()
    assert "Last used" in html and "<svg" in html and "operations in the last 30 days" in html
    assert "repositories/myapp/*/content/delete" in html
    assert "Drop content/delete on myapp/*." in html
    assert "Only myapp/api and myapp/web were used under myapp/*: narrow to them." in html

    api = login(requester).get(f"/api/v1/tokens/{token.pk}")
    body = api.json()
    assert body["last_used_at"] is not None
    assert body["never_used_actions"] == ["repositories/myapp/*/content/delete"]
    assert {(u["repository"], u["action"], u["count"]) for u in body["usage"]} == {
        (r, a, c) for (r, a), c in counts.items()
    }

    # One click opens a change prefilled without the unused access.
    advice = usage.advise(token)
    assert advice.rules == [
        {"repository": "myapp/api", "actions": ["content/read", "content/write"]},
        {"repository": "myapp/web", "actions": ["content/read", "content/write"]},
    ]
    assert "Ask for the narrower access" in html
    assert f"renew={token.pk}&amp;rule=myapp%2Fapi%3Acontent%2Fread%2Ccontent%2Fwrite" in html
    link = f"/requests/new?renew={token.pk}&rule=myapp/api:content/read,content/write&rule=myapp/web:content/read"
    form = login(requester).get(link)
    assert form.status_code == 200
    text = form.content.decode()
    assert 'value="myapp/api"' in text and 'value="myapp/web"' in text  # the form's rows, editable
    assert 'value="myapp/*"' not in text


def test_it_alerts_once_on_a_burst_of_wrong_passwords(
    data_plane: DataPlane,
    portal: Registry,
    skopeo: Skopeo,
    requester: User,
    security: User,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.FAILED_LOGIN_BURST = 3
    settings.FAILED_LOGIN_BURST_MINUTES = 10
    token, password = _provision(portal, requester, "ci-burst", RULES)
    assert skopeo.push("myapp/api", token.name, password).ok
    for _ in range(3):
        assert skopeo.pull("myapp/api", token.name, "an-old-password").denied
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        usage.collect(portal)

    alerts = [e for e in mail.outbox if "Failed logins" in e.subject]
    assert len(alerts) == 1
    assert set(alerts[0].to) == {requester.email, security.email}
    assert AuditEvent.objects.filter(action="token.failed_login_burst", target_id=str(token.pk)).count() == 1

    # More failures in the same burst, and a second run: no second alert.
    assert skopeo.pull("myapp/api", token.name, "an-old-password").denied
    with django_capture_on_commit_callbacks(execute=True):
        usage.collect(portal)
        usage.collect(portal)
    assert len([e for e in mail.outbox if "Failed logins" in e.subject]) == 1
    burst = FailedLoginBurst.objects.get(token=token)
    assert burst.count >= 4 and burst.alerted_at is not None
    assert sum(d[2] for d in usage.daily(token)) == burst.count


def test_it_suggests_retiring_an_unused_token(
    data_plane: DataPlane, portal: Registry, skopeo: Skopeo, requester: User
) -> None:
    token, _ = _provision(portal, requester, "ci-idle", RULES)
    usage.collect(portal)
    advice = usage.advise(token)
    assert [s.kind for s in advice.suggestions] == ["retire"]
    assert token in usage.stale_tokens()
    listed = login(requester).get("/tokens/?used=never")
    assert "ci-idle" in listed.content.decode()


def test_it_puts_unused_tokens_in_the_owners_digest_and_the_security_counts(
    data_plane: DataPlane,
    portal: Registry,
    skopeo: Skopeo,
    requester: User,
    security: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from accessreq import reminders

    token, _ = _provision(portal, requester, "ci-forgotten", RULES)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        reminders.send_reminders()
    digest = [e for e in mail.outbox if requester.email in e.to]
    assert len(digest) == 1 and "ci-forgotten" in digest[0].body and "retire it?" in digest[0].body
    page = login(security).get("/security/")
    assert page.status_code == 200
    assert "?used=stale" in page.content.decode()
    assert page.context["usage_counts"]["stale"][1] == 1
    listed = login(security).get("/tokens/?used=stale").content.decode()
    assert token.name in listed
