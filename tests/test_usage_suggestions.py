"""What usage suggests, across tokens: unused access within a window (the token API), the security page of every
least-privilege and retirement suggestion, the owner's digest, and token lists sorted by last use."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from accessreq import usage
from accessreq.models import ClientKind, Registry, Token, TokenUsage, UsageAction
from tests.conftest import SUBSCRIPTION, login

WORKSPACE = "6f1c2a34-0000-4000-8000-00000000beef"
RULES = [{"repository": "myapp/*", "actions": ["content/read", "content/write", "content/delete"]}]


@pytest.fixture
def logged_registry(groups: dict[str, Group]) -> Registry:
    return Registry.objects.create(
        subscription_id=SUBSCRIPTION,
        resource_group="usage-rg",
        name="suggestreg",
        login_server="suggestreg.azurecr.io",
        admin_group=groups["admins"],
        log_analytics_workspace_id=WORKSPACE,
    )


def make_token(
    registry: Registry,
    owner: User,
    name: str,
    *,
    days_old: int = 60,
    team: str = "payments",
    last_used_days: int | None = None,
    rules: list[dict] | None = None,
) -> Token:
    now = timezone.now()
    return Token.objects.create(
        registry=registry,
        name=name,
        scope_map_name=f"{name}-map",
        owner=owner,
        requester=owner,
        team=team,
        purpose="CI",
        client_kind=ClientKind.CI,
        rules=rules or RULES,
        retire_on=timezone.localdate() + timedelta(days=90),
        created_at=now - timedelta(days=days_old),
        last_used_at=None if last_used_days is None else now - timedelta(days=last_used_days),
    )


def used(token: Token, repository: str, action: UsageAction, days_ago: int) -> None:
    when = timezone.now() - timedelta(days=days_ago)
    TokenUsage.objects.create(token=token, repository=repository, action=action, count=3, first_at=when, last_at=when)


def test_it_answers_actions_unused_within_a_window(logged_registry: Registry, requester: User, outsider: User) -> None:
    token = make_token(logged_registry, requester, "ci-window", last_used_days=5)
    used(token, "myapp/api", UsageAction.PUSH, 40)
    used(token, "myapp/web", UsageAction.PULL, 5)

    assert usage.never_used_actions(token) == ["repositories/myapp/*/content/delete"]
    assert usage.unused_actions_in_window(token, days=30) == [
        "repositories/myapp/*/content/write",
        "repositories/myapp/*/content/delete",
    ]

    client = login(requester)
    body = client.get(f"/api/v1/tokens/{token.pk}").json()
    assert body["never_used_actions"] == ["repositories/myapp/*/content/delete"]
    assert body["usage_window_days"] == 30
    assert body["unused_actions_in_window"] == [
        "repositories/myapp/*/content/write",
        "repositories/myapp/*/content/delete",
    ]
    wider = client.get(f"/api/v1/tokens/{token.pk}?window_days=60").json()
    assert wider["usage_window_days"] == 60
    assert wider["unused_actions_in_window"] == ["repositories/myapp/*/content/delete"]


@pytest.mark.parametrize("value", ["0", "-1", "3651", "abc"])
def test_it_rejects_a_bad_window(logged_registry: Registry, requester: User, value: str) -> None:
    token = make_token(logged_registry, requester, "ci-bad-window")
    response = login(requester).get(f"/api/v1/tokens/{token.pk}?window_days={value}")
    assert response.status_code in (400, 422)
    assert "window_days" in response.content.decode()


def test_it_hides_the_window_from_others(logged_registry: Registry, requester: User, outsider: User) -> None:
    token = make_token(logged_registry, requester, "ci-hidden")
    assert login(outsider).get(f"/api/v1/tokens/{token.pk}?window_days=10").status_code == 404


def test_it_sorts_token_lists_by_last_use(logged_registry: Registry, requester: User, security: User) -> None:
    recent = make_token(logged_registry, requester, "ci-recent", last_used_days=1)
    older = make_token(logged_registry, requester, "ci-older", last_used_days=20)
    never = make_token(logged_registry, requester, "ci-never")
    for user in (requester, security):
        client = login(user)
        page = client.get("/tokens/?sort=used")
        assert page.status_code == 200
        assert [t.pk for t in page.context["page"].object_list] == [recent.pk, older.pk, never.pk]
        assert "Last used, most recent first" in page.content.decode()
        page = client.get("/tokens/?sort=unused")
        assert [t.pk for t in page.context["page"].object_list] == [never.pk, older.pk, recent.pk]
