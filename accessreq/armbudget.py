"""The portal's share of Azure Resource Manager's write budget, one token bucket shared by every worker.

ARM allows a principal about 10 writes a second in a subscription, in bursts of about 200; past that it answers 429
with Retry-After. Rather than find the limit by hitting it, each ARM write first takes a token from a bucket of
ARM_WRITES_PER_SECOND refilled up to ARM_WRITE_BURST, kept where all workers see it: in Redis (one Lua script per
step, so it is atomic) when the portal has Redis, else in the database (one row per subscription, changed only by
a conditional update on its version). A 429 empties the bucket and sets a "not before" time from its Retry-After,
so every worker backs off, not only the one that was told; ARM's count of the writes left
(x-ms-ratelimit-remaining-subscription-writes) caps the bucket, so writes made by others with the same principal
slow the portal down too. Used only by accessreq.acr.

Each worker remembers what its last step left in the bucket: between steps only the refill adds to it, so that
bounds what it can hold now, and a count of writes left at or above the bound is not worth a step (it could not
lower the bucket). With ARM's count usually above the portal's own, most writes then cost one step, not two.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cache
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from accessreq.models import ArmWriteBudget

log = logging.getLogger(__name__)

KEY_PREFIX = "acr-portal:arm-writes:"
# One script for the three steps, so each is a single atomic call. The clock is Redis's own, the same for every
# worker whatever their hosts' clocks say. Answers the seconds to wait and the tokens left (as strings: Lua numbers
# become integers).
_SCRIPT = """
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'stamp', 'not_before')
local tokens = tonumber(v[1]) or burst
local stamp = tonumber(v[2]) or now
local not_before = tonumber(v[3]) or 0
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if ARGV[1] == 'take' then
  local n = math.min(burst, math.max(1, tonumber(ARGV[4])))
  if now < not_before then
    wait = not_before - now
  elseif tokens >= n then
    tokens = tokens - n
  else
    wait = (n - tokens) / rate
  end
elseif ARGV[1] == 'throttle' then
  tokens = 0
  not_before = math.max(not_before, now + tonumber(ARGV[4]))
else
  tokens = math.min(tokens, tonumber(ARGV[4]))
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', now, 'not_before', not_before)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate + math.max(0, not_before - now)) + 60)
return {tostring(wait), tostring(tokens)}
"""


# By subscription: (tokens, time.monotonic() before the step) as this process's last step left the bucket.
_left: dict[str, tuple[float, float]] = {}
_left_lock = threading.Lock()


class Exhausted(Exception):
    """No write could be had within the wait allowed; `wait` is how long until one may."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"ARM write budget exhausted for another {wait:.1f}s")
        self.wait = wait


def enabled() -> bool:
    return settings.ARM_WRITES_PER_SECOND > 0


def redis_url() -> str:
    """The Redis the bucket lives in, or "" for the database."""
    if settings.REDIS_URL:
        return str(settings.REDIS_URL)
    broker = str(settings.CELERY_BROKER_URL)
    return broker if broker.startswith(("redis://", "rediss://")) else ""


@cache
def _redis_script(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url).register_script(_SCRIPT)


def _step(subscription_id: str, action: str, value: float = 0.0) -> float:
    """One step of the bucket ("take" `value` writes, "throttle" for `value` seconds, "observe" `value` writes
    left); the seconds to wait before the writes may go (0 when "take" got them)."""
    rate = float(settings.ARM_WRITES_PER_SECOND)
    burst = float(max(1, settings.ARM_WRITE_BURST))
    url = redis_url()
    before = time.monotonic()
    if url:
        script = _redis_script(url)
        wait_text, tokens_text = script(keys=[KEY_PREFIX + subscription_id], args=[action, rate, burst, value])
        wait, tokens = float(wait_text), float(tokens_text)
    else:
        wait, tokens = _db_step(subscription_id, action, value, rate, burst)
    with _left_lock:
        _left[subscription_id] = (tokens, before)
    return wait


def _most_left(subscription_id: str) -> float | None:
    """The most the bucket can hold now, from this process's last step (None before its first): only the refill has
    added to it since, whatever other workers took. Timed from before that step, so it errs high, never low."""
    with _left_lock:
        known = _left.get(subscription_id)
    if known is None:
        return None
    tokens, at = known
    return min(float(settings.ARM_WRITE_BURST), tokens + (time.monotonic() - at) * settings.ARM_WRITES_PER_SECOND)


