"""ARM's write throttling: a token bucket over the management API's writes (PUT, PATCH, POST, DELETE).

Azure Resource Manager limits each principal's writes per subscription with a token bucket (about 10 a second,
bursts of about 200). When it is empty ARM answers 429 with `Retry-After`, and every answer carries
`x-ms-ratelimit-remaining-subscription-writes`. One bucket here stands for the one principal the portal uses.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

WRITE_METHODS = frozenset({"PUT", "PATCH", "POST", "DELETE"})


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int  # whole writes left in the bucket after this one
    retry_after: int  # seconds until one write is available again (0 when allowed)


def parse(spec: str | None) -> tuple[float, int] | None:
    """ "RATE[/BURST]" (writes a second, bucket size; BURST defaults to RATE, at least 1) to (rate, burst); empty or
    None is no budget. ValueError with a readable message otherwise."""
    if spec is None or not str(spec).strip():
        return None
    rate_text, _, burst_text = str(spec).strip().partition("/")
    try:
        rate = float(rate_text)
        burst = int(burst_text) if burst_text else max(1, math.ceil(rate))
    except ValueError as exc:
        raise ValueError(f"write budget must be RATE[/BURST], e.g. 10/200, not {spec!r}") from exc
    if not rate > 0 or burst < 1 or not math.isfinite(rate):
        raise ValueError("write budget needs a rate above 0 and a burst of at least 1")
    return rate, burst


class WriteBudget:
    """A token bucket, full at start; thread-safe. Counts the writes it let through and the ones it throttled."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self.allowed = 0
        self.throttled = 0

    def _refill(self, now: float) -> None:
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> Decision:
        with self._lock:
            self._refill(time.monotonic())
            if self._tokens >= 1:
                self._tokens -= 1
                self.allowed += 1
                return Decision(True, int(self._tokens), 0)
            self.throttled += 1
            wait = (1 - self._tokens) / self.rate
            return Decision(False, 0, math.ceil(wait))

    def remaining(self) -> int:
        with self._lock:
            self._refill(time.monotonic())
            return int(self._tokens)

    def describe(self) -> dict[str, float | int | str]:
        rate = int(self.rate) if self.rate == int(self.rate) else self.rate
        return {
            "write_budget": f"{rate}/{self.burst}",
            "rate": self.rate,
            "burst": self.burst,
            "remaining": self.remaining(),
            "allowed": self.allowed,
            "throttled": self.throttled,
        }
