"""Sign-in, reveal and filing are rate-limited: over the limit, 429 with Retry-After, and nothing changes."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accessreq import apikeys
from accessreq.models import AccessRequest, AuditEvent, SealedPassword
from tests.conftest import PASSWORD, request_data

pytestmark = pytest.mark.django_db


def test_it_limits_filing_requests(settings, registry, requester, approver) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "request": "2/h"}
    alice = Client()
    alice.force_login(requester)
    assert alice.get("/requests/new").status_code == 200  # looking costs nothing
    for _ in range(2):
        assert alice.post("/requests/new", request_data(registry)).status_code == 302
    refused = alice.post("/requests/new", request_data(registry))
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3601
    assert AccessRequest.objects.count() == 2
    # Another person has a budget of their own.
    bob = Client()
    bob.force_login(approver)
    assert bob.post("/requests/new", request_data(registry, owner="bob")).status_code != 429


def test_it_limits_reveals(settings, ready_request, requester) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "reveal": "1/m"}
    alice = Client()
    alice.force_login(requester)
    assert alice.post(f"/requests/{ready_request.pk}/reveal").status_code == 200
    refused = alice.post(f"/requests/{ready_request.pk}/reveal")
    assert refused.status_code == 429 and int(refused["Retry-After"]) <= 61
    assert not AuditEvent.objects.filter(action="password.reveal_refused").exists()  # never reached the vault


def test_it_limits_sign_in_attempts_per_address(settings, requester) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "signin": "3/m"}
    client = Client()
    for username in ("nobody1", "nobody2", "nobody3"):
        assert client.post("/accounts/login/", {"username": username, "password": "x"}).status_code == 200
    refused = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert refused.status_code == 429 and refused["Retry-After"]
    assert "_auth_user_id" not in client.session


def test_it_limits_the_api_with_json(settings, ready_request, requester, registry) -> None:
    # Filing the fixture's request used one of alice's two.
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "reveal": "1/m", "request": "2/h"}
    _, key = apikeys.create(requester, "limits")
    api = Client(headers={"Authorization": f"Bearer {key}"})
    assert api.post(f"/api/v1/requests/{ready_request.pk}/reveal").status_code == 200
    refused = api.post(f"/api/v1/requests/{ready_request.pk}/reveal")
    assert refused.status_code == 429 and refused.json()["detail"] and refused["Retry-After"]
    assert not SealedPassword.objects.exists()
    body = {
        "registry": registry.pk,
        "rules": [{"repository": "myapp/api", "actions": ["content/read"]}],
        "purpose": "The payments CI pipeline pulls the base image.",
        "client_kind": "ci",
        "team": "Payments",
        "password_lifetime_days": 30,
        "retire_on": ready_request.retire_on.isoformat(),
    }
    assert api.post("/api/v1/requests", json.dumps(body), content_type="application/json").status_code == 201
    again = api.post("/api/v1/requests", json.dumps(body), content_type="application/json")
    assert again.status_code == 429
    assert AccessRequest.objects.count() == 2
