"""Views that answer both a page and an htmx fragment: the fragment only to htmx, the whole page to a history restore
(the back button after htmx's history cache was dropped), and `Vary: HX-Request` so no cache mixes them up."""

from __future__ import annotations

import pytest

from accessreq.models import Token
from tests.conftest import login

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
RESTORE = {"HTTP_HX_REQUEST": "true", "HTTP_HX_HISTORY_RESTORE_REQUEST": "true"}


def _pages(ready_request) -> list[str]:
    token = Token.objects.get(request=ready_request)
    return ["/requests/?status=ready", "/approvals/", f"/tokens/{token.pk}/"]


def test_it_answers_htmx_with_a_fragment_and_varies_on_it(ready_request, approver) -> None:
    bob = login(approver)  # an approver, who sees alice's request and token
    for url in _pages(ready_request):
        page = bob.get(url)
        fragment = bob.get(url, **HTMX)
        assert page.status_code == fragment.status_code == 200, url
        assert b"<html" in page.content and b"<html" not in fragment.content, url
        assert "HX-Request" in page["Vary"] and "HX-Request" in fragment["Vary"], url


def test_it_answers_a_history_restore_with_the_whole_page(ready_request, approver) -> None:
    bob = login(approver)
    for url in _pages(ready_request):
        restored = bob.get(url, **RESTORE)
        assert restored.status_code == 200, url
        assert b"<html" in restored.content and b"<nav" in restored.content, url
