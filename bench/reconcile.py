"""How reconcile scales with a registry's size: seconds, ARM calls and peak memory for registries of growing size.

    .venv/bin/python bench/reconcile.py [SIZES...]      (default: 250 1000)

Expect time and calls to grow linearly (ratio ≈ size ratio) and peak memory to grow far slower: tokens are read
page by page as ARM hands them out. The emulator answers in well under a millisecond, so the figures are the
portal's own cost; against Azure, add ARM's latency per page.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

from _setup import start  # sets Django up before the imports below  # isort: skip

from django.contrib.auth.models import Group

from accessreq import acr, reconcile
from accessreq.models import Registry, UnmanagedToken
from acr_emulator.testing import make_client

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def fill(emulator, registry: Registry, count: int) -> None:
    """Hand-made tokens the portal does not know: the worst case, every one becomes an unmanaged row."""
    sdk = make_client(emulator.url, subscription_id=SUBSCRIPTION, polling_interval=0)
    sdk.scope_maps.begin_create(
        "bench", registry.name, "shared-pull", {"properties": {"actions": ["repositories/app/content/read"]}}
    ).result()
    scope_map_id = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/bench/providers/Microsoft.ContainerRegistry"
        f"/registries/{registry.name}/scopeMaps/shared-pull"
    )
    for i in range(count):
        sdk.tokens.begin_create(
            "bench", registry.name, f"token-{i:05d}", {"properties": {"scopeMapId": scope_map_id}}, polling=False
        )


def served(emulator) -> int:  # noqa: ANN001
    """ARM calls answered so far: counted by status, as the request log keeps only the latest 10,000."""
    return sum(emulator.stats()["responses"].values())


def measure(size: int) -> dict[str, float]:
    emulator = start(page_size=100)
    admins, _ = Group.objects.get_or_create(name="bench-admins")
    registry = Registry(
        subscription_id=SUBSCRIPTION, resource_group="bench", name=f"benchreg{size}", admin_group=admins
    )
    registry.sku = "Premium"
    registry.login_server = acr.ensure_registry(registry, "westeurope", "Premium")
    registry.save()
    fill(emulator, registry, size)
    before = served(emulator)
    tracemalloc.start()
    started = time.perf_counter()
    report = reconcile.reconcile(registry)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    calls = served(emulator) - before
    assert report.unmanaged == size and UnmanagedToken.objects.filter(registry=registry).count() == size
    emulator.stop()
    return {"size": size, "seconds": seconds, "calls": calls, "peak_mib": peak / 2**20}


def main(sizes: list[int]) -> None:
    rows = [measure(size) for size in sizes]
    print(f"{'tokens':>8} {'seconds':>9} {'ms/token':>9} {'ARM calls':>10} {'peak MiB':>9}")
    for row in rows:
        ms = 1000 * row["seconds"] / row["size"]
        print(f"{row['size']:>8} {row['seconds']:>9.2f} {ms:>9.2f} {row['calls']:>10} {row['peak_mib']:>9.1f}")
    first, last = rows[0], rows[-1]
    print(
        f"size x{last['size'] / first['size']:.1f}: time x{last['seconds'] / first['seconds']:.1f}, "
        f"calls x{last['calls'] / first['calls']:.1f}, peak memory x{last['peak_mib'] / first['peak_mib']:.1f}"
    )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [250, 1000])
