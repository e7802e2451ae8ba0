"""Rate limits on what an attacker or a runaway script would repeat: sign-in, reveal, filing requests.

Fixed windows counted in the cache (Redis in production, so every web process shares the count). Over the limit,
a request gets 429 with Retry-After and changes nothing. When the cache itself fails, the limit fails open: the
request goes on (sign-in still has django-axes' lockout, kept in the database), and the failure is logged at most
once a minute and counted, rather than every sign-in, filing and reveal answering 500 while Redis is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accessreq.audit import client_ip

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
WARN_EVERY_SECONDS = 60.0

logger = logging.getLogger(__name__)


def _cache_errors() -> tuple[type[BaseException], ...]:
    # What a cache backend raises when its server is away: sockets fail with OSError, and redis-py wraps its own
    # connection and timeout errors in RedisError. Anything else is a programming error and stays one.
    errors: tuple[type[BaseException], ...] = (OSError,)
    try:
        from redis.exceptions import RedisError
    except ImportError:
        return errors
    return (*errors, RedisError)


CACHE_ERRORS = _cache_errors()


class _Failures:
    """How often the cache failed a check, and when that was last logged (per process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.last_warned = float("-inf")

    def record(self, scope: str, exc: BaseException) -> None:
        with self.lock:
            self.count += 1
            now = time.monotonic()
            if now - self.last_warned < WARN_EVERY_SECONDS:
                return
            self.last_warned = now
            count = self.count
        logger.warning(
            "Rate limit %r not applied: the cache failed with %s (%d failures so far); letting requests through.",
            scope,
            type(exc).__name__,
            count,
        )


_failures = _Failures()


def cache_failures() -> int:
    """How many rate-limit checks this process let through because the cache failed."""
    return _failures.count


class Limited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many attempts; try again in {retry_after} seconds.")
        self.retry_after = retry_after


def parse(rate: str) -> tuple[int, int]:
    """"10/m" is 10 per minute."""
    count, _, unit = rate.partition("/")
    return int(count), PERIODS[unit]


def check(scope: str, request: HttpRequest) -> None:
    """Count this request against its scope; raise Limited when over. Per user when signed in, else per address."""
    rate = settings.RATE_LIMITS.get(scope)
    if not rate:
        return
    limit, period = parse(rate)
    user = getattr(request, "user", None)
    who = f"user:{user.pk}" if user is not None and user.is_authenticated else f"ip:{client_ip(request)}"
    now = time.time()
    window = int(now // period)
    key = f"ratelimit:{scope}:{who}:{window}"
    try:
        count = _count(key, period)
    except CACHE_ERRORS as exc:
        _failures.record(scope, exc)
        return
    if count > limit:
        raise Limited(max(1, int(period - now % period) + 1))


def _count(key: str, period: int) -> int:
    cache.add(key, 0, timeout=period + 1)
    try:
        return cache.incr(key)
    except ValueError:  # the key expired between add and incr: this request opens a new window
        cache.add(key, 1, timeout=period + 1)
        return 1


def limited_response(request: HttpRequest, exc: Limited) -> HttpResponse:
    response = render(request, "429.html", {"retry_after": exc.retry_after}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


def rate_limited(scope: str, methods: tuple[str, ...] = ("POST",)) -> Callable:
    """A page view decorator: only the listed methods count."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method in methods:
                try:
                    check(scope, request)
                except Limited as exc:
                    return limited_response(request, exc)
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
