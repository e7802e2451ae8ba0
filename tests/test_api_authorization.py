"""Every operation of the JSON API, for a caller with no key, and for dave, who may see none of alice's things: 401
for the one, and for the other 404 on every object of hers, 403 on what is for other roles, never a 200. The list of
operations is read from the API's own schema, so a new operation cannot be added without saying who may use it."""

from __future__ import annotations

import pytest
from django.test import Client

from accessreq import apikeys
from accessreq.api import api
from accessreq.models import Token
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

API = "/api/v1"
# (method, path) -> what dave, a signed-in stranger, gets. {R}: alice's ready request, {T}: its token.
DAVE = {
    ("get", "/registries"): 200,
    ("get", "/requests"): 200,  # his own: none
    ("post", "/requests"): 400,  # an empty body
    ("get", "/requests/{R}"): 404,
    ("post", "/requests/{R}/cancel"): 404,
    ("post", "/requests/{R}/reveal"): 404,
    ("get", "/approvals"): 403,
    ("post", "/requests/{R}/approve"): 404,
    ("post", "/requests/{R}/reject"): 404,
    ("get", "/tokens"): 200,  # his own: none
    ("get", "/tokens/{T}"): 404,
    ("get", "/tokens/{T}/access"): 404,
    ("post", "/tokens/{T}/rotate"): 404,
    ("post", "/tokens/{T}/confirm-switch"): 404,
    ("post", "/tokens/{T}/disable"): 404,
    ("post", "/tokens/{T}/enable"): 404,
    ("post", "/tokens/{T}/retire"): 404,
    ("post", "/tokens/{T}/passwords/password1/reveal"): 404,
    ("get", "/audit"): 403,
    ("get", "/registries/contosotest/access?repository=myapp/api"): 403,
    ("get", "/export/tokens"): 403,
    ("get", "/export/audit"): 403,
}


def _operations() -> set[tuple[str, str]]:
    schema = api.get_openapi_schema()
    found = set()
    for path, operations in schema["paths"].items():
        for method in operations:
            shape = path.removeprefix(API).replace("{pk}", "*").replace("{slot}", "*").replace("{name}", "*")
            found.add((method, shape))
    return found


def test_it_lists_every_operation() -> None:
    def shape(path: str) -> str:
        for name in ("{R}", "{T}", "password1", "contosotest"):
            path = path.replace(name, "*")
        return path.split("?")[0]

    listed = {(method, shape(path)) for method, path in DAVE}
    assert _operations() == listed


def test_it_answers_strangers_with_nothing_of_alices(ready_request) -> None:
    dave = make_user("dave")
    _, raw = apikeys.create(dave, "walk")
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    ids = {"R": ready_request.pk, "T": Token.objects.get(request=ready_request).pk}
    for (method, path), expected in DAVE.items():
        url = API + path.format(**ids)
        call = client.get if method == "get" else client.post
        response = call(url) if method == "get" else call(url, "{}", content_type="application/json")
        assert response.status_code == expected, (method, path, response.content[:200])
        anonymous = Client().get(url) if method == "get" else Client().post(url, "{}", content_type="application/json")
        assert anonymous.status_code == 401, (method, path)
