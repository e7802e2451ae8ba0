"""Who can pull, push or delete in a repository, and what one token reaches: page, API and domain."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accessreq import whocan
from accessreq.models import PasswordSlot, SlotStatus, Token, TokenStatus, UnmanagedToken
from acr_emulator.dataplane import effective_actions
from tests.conftest import login

pytestmark = pytest.mark.django_db
API = "/api/v1"


def make_token(registry, owner, name: str, rules: list[dict], **extra) -> Token:
    return Token.objects.create(
        registry=registry,
        name=name,
        scope_map_name=f"{name}-map",
        owner=owner,
        team=extra.pop("team", "Payments"),
        requester=owner,
        purpose="test",
        client_kind="ci",
        rules=rules,
        retire_on=timezone.localdate() + timedelta(days=90),
        **extra,
    )


@pytest.fixture
def tokens(registry, requester, approver) -> dict[str, Token]:
    pusher = make_token(
        registry, requester, "ci-myapp-push", [{"repository": "myapp/*", "actions": ["content/read", "content/write"]}]
    )
    PasswordSlot.objects.create(
        token=pusher, name="password1", status=SlotStatus.REVEALED, expires_at=timezone.now() + timedelta(days=20)
    )
    return {
        "pusher": pusher,
        "puller": make_token(
            registry, approver, "ci-api-pull", [{"repository": "myapp/api", "actions": ["content/read"]}]
        ),
        "other": make_token(registry, approver, "ci-shared", [{"repository": "shared/*", "actions": ["content/read"]}]),
        "deleter": make_token(
            registry, requester, "cleanup", [{"repository": "*", "actions": ["content/delete"]}], status="disabled"
        ),
        "retired": make_token(
            registry,
            requester,
            "old-one",
            [{"repository": "myapp/api", "actions": ["content/read"]}],
            status=TokenStatus.RETIRED,
        ),
    }


def test_it_answers_through_a_wildcard_for_a_repository_created_later(registry, tokens) -> None:
    grants = {g.token: g for g in whocan.who_can(registry, "myapp/newservice")}
    assert set(grants) == {"ci-myapp-push", "cleanup"}
    push = grants["ci-myapp-push"]
    assert push.actions == ["pull", "push"]
    assert push.via == ["repositories/myapp/*/content/read", "repositories/myapp/*/content/write"]
    assert not push.exact
    assert push.owner == "alice" and push.status == "active" and push.expires_at is not None
    assert push.last_used_at is None
    assert grants["cleanup"].actions == ["delete"] and grants["cleanup"].status == "disabled"
    # The registry's own rule logic agrees: the same scope map lets a push create that repository.
    assert effective_actions(tokens["pusher"].approved_actions, "myapp/newservice") == {
        "content/read",
        "content/write",
    }


def test_it_tells_exact_rules_from_wildcards_and_leaves_retired_tokens_out(registry, tokens) -> None:
    grants = {g.token: g for g in whocan.who_can(registry, "myapp/api")}
    assert set(grants) == {"ci-myapp-push", "ci-api-pull", "cleanup"}
    assert grants["ci-api-pull"].exact and grants["ci-api-pull"].via == ["repositories/myapp/api/content/read"]
    # Wildcards only cover what starts with their prefix and a slash.
    assert {g.token for g in whocan.who_can(registry, "myapplication")} == {"cleanup"}


def test_it_reads_drifted_scope_maps_as_the_registry_holds_them(registry, tokens) -> None:
    Token.objects.filter(pk=tokens["other"].pk).update(drift_actions=["repositories/myapp/api/content/write"])
    grants = {g.token: g for g in whocan.who_can(registry, "myapp/api")}
    assert grants["ci-shared"].actions == ["push"] and grants["ci-shared"].drifted


def test_it_includes_unmanaged_tokens_and_system_scope_maps(registry, tokens) -> None:
    UnmanagedToken.objects.create(
        registry=registry,
        name="legacy-pull",
        scope_map_name="_repositories_pull",
        actions=["repositories/*/content/read"],
        status="enabled",
    )
    UnmanagedToken.objects.create(
        registry=registry,
        name="hand-made",
        scope_map_name="handmade",
        actions=["repositories/other/content/read"],
        status="enabled",
    )
    grants = {g.token: g for g in whocan.who_can(registry, "myapp/api")}
    assert grants["legacy-pull"].kind == "unmanaged" and grants["legacy-pull"].owner is None
    assert grants["legacy-pull"].system_scope_map and grants["legacy-pull"].via == ["repositories/*/content/read"]
    assert "hand-made" not in grants
    system = {m["name"]: m for m in whocan.system_scope_maps(registry)}
    assert system["_repositories_pull"]["tokens"] == ["legacy-pull"]
    assert system["_repositories_admin"]["words"].startswith("pull, push, delete, list tags and change tag settings")


def test_it_refuses_what_is_not_one_repository(registry) -> None:
    from accessreq.errors import Invalid

    for bad in ["", "MyApp", "myapp/*", "a//b"]:
        with pytest.raises(Invalid):
            whocan.who_can(registry, bad)


def test_it_lists_what_a_token_reaches(tokens) -> None:
    reach = whocan.token_reach(tokens["pusher"])
    assert [r.pattern for r in reach] == ["myapp/*"]
    assert reach[0].words == "pull and push in every repository under myapp/, including ones created later"


def test_it_answers_the_api(registry, tokens, security) -> None:
    response = login(security).get(f"{API}/registries/{registry.name}/access?repository=myapp/api")
    assert response.status_code == 200
    body = {row["token"]: row for row in response.json()}
    assert body["ci-myapp-push"]["owner"] == "alice"
    assert body["ci-myapp-push"]["actions"] == ["pull", "push"]
    assert body["ci-myapp-push"]["via"] == ["repositories/myapp/*/content/read", "repositories/myapp/*/content/write"]
    assert body["ci-api-pull"]["status"] == "active"


def test_it_keeps_the_api_to_security(registry, tokens, requester, approver, security) -> None:
    url = f"{API}/registries/{registry.name}/access?repository=myapp/api"
    assert login(requester).get(url).status_code == 403
    assert login(approver).get(url).status_code == 403
    assert login(security).get(f"{API}/registries/nosuchregistry/access?repository=myapp/api").status_code == 404
    bad = login(security).get(f"{API}/registries/{registry.name}/access?repository=My/App")
    assert bad.status_code == 400 and "repository" in bad.json()["errors"]
    assert login(security).post(url).status_code == 405


def test_it_shows_the_page(registry, tokens, security, requester) -> None:
    page = login(security).get(f"/security/who-can?registry={registry.name}&repository=myapp/next")
    assert page.status_code == 200
    assert b"ci-myapp-push" in page.content and b"wildcard only" in page.content
    assert b"ci-api-pull" not in page.content
    assert login(security).get(f"/security/who-can?registry={registry.name}&repository=Bad*").status_code == 400
    assert login(security).get("/security/who-can?registry=nope&repository=a").status_code == 404
    reach = login(security).get(f"/security/who-can?token={tokens['pusher'].pk}")
    assert b"every repository under myapp/" in reach.content
    assert login(requester).get("/security/who-can").status_code == 403
