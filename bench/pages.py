"""What the busiest lists cost with 25, 500 and 5,000 rows behind them: milliseconds and queries per page.

    .venv/bin/python bench/pages.py [REPEATS]       (default: 50)

Rendered in-process by Django's test client on SQLite, so the figures are the portal's own work (no network, no
server): compare the ratios, which hold from one machine to the next, rather than the absolute numbers.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import timedelta

from _setup import start  # sets Django up before the imports below  # isort: skip

from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accessreq.models import AccessRequest, ApprovalRequirement, ApprovalRule, Registry

PAGES = {"approval queue": ("/approvals/", "bob"), "my requests": ("/requests/", "alice"), "home": ("/", "alice")}


def add_requests(registry: Registry, alice: User, owners: Group, count: int) -> None:
    now = timezone.now()
    made = AccessRequest.objects.bulk_create(
        AccessRequest(
            registry=registry,
            requester=alice,
            owner=alice,
            team="Payments",
            purpose="The payments pipeline pushes its images.",
            client_kind="ci",
            rules=[{"repository": f"myapp/svc{i}", "actions": ["content/read", "content/write"]}],
            password_days=30,
            retire_on=now.date() + timedelta(days=90),
            token_name=f"ci-payments-{i}",
            created_at=now - timedelta(minutes=i),
        )
        for i in range(count)
    )
    ApprovalRequirement.objects.bulk_create(
        ApprovalRequirement(request=r, group=owners, count=2, repositories=[r.rules[0]["repository"]]) for r in made
    )


def _keep_connection_open() -> None:
    # Outside the test runner, Django closes the connection after each request, which would also drop the query
    # log being counted; the test runner detaches the same hook.
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)


def measure(clients: dict[str, Client], repeats: int) -> dict[str, tuple[float, int]]:
    found = {}
    for name, (url, who) in PAGES.items():
        client = clients[who]
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        # Counted now: the next request resets the query log this context reads from.
        queries = len(captured)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            client.get(url)
            timings.append(1000 * (time.perf_counter() - started))
        found[name] = (statistics.median(timings), queries)
    return found


def main(repeats: int, sizes: tuple[int, ...] = (25, 500, 5000)) -> None:
    emulator = start()
    _keep_connection_open()
    owners = Group.objects.create(name="myapp-owners")
    admins = Group.objects.create(name="registry-admins")
    alice = User.objects.create_user("alice", "alice@example.com", "x")
    bob = User.objects.create_user("bob", "bob@example.com", "x")
    bob.groups.add(owners)
    registry = Registry.objects.create(
        subscription_id="0", resource_group="bench", name="benchpages", login_server="benchpages.azurecr.io",
        admin_group=admins,
    )
    ApprovalRule.objects.create(registry=registry, pattern="myapp/*", group=owners)
    clients = {"alice": Client(), "bob": Client()}
    clients["alice"].force_login(alice)
    clients["bob"].force_login(bob)

    results = {}
    total = 0
    for size in sizes:  # each size fills at least a whole page, so every run renders the same number of rows
        add_requests(registry, alice, owners, size - total)
        total = size
        results[size] = measure(clients, repeats)
    emulator.stop()

    header = "".join(f"{f'{n} rows ms':>14}" for n in sizes)
    print(f"{'page':<16}{header} {'ratio last/first':>17} {'queries':>10}")
    for name in PAGES:
        times = [results[n][name][0] for n in sizes]
        queries = "/".join(str(results[n][name][1]) for n in sizes)
        cells = "".join(f"{t:>14.2f}" for t in times)
        print(f"{name:<16}{cells} {times[-1] / times[0]:>17.2f} {queries:>10}")
    print("Each page shows at most PAGE_SIZE rows: its cost should follow the page, not the table behind it.")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
