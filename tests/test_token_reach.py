"""Everything one token reaches, the reverse of who-can: on the token's page and GET /api/v1/tokens/{id}/access."""

from __future__ import annotations

import pytest

from accessreq.models import Token, TokenStatus
from tests.conftest import login
from tests.test_who_can import make_token

pytestmark = pytest.mark.django_db
API = "/api/v1"


@pytest.fixture
def token(registry, requester) -> Token:
    return make_token(
        registry,
        requester,
        "ci-myapp-mixed",
        [
            {"repository": "myapp/*", "actions": ["content/read"]},
            {"repository": "myapp/api", "actions": ["content/read", "content/write"]},
            {"repository": "*", "actions": ["metadata/read"]},
        ],
    )


def test_it_answers_the_owner_widest_first(token, requester) -> None:
    response = login(requester).get(f"{API}/tokens/{token.pk}/access")
    assert response.status_code == 200
    assert response.json() == [
        {"repository": "*", "actions": ["metadata/read"], "via": ["repositories/*/metadata/read"]},
        {"repository": "myapp/*", "actions": ["content/read"], "via": ["repositories/myapp/*/content/read"]},
        {
            "repository": "myapp/api",
            "actions": ["content/read", "content/write"],
            "via": ["repositories/myapp/api/content/read", "repositories/myapp/api/content/write"],
        },
    ]


def test_it_answers_as_the_registry_holds_a_drifted_scope_map(token, security) -> None:
    Token.objects.filter(pk=token.pk).update(drift_actions=["repositories/secret/app/content/delete"])
    body = login(security).get(f"{API}/tokens/{token.pk}/access").json()
    assert body == [
        {"repository": "secret/app", "actions": ["content/delete"], "via": ["repositories/secret/app/content/delete"]}
    ]
    page = login(security).get(f"/tokens/{token.pk}/").content.decode()
    assert "this is what the registry holds" in page and "repositories/secret/app/content/delete" in page


def test_it_reaches_nothing_once_deleted_from_the_registry(token, requester) -> None:
    Token.objects.filter(pk=token.pk).update(status=TokenStatus.RETIRED)
    assert login(requester).get(f"{API}/tokens/{token.pk}/access").json() == []
    assert "no longer in the registry" in login(requester).get(f"/tokens/{token.pk}/").content.decode()


def test_it_keeps_it_to_those_who_may_see_the_token(token, outsider) -> None:
    assert login(outsider).get(f"{API}/tokens/{token.pk}/access").status_code == 404
    assert login(outsider).get(f"/tokens/{token.pk}/").status_code == 404
    assert login(outsider).get(f"{API}/tokens/999999/access").status_code == 404
    assert login(outsider).post(f"{API}/tokens/{token.pk}/access").status_code == 405


def test_it_shows_the_reach_on_the_token_page(token, requester) -> None:
    page = login(requester).get(f"/tokens/{token.pk}/").content.decode()
    assert "What it reaches in the registry" in page
    assert "<code>repositories/myapp/api/content/write</code>" in page
