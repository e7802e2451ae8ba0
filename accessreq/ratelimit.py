"""Rate limits on what an attacker or a runaway script would repeat: sign-in, reveal, filing requests.

Fixed windows counted in the cache (Redis in production, so every web process shares the count). Over the limit,
a request gets 429 with Retry-After and changes nothing.
"""

from __future__ import annotations

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
    cache.add(key, 0, timeout=period + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # the key expired between add and incr: this request opens a new window
        cache.add(key, 1, timeout=period + 1)
        count = 1
    if count > limit:
        raise Limited(max(1, int(period - now % period) + 1))


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
