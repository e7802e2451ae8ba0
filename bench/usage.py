"""How collect-usage scales with the events in a registry's logs: seconds and peak memory for 100k and 1M events over
10k tokens, read through the emulator's Log Analytics query API with azure-monitor-query's client.

    .venv/bin/python bench/usage.py [EVENTS...]      (default: 100000 1000000)

The emulator runs in a child process, its event tables filled directly (90% repository events: pulls, pushes,
deletes over 250 repositories; 10% logins, 1 in 100 failed), spread over the last 29 days. Expect time to grow
linearly (ratio ≈ event ratio) and peak memory to stay flat: events are read page by page (USAGE_PAGE_SIZE), and
only the page's aggregates are held. Each size runs in a process of its own; its peak memory is how far its
resident set grew during the run (the high-water mark from getrusage, less the size before it: the portal's, not
the emulator's). CPU seconds are the collecting process's own, which other work on the machine does not inflate as
it does wall time. The last line gives the ratios.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import resource
import sys
import time
from collections import deque
from datetime import UTC, datetime, timedelta

from _setup import start  # sets Django up before the imports below  # isort: skip

from django.conf import settings
from django.contrib.auth.models import Group, User

from accessreq import loganalytics, usage
from accessreq.models import ClientKind, Registry, Token, TokenUsage
from acr_emulator.state import format_time

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
TOKENS = 10_000
WORKSPACE = "00000000-0000-4000-8000-0000000be9c4"


def _events(count: int, resource_id: str) -> dict[str, deque]:
    """`count` events in time order, as the registry and its token server would have written them."""
    rng = random.Random(count)
    now = datetime.now(UTC)
    start = now - timedelta(days=29)
    step = (now - start - timedelta(minutes=1)) / count
    names = [sys.intern(f"token-{i:05d}") for i in range(TOKENS)]
    repositories = [sys.intern(f"team{t}/app{a}") for t in range(50) for a in range(5)]
    logins: deque = deque()
    repos: deque = deque()
    for i in range(count):
        when = format_time(start + step * i)
        token = rng.randrange(TOKENS)
        if i % 10 == 0:
            failed = rng.random() < 0.01
            logins.append(
                {
                    "TimeGenerated": when,
                    "Identity": names[token],
                    "ResultType": "401" if failed else "200",
                    "ResultDescription": "wrong password" if failed else "Succeeded",
                    "CorrelationId": f"l{i}",
                    "_ResourceId": resource_id,
                }
            )
            continue
        roll = rng.random()
        operation = "Pull" if roll < 0.8 else "Push" if roll < 0.95 else "Delete"
        repos.append(
            {
                "TimeGenerated": when,
                "Identity": names[token],
                "OperationName": operation,
                "Repository": repositories[(token + rng.randrange(3)) % len(repositories)],
                "Digest": "sha256:" + format(i, "064x"),
                "CorrelationId": f"r{i}",
                "_ResourceId": resource_id,
            }
        )
    return {"ContainerRegistryLoginEvents": logins, "ContainerRegistryRepositoryEvents": repos}


def _serve(count: int, resource_id: str, ready: multiprocessing.Queue) -> None:
    import logging

    from acr_emulator.server import serve

    logging.getLogger("acr_emulator").setLevel(logging.WARNING)
    server = serve("127.0.0.1", 0)
    server.state.events = _events(count, resource_id)
    ready.put(server.url)
    server.serve_forever()


def measure(count: int) -> dict[str, float]:
    start(page_size=100)
    admins, _ = Group.objects.get_or_create(name="bench-admins")
    owner, _ = User.objects.get_or_create(username="bench-owner")
    registry = Registry.objects.create(
        subscription_id=SUBSCRIPTION,
        resource_group="bench",
        name=f"benchusage{count}",
        login_server="bench.azurecr.io",
        admin_group=admins,
        log_analytics_workspace_id=WORKSPACE,
    )
    made = datetime.now(UTC) - timedelta(days=60)
    Token.objects.bulk_create(
        Token(
            registry=registry,
            name=f"token-{i:05d}",
            scope_map_name=f"token-{i:05d}-map",
            owner=owner,
            requester=owner,
            team="bench",
            purpose="bench",
            client_kind=ClientKind.CI,
            rules=[{"repository": "team1/*", "actions": ["content/read"]}],
            retire_on=(made + timedelta(days=365)).date(),
            created_at=made,
        )
        for i in range(TOKENS)
    )
    ready: multiprocessing.Queue = multiprocessing.Queue()
    child = multiprocessing.get_context("fork").Process(
        target=_serve, args=(count, usage.resource_id(registry), ready), daemon=True
    )
    child.start()
    settings.LOG_ANALYTICS_ENDPOINT = ready.get(timeout=600)
    settings.LOG_ANALYTICS_CREDENTIAL = "emulator"
    settings.USAGE_MAX_EVENTS_PER_RUN = count + 1
    loganalytics._credential.cache_clear()
    resident_before = _resident_bytes()
    started, cpu_started = time.perf_counter(), time.process_time()
    counted = usage.collect(registry)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - resident_before  # ru_maxrss: KiB on Linux
    again = usage.collect(registry)
    child.terminate()
    child.join()
    pulls_pushes_deletes = sum(TokenUsage.objects.filter(token__registry=registry).values_list("count", flat=True))
    assert again == 0, again
    assert pulls_pushes_deletes == count - (count + 9) // 10, pulls_pushes_deletes  # every repository event, once
    return {"events": count, "counted": counted, "seconds": seconds, "cpu": cpu, "peak_mb": max(peak, 0) / 2**20}


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measured(count: int, results: multiprocessing.Queue) -> None:
    results.put(measure(count))


def measure_alone(count: int) -> dict[str, float]:
    """measure() in a fresh process, so one size's peak memory is not hidden under an earlier one's."""
    from django.db import connections

    connections.close_all()
    results: multiprocessing.Queue = multiprocessing.Queue()
    child = multiprocessing.get_context("fork").Process(target=_measured, args=(count, results))
    child.start()
    result = results.get()
    child.join()
    return result


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    print(f"collect-usage over {TOKENS:,} tokens, page size {settings.USAGE_PAGE_SIZE:,}")
    results = []
    for size in sizes:
        result = measure_alone(size)
        results.append(result)
        print(
            f"{result['events']:>10,} events: {result['seconds']:7.1f} s "
            f"({result['events'] / result['seconds']:,.0f} events/s; {result['cpu']:.1f} s CPU, "
            f"{result['events'] / result['cpu']:,.0f} events per CPU second), peak +{result['peak_mb']:.1f} MiB, "
            f"{result['counted']:,} counted; a second run counts 0",
            flush=True,
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        rate = (last["events"] / last["seconds"]) / (first["events"] / first["seconds"])
        print(
            f"ratio {last['events'] / first['events']:.0f}x events: "
            f"time {last['seconds'] / first['seconds']:.1f}x (CPU {last['cpu'] / first['cpu']:.1f}x), "
            f"events/s {rate:.2f}x, peak memory {last['peak_mb'] / max(first['peak_mb'], 0.1):.2f}x"
        )


if __name__ == "__main__":
    main()
