"""Health of the pieces the portal needs: database, broker, Celery workers and the ACR endpoint.

Each check answers within about a second and never raises: a check that cannot tell says what it saw.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.db import connection

from accessreq import acr
from portal.celery import app as celery_app

TIMEOUT = 1.5


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "down", and says why
        return Check("database", False, type(exc).__name__)
    finally:
        # This may run in a helper thread, which must not keep its own connection open.
        connection.close()
    return Check("database", True, connection.vendor)


def check_broker() -> Check:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=TIMEOUT)
            transport = conn.transport.driver_type
    except Exception as exc:  # noqa: BLE001
        return Check("broker", False, type(exc).__name__)
    return Check("broker", True, str(transport))


def check_workers() -> Check:
    try:
        replies = celery_app.control.ping(timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001
        return Check("workers", False, type(exc).__name__)
    if not replies:
        return Check("workers", False, "no worker answered a ping")
    return Check("workers", True, f"{len(replies)} answered")


def check_acr() -> Check:
    ok, detail = acr.ping(timeout=TIMEOUT)
    return Check("acr", ok, detail)


CHECKS = (check_database, check_broker, check_workers, check_acr)


def run_checks() -> list[Check]:
    # Concurrently, so the slowest check sets the response time rather than the sum of them.
    with ThreadPoolExecutor(max_workers=len(CHECKS)) as pool:
        return list(pool.map(lambda check: check(), CHECKS))
