"""Local password sign-in, kept for the demo and break-glass admins, behind django-axes' lockout."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import Client
from django.utils import timezone

from tests.conftest import PASSWORD

ATTACKER_IP = "203.0.113.7"
OTHER_IP = "198.51.100.20"


def post_login(client: Client, username: str, password: str, ip: str = ATTACKER_IP, **data: str) -> HttpResponse:
    return client.post("/accounts/login/", {"username": username, "password": password, **data}, REMOTE_ADDR=ip)


def fail(client: Client, username: str, times: int, ip: str = ATTACKER_IP) -> None:
    for _ in range(times):
        post_login(client, username, "wrong-password", ip)


def is_signed_in(client: Client) -> bool:
    return SESSION_KEY in client.session


def test_it_signs_in(requester: User) -> None:
    client = Client()

    response = post_login(client, "alice", PASSWORD, next="/requests/")

    assert response.status_code == 302
    assert response["Location"] == "/requests/"
    assert is_signed_in(client)
    assert client.get("/requests/").status_code == 200


def test_it_rejects_a_wrong_password(requester: User) -> None:
    client = Client()

    response = post_login(client, "alice", "wrong-password")

    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert not is_signed_in(client)


def test_it_rejects_an_inactive_account(requester: User) -> None:
    User.objects.filter(pk=requester.pk).update(is_active=False)
    client = Client()

    assert post_login(client, "alice", PASSWORD).status_code == 200
    assert not is_signed_in(client)


def test_it_locks_after_the_failure_limit(requester: User) -> None:
    client = Client()
    fail(client, "alice", 4)
    assert post_login(client, "alice", "wrong-password").status_code == 429

    response = post_login(client, "alice", PASSWORD)

    assert response.status_code == 429
    assert not is_signed_in(client)
    assert b"Too many failed sign-ins" in response.content
    assert b"locked for 15 minutes" in response.content
    assert response["Retry-After"] == "900"
    # The page is the sign-in page again, not an error page: the form is there for after the cool-off.
    assert b'name="password"' in response.content


def test_it_allows_four_failures(requester: User) -> None:
    client = Client()
    fail(client, "alice", 4)

    assert post_login(client, "alice", PASSWORD).status_code == 302
    assert is_signed_in(client)


def test_it_forgets_failures_after_a_success(requester: User) -> None:
    client = Client()
    fail(client, "alice", 4)
    assert post_login(client, "alice", PASSWORD).status_code == 302
    client.logout()
    fail(client, "alice", 4)

    assert post_login(client, "alice", PASSWORD).status_code == 302


def test_it_unlocks_after_the_cool_off(requester: User) -> None:
    client = Client()
    fail(client, "alice", 5)

    with time_machine.travel(timezone.now() + timedelta(minutes=14), tick=False):
        assert post_login(client, "alice", PASSWORD).status_code == 429
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=False):
        assert post_login(client, "alice", PASSWORD).status_code == 302
        assert is_signed_in(client)


def test_it_does_not_extend_the_lockout_for_attempts_during_it(requester: User) -> None:
    client = Client()
    fail(client, "alice", 5)

    with time_machine.travel(timezone.now() + timedelta(minutes=10), tick=False):
        fail(client, "alice", 3)
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=False):
        assert post_login(client, "alice", PASSWORD).status_code == 302


def test_it_locks_the_username_from_that_address_only(requester: User, approver: User) -> None:
    fail(Client(), "alice", 5)

    assert post_login(Client(), "alice", PASSWORD, ip=OTHER_IP).status_code == 302
    assert post_login(Client(), "bob", PASSWORD).status_code == 302


def test_it_locks_the_admin_sign_in_too(admin_user: User) -> None:
    client = Client()
    for _ in range(5):
        client.post("/admin/login/", {"username": "root", "password": "wrong-password"}, REMOTE_ADDR=ATTACKER_IP)

    response = client.post("/admin/login/", {"username": "root", "password": PASSWORD}, REMOTE_ADDR=ATTACKER_IP)

    assert response.status_code == 429
    assert not is_signed_in(client)


def test_it_takes_the_limit_from_settings(requester: User, settings: object) -> None:
    settings.AXES_FAILURE_LIMIT = 2  # type: ignore[attr-defined]
    client = Client()

    fail(client, "alice", 2)

    assert post_login(client, "alice", PASSWORD).status_code == 429


def test_it_keeps_the_test_client_login_working(requester: User) -> None:
    # Client.login() calls authenticate() without a request, which axes alone would refuse.
    client = Client()

    assert client.login(username="alice", password=PASSWORD)
    assert not Client().login(username="alice", password="wrong-password")
    assert client.get("/requests/").status_code == 200
