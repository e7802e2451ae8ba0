"""The audit log page shows each event's details as labelled values, and links targets that have a page."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accessreq import audit
from accessreq.models import Token
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _login(user) -> Client:
    client = Client()
    client.login(username=user.username, password=PASSWORD)
    return client


def test_it_renders_details_as_a_definition_list(ready_request, security) -> None:
    audit.record(
        "test.detailed",
        actor=security,
        target=ready_request,
        details={"renews": None, "approvals": {"myapp-owners": 2}, "old_slots": ["password1"], "adopted": True},
    )
    body = _login(security).get("/audit/?action=test.").content.decode()
    details = re.search(r'<dl class="details">(.*?)</dl>', body, re.S)
    assert details is not None
    html = re.sub(r"\s+", " ", details.group(1))
    assert '<dt>renews</dt> <dd class="muted">—</dd>' in html
    assert "<dt>approvals</dt> <dd>myapp-owners: 2</dd>" in html
    assert "<dt>old slots</dt> <dd>password1</dd>" in html
    assert "<dt>adopted</dt> <dd>yes</dd>" in html
    # No Python reprs anywhere in the log.
    assert "None" not in body
    assert "{&#x27;" not in body and "[&#x27;" not in body


def test_it_shows_rules_one_a_line(ready_request, security) -> None:
    body = _login(security).get("/audit/?action=request.submitted").content.decode()
    assert "<dt>rules</dt>" in body
    assert "repository: myapp/api; actions: content/read, metadata/read" in body


def test_it_links_requests_and_tokens_to_their_pages(ready_request, security) -> None:
    token = Token.objects.get(request=ready_request)
    body = _login(security).get("/audit/").content.decode()
    assert f'<a href="/requests/{ready_request.pk}/">' in body
    assert f'<a href="/tokens/{token.pk}/">' in body
    # A registry has no page of its own: its name is shown as text.
    audit.record("test.registry", actor=security, target=ready_request.registry)
    body = _login(security).get("/audit/?action=test.registry").content.decode()
    assert f"<td data-label=\"Target\">{ready_request.registry}</td>" in body
