"""Template comments stay comments: Django's {# #} ends at the line's end, so a longer note needs {% comment %}."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

from tests.conftest import PASSWORD

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def test_it_has_no_comment_spanning_lines() -> None:
    broken = [
        f"{path.relative_to(TEMPLATES)}:{number}"
        for path in sorted(TEMPLATES.rglob("*.html"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\{#(?!.*#\})", line)
    ]
    assert broken == []


@pytest.mark.django_db
def test_it_prints_no_comment_on_the_request_page(ready_request, requester) -> None:
    client = Client()
    client.login(username=requester.username, password=PASSWORD)
    body = client.get(f"/requests/{ready_request.pk}/").content.decode()
    assert "live region" not in body
    assert "{#" not in body and "#}" not in body
