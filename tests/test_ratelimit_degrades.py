"""When the rate limiter's cache (Redis) is down or hung, sign-in, filing and reveal still work: the limit fails
open, fast, with a warning at most once a minute. The cache here is a real Redis client pointed at a port where
nothing listens, or at a socket that accepts and never answers."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest
from django.test import Client

from accessreq import ratelimit
from accessreq.models import AccessRequest, AuditEvent
from portal.settings import redis_cache
from tests.conftest import PASSWORD, request_data

pytestmark = pytest.mark.django_db

NOTHING_LISTENS = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def _fresh_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "_failures", ratelimit._Failures())


@pytest.fixture
def cache_down(settings) -> None:
    settings.CACHES = {"default": redis_cache(NOTHING_LISTENS)}


@pytest.fixture
def cache_hung(settings) -> Iterator[None]:
    # Accepts connections (the kernel completes the handshake) and never says a word: a Redis stuck or overloaded.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        settings.CACHES = {"default": redis_cache(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")}
        yield


def _sign_in(username: str) -> tuple[Client, int, float]:
    client = Client()
    started = time.monotonic()
    response = client.post("/accounts/login/", {"username": username, "password": PASSWORD})
    return client, response.status_code, time.monotonic() - started


def test_it_signs_in_with_the_cache_down(requester, cache_down) -> None:
    client, status, elapsed = _sign_in("alice")
    assert status == 302
    assert client.get("/").status_code == 200
    assert elapsed < 1.0
    assert ratelimit.cache_failures() == 1


def test_it_still_locks_out_password_guessing_with_the_cache_down(requester, cache_down, settings) -> None:
    # django-axes keeps its failures in the database, so the lockout does not depend on the cache.
    settings.AXES_FAILURE_LIMIT = 2
    guesser = Client()
    for _ in range(2):
        guesser.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    locked = guesser.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429


def test_it_signs_in_quickly_with_the_cache_hung(requester, cache_hung) -> None:
    _, status, elapsed = _sign_in("alice")
    assert status == 302
    # One cache call times out after half a second; the limiter does not wait for a second one.
    assert elapsed < 1.5
    assert ratelimit.cache_failures() == 1


def test_it_files_and_reveals_with_the_cache_down(ready_request, registry, requester, settings) -> None:
    settings.CACHES = {"default": redis_cache(NOTHING_LISTENS)}
    alice = Client()
    alice.force_login(requester)

    assert alice.post("/requests/new", request_data(registry)).status_code == 302
    assert AccessRequest.objects.count() == 2
    revealed = alice.post(f"/requests/{ready_request.pk}/reveal")
    assert revealed.status_code == 200
    assert AuditEvent.objects.filter(action__icontains="reveal").exists()
    assert ratelimit.cache_failures() == 2


def test_it_warns_at_most_once_a_minute_and_counts_every_failure(requester, cache_down, caplog, monkeypatch) -> None:
    caplog.set_level(logging.WARNING, logger="accessreq.ratelimit")
    for _ in range(3):
        assert _sign_in("alice")[1] == 302
    warnings = [r for r in caplog.records if r.name == "accessreq.ratelimit"]
    assert len(warnings) == 1
    assert "ConnectionError" in warnings[0].getMessage()
    assert "'signin'" in warnings[0].getMessage()
    assert ratelimit.cache_failures() == 3

    # A minute later, the next failure is worth another line.
    monkeypatch.setattr(ratelimit._failures, "last_warned", time.monotonic() - ratelimit.WARN_EVERY_SECONDS - 1)
    assert _sign_in("alice")[1] == 302
    warnings = [r for r in caplog.records if r.name == "accessreq.ratelimit"]
    assert len(warnings) == 2
    assert "(4 failures so far)" in warnings[1].getMessage()


def test_it_limits_again_once_the_cache_answers(requester, settings) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "signin": "2/m"}
    settings.CACHES = {"default": redis_cache(NOTHING_LISTENS)}
    for _ in range(3):
        assert _sign_in("alice")[1] == 302
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    statuses = [_sign_in("alice")[1] for _ in range(3)]
    assert statuses == [302, 302, 429]


def test_it_leaves_programming_errors_alone(requester, monkeypatch) -> None:
    def broken(key: str, period: int) -> int:
        raise TypeError("a bug, not an outage")

    monkeypatch.setattr(ratelimit, "_count", broken)
    with pytest.raises(TypeError):
        Client(raise_request_exception=True).post("/accounts/login/", {"username": "alice", "password": PASSWORD})
