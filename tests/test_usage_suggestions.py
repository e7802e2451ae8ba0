"""What usage suggests, across tokens: unused access within a window (the token API), the security page of every
least-privilege and retirement suggestion, the owner's digest, and token lists sorted by last use."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
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


@pytest.fixture
def advised(logged_registry: Registry, requester: User, approver: User) -> dict[str, Token]:
    """A token with access to drop and a wildcard to narrow, an unused one, and one that uses all it holds."""
    broad = make_token(logged_registry, requester, "ci-broad", last_used_days=2)
    used(broad, "myapp/api", UsageAction.PUSH, 2)
    idle = make_token(logged_registry, approver, "ci-idle", team="platform")
    tight = make_token(
        logged_registry,
        requester,
        "ci-tight",
        last_used_days=1,
        rules=[{"repository": "myapp/api", "actions": ["content/read"]}],
    )
    used(tight, "myapp/api", UsageAction.PULL, 1)
    usage.refresh_suggestions()
    return {"broad": broad, "idle": idle, "tight": tight}


def test_it_lists_every_suggestion_for_security(advised: dict[str, Token], security: User) -> None:
    client = login(security)
    dashboard = client.get("/security/").content.decode()
    assert 'href="/security/suggestions"' in dashboard
    assert "3</span> least-privilege and retirement suggestions" in dashboard

    page = client.get("/security/suggestions")
    assert page.status_code == 200
    rows = [(s.token.name, s.kind, s.text) for s in page.context["page"].object_list]
    assert rows == [
        ("ci-broad", "drop", "Drop content/delete on myapp/*."),
        ("ci-broad", "narrow", "Only myapp/api was used under myapp/*: narrow to it."),
        ("ci-idle", "retire", "Never used in 60 days: retire it."),
    ]
    html = page.content.decode()
    assert '<label for="suggestion-kind">Kind</label>' in html and "Drop content/delete on myapp/*." in html

    def names(query: str) -> list[str]:
        return [s.token.name for s in client.get(f"/security/suggestions?{query}").context["page"].object_list]

    assert names("kind=retire") == ["ci-idle"]
    assert names("kind=narrow") == ["ci-broad"]
    assert names("team=platf") == ["ci-idle"]
    assert names("q=wildcard narrow") == []
    assert names("q=myapp/*") == ["ci-broad", "ci-broad"]
    assert names("sort=unused") == ["ci-idle", "ci-broad", "ci-broad"]
    assert names("kind=nonsense&sort=nonsense") == ["ci-broad", "ci-broad", "ci-idle"]


def test_it_keeps_a_standing_suggestion_and_drops_a_settled_one(advised: dict[str, Token]) -> None:
    first = {(s.token_id, s.text): s.since for s in usage.TokenSuggestion.objects.all()}
    usage.refresh_suggestions(timezone.now() + timedelta(hours=1))
    again = {(s.token_id, s.text): s.since for s in usage.TokenSuggestion.objects.all()}
    assert again == first
    Token.objects.filter(pk=advised["idle"].pk).update(status="retired")
    usage.refresh_suggestions()
    assert not usage.TokenSuggestion.objects.filter(token=advised["idle"]).exists()


def test_it_mails_least_privilege_suggestions_to_the_owner_once(
    advised: dict[str, Token], requester: User, django_capture_on_commit_callbacks: Any
) -> None:
    from accessreq import reminders

    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        reminders.send_reminders()
    digest = [e for e in mail.outbox if requester.email in e.to]
    assert len(digest) == 1
    body = digest[0].body
    assert "ci-broad" in body and "Drop content/delete on myapp/*." in body
    assert "Only myapp/api was used under myapp/*: narrow to it." in body
    assert "ci-tight" not in body

    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        reminders.send_reminders(timezone.now() + timedelta(days=1))
    assert not [e for e in mail.outbox if requester.email in e.to]
