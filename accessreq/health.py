"""Health of the pieces the portal needs: database, broker, Celery workers and the ACR endpoint.

Each check answers within about a second and never raises: a check that cannot tell says what it saw. All of them
together answer within DEADLINE, so a load balancer's probe gets its answer even when the broker hangs; a check still
running then counts as down. Anonymous callers learn up or down and which check failed; only staff see the details
(vendors, transports, worker counts), which would otherwise tell anyone what the portal runs on.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import current_app as celery_app
from django.db import connection

from accessreq import acr
from portal.broker import prune_stale_control_messages

# Each check's own limit, and the whole run's: kept under a second and a half, which is what probes allow.
TIMEOUT = 1.0
DEADLINE = 1.4
# Control messages nobody reads (pings to workers that died, replies after the pinger gave up) are pruned from a
# filesystem broker once they are this old, at most once per PRUNE_EVERY seconds per process.
STALE_CONTROL_SECONDS = 300.0
PRUNE_EVERY = 60.0


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
            # No retry: a retry waits seconds before it starts, and the next probe is the retry.
            conn.ensure_connection(max_retries=0, timeout=TIMEOUT)  # type: ignore[arg-type]  # kombu takes a float
            transport = conn.transport.driver_type
    except Exception as exc:  # noqa: BLE001
        return Check("broker", False, type(exc).__name__)
    return Check("broker", True, str(transport))


def check_workers() -> Check:
    try:
        # The first answer is enough to say "up": without a limit, ping waits out its whole timeout every time.
        replies = celery_app.control.ping(timeout=TIMEOUT, limit=1)
    except Exception as exc:  # noqa: BLE001
        return Check("workers", False, type(exc).__name__)
    finally:
        _prune_filesystem_control_messages()
    if not replies:
        return Check("workers", False, "no worker answered a ping")
    return Check("workers", True, "a worker answered")


_last_prune = [float("-inf")]
_prune_lock = threading.Lock()


def _prune_filesystem_control_messages() -> None:
    """Every ping leaves a message for each worker that ever lived, and a dead one never reads it; on the filesystem
    broker those files would pile up for good, and every poll of the queue folder lists them all."""
    if not celery_app.conf.broker_url or not str(celery_app.conf.broker_url).startswith("filesystem"):
        return
    with _prune_lock:
        now = time.monotonic()
        if now - _last_prune[0] < PRUNE_EVERY:
            return
        _last_prune[0] = now
    options = celery_app.conf.broker_transport_options or {}
    folder = options.get("data_folder_in")
    if folder:
        prune_stale_control_messages(Path(folder), Path(options.get("control_folder", folder)), STALE_CONTROL_SECONDS)


def check_acr() -> Check:
    ok, detail = acr.ping(timeout=TIMEOUT)
    return Check("acr", ok, detail)


CHECKS = (check_database, check_broker, check_workers, check_acr)


def _name(check: Any) -> str:
    return check.__name__.removeprefix("check_")


def run_checks(checks: tuple[Any, ...] = CHECKS, deadline: float = DEADLINE) -> list[Check]:
    """Every check, concurrently, so the slowest one sets the time rather than their sum; none waited for past the
    deadline. A check still running then is reported down, and its thread ends on its own time limit."""
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="healthz")
    futures = [pool.submit(check) for check in checks]
    wait(futures, timeout=deadline)
    # Not `with`: leaving that block would wait for a check that hangs.
    pool.shutdown(wait=False, cancel_futures=True)
    results = []
    for check, future in zip(checks, futures, strict=True):
        if future.done() and not future.cancelled() and future.exception() is None:
            results.append(future.result())
        elif future.done() and not future.cancelled():
            results.append(Check(_name(check), False, type(future.exception()).__name__))
        else:
            results.append(Check(_name(check), False, f"no answer within {deadline:g} s"))
    return results


def summary(checks: list[Check], detailed: bool) -> tuple[dict[str, Any], int]:
    """/healthz's body and status: 200 when every check passed, else 503 naming the checks that failed. Details
    (what each check saw: database vendor, broker transport, how many workers answered) only when `detailed`."""
    down = [c.name for c in checks if not c.ok]
    body: dict[str, Any] = {"status": "ok" if not down else "down", "down": down}
    if detailed:
        body["checks"] = {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}
    return body, 200 if not down else 503
