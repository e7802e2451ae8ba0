"""Export throughput and memory: the audit log as CSV and JSON for growing numbers of rows.

    .venv/bin/python bench/exports.py [SIZES...]      (default: 10000 100000)

Rows are bulk-inserted (valid-looking, not chained), then exported through the same streaming response the page
and the API answer with, consumed chunk by chunk as a client would. Expect rows/s roughly constant and peak memory
flat (ratio near 1) as the row count grows tenfold.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

from _setup import start  # sets Django up before the imports below  # isort: skip

from django.utils import timezone

from accessreq import exports
from accessreq.models import AuditEvent


def fill(upto: int) -> None:
    have = AuditEvent.objects.count()
    now = timezone.now()
    for first in range(have, upto, 5000):
        AuditEvent.objects.bulk_create(
            AuditEvent(
                created_at=now,
                actor_name="bench",
                action="token.disabled",
                target_type="accessreq.token",
                target_id=str(i),
                target_repr=f"benchreg/token-{i}",
                details={"reason": "routine check"},
                prev_hash=f"{i:064x}",
                hash=f"{i + 1:064x}",
                key_id="bench",
            )
            for i in range(first, min(first + 5000, upto))
        )


def measure(fmt: str, size: int) -> dict[str, float]:
    tracemalloc.start()
    started = time.perf_counter()
    written = 0
    for chunk in exports.export_audit(fmt).streaming_content:
        written += len(chunk)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # tracemalloc slows Python down: time a second run without it for the throughput.
    started = time.perf_counter()
    for _ in exports.export_audit(fmt).streaming_content:
        pass
    seconds = time.perf_counter() - started
    return {"fmt": fmt, "size": size, "rows_s": size / seconds, "peak_mib": peak / 2**20, "mib": written / 2**20}


def main(sizes: list[int]) -> None:
    start()
    rows = []
    for size in sizes:
        fill(size)
        rows += [measure("csv", size), measure("json", size)]
    print(f"{'format':>6} {'rows':>8} {'rows/s':>9} {'output MiB':>10} {'peak MiB':>9}")
    for row in rows:
        print(f"{row['fmt']:>6} {row['size']:>8} {row['rows_s']:>9.0f} {row['mib']:>10.1f} {row['peak_mib']:>9.2f}")
    for fmt in ("csv", "json"):
        mine = [r for r in rows if r["fmt"] == fmt]
        first, last = mine[0], mine[-1]
        memory = last["peak_mib"] / first["peak_mib"]
        speed = last["rows_s"] / first["rows_s"]
        print(f"{fmt}: rows x{last['size'] / first['size']:.0f}, peak memory x{memory:.2f}, throughput x{speed:.2f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000])
