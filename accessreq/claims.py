"""Claims with a heartbeat: which worker is doing a piece of work right now, and whether it is still alive.

A worker claims a row (a request it provisions, a slot whose password it generates) with a conditional update that
sets `claimed_at` and a `claim_token` of its own, and refreshes `claimed_at` from a background thread while it works.
A claim not refreshed for CLAIM_LEASE_SECONDS belongs to a worker that died (SIGKILL, OOM, a lost host): anyone may
take it over, and `sweep-claims` sends the work to a live worker within seconds.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, models
from django.db.models import Q
from django.utils import timezone

log = logging.getLogger(__name__)


def lease() -> timedelta:
    return timedelta(seconds=settings.CLAIM_LEASE_SECONDS)


def new_token() -> str:
    return uuid.uuid4().hex


def free(now: datetime) -> Q:
    """Rows nobody holds: never claimed, released, or claimed by a worker whose heartbeat stopped."""
    return Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - lease())


def wait_for(claimed_at: datetime | None, now: datetime) -> float:
    """Seconds until a claim held since `claimed_at` (as last refreshed) lapses, if its holder stops now."""
    if claimed_at is None:
        return 1.0
    return max(1.0, (claimed_at + lease() - now).total_seconds() + 1.0)


@contextmanager
def heartbeat(model: type[models.Model], pk: int, token: str) -> Iterator[None]:
    """Refresh the claim on `model` row `pk` every third of the lease until the block ends. The thread uses its own
    database connection, closed when it stops; a refresh that fails is logged and tried again at the next beat."""
    stop = threading.Event()
    interval = max(0.5, settings.CLAIM_LEASE_SECONDS / 3)

    def beat() -> None:
        try:
            while not stop.wait(interval):
                try:
                    model._default_manager.filter(pk=pk, claim_token=token).update(claimed_at=timezone.now())
                except Exception:  # noqa: BLE001 - a missed beat must not kill the work; the next one tries again
                    log.warning("heartbeat of %s %s failed", model.__name__, pk, exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{model.__name__}-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 5)


def release(model: type[models.Model], pk: int, token: str, **changes: object) -> int:
    """Give the claim up (with any other changes), if it is still ours."""
    return model._default_manager.filter(pk=pk, claim_token=token).update(claimed_at=None, claim_token="", **changes)
