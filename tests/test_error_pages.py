"""Refusals and failures are pages of the portal: they say what happened and lead back, not a bare status line."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.views import defaults

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _login(user) -> Client:
    client = Client()
    client.login(username=user.username, password=PASSWORD)
    return client


def test_it_says_why_access_is_refused(requester) -> None:
    response = _login(requester).get("/audit/")
    assert response.status_code == 403
    assert [t.name for t in response.templates][:2] == ["403.html", "base.html"]
    body = response.content.decode()
    assert "The audit log is for security staff." in body
    assert 'aria-label="Main"' in body  # the navigation is there
    assert 'href="/"' in body


def test_it_shows_a_page_for_what_is_not_there(requester) -> None:
    response = _login(requester).get("/tokens/999999/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "Nothing here" in body
    assert "<code>/tokens/999999/</code>" in body
    assert 'aria-label="Main"' in body
    # The reason the lookup gave is for the logs, not the page.
    assert "No such token" not in body


def test_it_shows_a_page_for_an_unknown_address_when_signed_out(client) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "Nothing here" in response.content.decode()


def test_it_answers_a_server_error_without_the_request_or_the_database(django_assert_num_queries) -> None:
    request = RequestFactory().get("/tokens/")
    with django_assert_num_queries(0):
        response = defaults.server_error(request)
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong" in body
    assert 'href="/"' in body
    assert "/static/css/portal.css" in body


def test_it_lists_teams_in_the_admin(admin_user) -> None:
    from accessreq.models import Team

    Team.objects.create(name="Payments", email="payments@example.com")
    response = _login(admin_user).get("/admin/accessreq/team/?q=payments")
    assert response.status_code == 200
    assert "payments@example.com" in response.content.decode()
