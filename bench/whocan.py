"""How "who can reach this repository?" scales with a registry's tokens: latency for 5k and 50k tokens.

    .venv/bin/python bench/whocan.py [SIZES...]      (default: 5000 50000)

Tokens are bulk-inserted straight into the database (no registry calls): one in ten is on a `team-N/*` wildcard, the
rest on exact repositories, and 200 are unmanaged. The question asks about a repository under one team's prefix, as
security would before a push. Rules are narrowed in SQL before they are checked exactly, so time grows with the
table scan (expect a ratio near the size ratio, at a low cost per token) while the answer stays small.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import timedelta

from _setup import start  # sets Django up before the imports below  # isort: skip

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from accessreq import whocan
from accessreq.models import Registry, Token, UnmanagedToken


def fill(registry: Registry, owner, size: int) -> None:
    retire_on = timezone.localdate() + timedelta(days=90)
    batch = []
    for i in range(size):
        team = i % 500
        pattern = f"team-{team}/*" if i % 10 == 0 else f"team-{team}/service-{i}"
        actions = ["content/read", "content/write"] if i % 3 == 0 else ["content/read"]
        batch.append(
            Token(
                registry=registry,
                name=f"tok-{i:06d}",
                scope_map_name=f"tok-{i:06d}-map",
                owner=owner,
                requester=owner,
                team=f"team-{team}",
                purpose="bench",
                client_kind="ci",
                rules=[{"repository": pattern, "actions": actions}],
                retire_on=retire_on,
                risky=i % 3 == 0,
            )
        )
        if len(batch) == 5000:
            Token.objects.bulk_create(batch)
            batch = []
    Token.objects.bulk_create(batch)
    UnmanagedToken.objects.bulk_create(
        UnmanagedToken(
            registry=registry,
            name=f"unm-{i:04d}",
            scope_map_name="_repositories_pull" if i == 0 else f"m{i}",
            actions=["repositories/*/content/read"] if i == 0 else [f"repositories/other-{i}/content/read"],
            status="enabled",
        )
        for i in range(200)
    )


def measure(size: int, owner, admins: Group) -> dict[str, float]:
    registry = Registry.objects.create(
        subscription_id="00000000-0000-0000-0000-000000000000",
        resource_group="bench",
        name=f"whocan{size}",
        login_server=f"whocan{size}.azurecr.io",
        sku="Premium",
        admin_group=admins,
    )
    fill(registry, owner, size)
    whocan.who_can(registry, "team-10/new-thing")  # warm up
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        grants = whocan.who_can(registry, "team-10/new-thing")
        timings.append(time.perf_counter() - started)
    return {"size": size, "ms": 1000 * statistics.median(timings), "found": len(grants)}


def main(sizes: list[int]) -> None:
    start()
    admins, _ = Group.objects.get_or_create(name="bench-admins")
    owner = get_user_model().objects.create_user("bench-owner")
    rows = [measure(size, owner, admins) for size in sizes]
    print(f"{'tokens':>8} {'median ms':>10} {'µs/token':>9} {'found':>6}")
    for row in rows:
        print(f"{row['size']:>8} {row['ms']:>10.1f} {1000 * row['ms'] / row['size']:>9.2f} {row['found']:>6}")
    first, last = rows[0], rows[-1]
    print(f"size x{last['size'] / first['size']:.1f}: latency x{last['ms'] / first['ms']:.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [5000, 50000])
