"""What a signed-in user sees is never kept by a browser or proxy: Cache-Control: no-store, unless the view chose."""

from __future__ import annotations

import pytest
from django.test import Client

from accessreq import apikeys
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_it_keeps_every_signed_in_page_out_of_caches(registry, requester, approver, security) -> None:
    for user, pages in [
        (requester, ["/", "/requests/", "/requests/new", "/tokens/", "/api-keys/"]),
        (approver, ["/approvals/"]),
        (security, ["/security/", "/audit/"]),
    ]:
        client = Client()
        client.login(username=user.get_username(), password=PASSWORD)
        for page in pages:
            response = client.get(page)
            assert response.status_code == 200, page
            assert "no-store" in response["Cache-Control"], page
            assert "private" in response["Cache-Control"], page


def test_it_keeps_api_answers_to_a_key_out_of_caches(registry, requester) -> None:
    _, raw = apikeys.create(requester, "tests")
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    for path in ["/api/v1/registries", "/api/v1/requests", "/api/v1/tokens"]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert "no-store" in response["Cache-Control"], path


def test_it_leaves_a_view_its_own_cache_control(ready_request, requester) -> None:
    from accessreq.api import NO_STORE

    _, raw = apikeys.create(requester, "tests")
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    response = client.generic("POST", f"/api/v1/requests/{ready_request.pk}/reveal")
    assert response.status_code == 200
    # The reveal endpoint's own value, word for word, not the middleware's.
    assert response["Cache-Control"] == NO_STORE


def test_it_leaves_anonymous_answers_alone(client: Client) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert not response.has_header("Cache-Control")
    assert client.get("/api/v1/requests").status_code == 401
    assert "no-store" not in client.get("/api/v1/requests").get("Cache-Control", "")