def _db_step(subscription_id: str, action: str, value: float, rate: float, burst: float) -> tuple[float, float]:
    """As the Redis script: (seconds to wait, tokens left)."""
    rows = ArmWriteBudget.objects.filter(subscription_id=subscription_id)
    while True:
        now = time.time()
        row = rows.values("pk", "tokens", "stamp", "not_before", "version").first()
        if row is None:
            try:
                with transaction.atomic():
                    ArmWriteBudget.objects.create(subscription_id=subscription_id, tokens=burst, stamp=now)
            except IntegrityError:
                pass  # another worker made it first: use theirs
            continue
        tokens = min(burst, row["tokens"] + max(0.0, now - row["stamp"]) * rate)
        not_before = row["not_before"]
        if action == "take":
            wanted = min(burst, max(1.0, value))
            if now < not_before:
                return not_before - now, tokens
            if tokens < wanted:
                return (wanted - tokens) / rate, tokens
            tokens -= wanted
        elif action == "throttle":
            tokens, not_before = 0.0, max(not_before, now + value)
        else:
            if tokens <= value:
                return 0.0, tokens
            tokens = value
        # Touches the row only if nobody changed it since it was read; otherwise read again and redo the sums.
        changed = ArmWriteBudget.objects.filter(pk=row["pk"], version=row["version"]).update(
            tokens=tokens, stamp=now, not_before=not_before, version=row["version"] + 1
        )
        if changed == 1:
            return 0.0, tokens


def _redis_errors() -> tuple[type[Exception], ...]:
    if not redis_url():
        return ()
    import redis

    return (redis.RedisError,)


def acquire(subscription_id: str, deadline: float, writes: int = 1) -> float:
    """Take `writes` writes (one unless told; at most a burst) from the subscription's bucket in one step, waiting
    (until `deadline`, a time.monotonic() value) for them to come; the seconds waited. Exhausted when they do not
    come in time. With Redis unreachable the writes go ahead unlimited (ARM's own 429s still hold them back): the
    budget is an economy, not a reason to stop provisioning."""
    if not enabled():
        return 0.0
    started = time.monotonic()
    while True:
        try:
            wait = _step(subscription_id, "take", float(writes))
        except _redis_errors() as exc:
            log.warning("ARM write budget unavailable, writing without it: %s", exc)
            return time.monotonic() - started
        if wait <= 0:
            return time.monotonic() - started
        now = time.monotonic()
        if now + wait > deadline:
            raise Exhausted(wait)
        # A little over the wait, so the token is there when we look (and a crowd of workers spreads out).
        time.sleep(wait + min(0.05, wait * 0.1))


def throttled(subscription_id: str, retry_after: float) -> None:
    """ARM said 429: no worker writes for `retry_after` seconds, and the bucket starts again from empty."""
    if enabled():
        log.warning("ARM throttled writes in subscription %s for %.0fs", subscription_id, retry_after)
        try:
            _step(subscription_id, "throttle", max(0.0, retry_after))
        except _redis_errors() as exc:
            log.warning("ARM write budget unavailable: %s", exc)


def observed(subscription_id: str, remaining: int) -> None:
    """ARM counts `remaining` writes left: never hold more than that, as others may be writing with this principal.
    A count the bucket cannot be above needs no step."""
    if not enabled() or remaining >= settings.ARM_WRITE_BURST:
        return
    most = _most_left(subscription_id)
    if most is None or remaining < most:
        try:
            _step(subscription_id, "observe", float(max(0, remaining)))
        except _redis_errors() as exc:
            log.warning("ARM write budget unavailable: %s", exc)


def reset(subscription_id: str) -> None:
    """A full bucket for the subscription, with no "not before": its state is forgotten."""
    with _left_lock:
        _left.pop(subscription_id, None)
    url = redis_url()
    if url:
        import redis

        redis.Redis.from_url(url).delete(KEY_PREFIX + subscription_id)
    else:
        ArmWriteBudget.objects.filter(subscription_id=subscription_id).delete()
