"""ARM's write budget: every worker takes its writes from one shared bucket (the database, or Redis), so approvals
provision within the budget without a single 429; and with the bucket off, ARM's 429s are waited out by their
Retry-After and nothing fails. The emulator plays ARM, with its own write budget."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from django.db import connection

from accessreq import armbudget, provisioning
from accessreq.models import AccessRequest, RequestStatus
from tests.conftest import login, race, request_data

pytestmark = pytest.mark.django_db(transaction=True)
REDIS = "redis://127.0.0.1:6379/13"


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _takes(n: int, subscription_id: str, workers: int = 2) -> float:
    """Seconds for `workers` threads to take n writes between them."""

    def take_some(count: int) -> None:
        for _ in range(count):
            armbudget.acquire(subscription_id, time.monotonic() + 30)
        connection.close()

    started = time.monotonic()
    race(*[lambda: take_some(n // workers)] * workers)
    return time.monotonic() - started


@pytest.mark.parametrize("store", ["database", "redis"])
def test_it_shares_one_bucket_between_workers(store, settings) -> None:
    if store == "redis":
        if not _redis_up():
            pytest.skip("needs Redis at 127.0.0.1:6379")
        settings.REDIS_URL = REDIS
    else:
        settings.REDIS_URL = ""
        settings.CELERY_BROKER_URL = "filesystem://localhost/"
    settings.ARM_WRITES_PER_SECOND = 20
    settings.ARM_WRITE_BURST = 5
    # 5 at once, then 20 a second: 25 writes take a second, whichever worker takes them.
    elapsed = _takes(26, f"sub-{uuid.uuid4()}")
    assert 0.9 <= elapsed < 3


def test_a_429_holds_back_every_worker(settings) -> None:
    settings.ARM_WRITES_PER_SECOND = 100
    settings.ARM_WRITE_BURST = 100
    subscription = f"sub-{uuid.uuid4()}"
    armbudget.throttled(subscription, 1)
    started = time.monotonic()
    armbudget.acquire(subscription, time.monotonic() + 5)
    assert time.monotonic() - started >= 0.9
    armbudget.throttled(subscription, 3)
    with pytest.raises(armbudget.Exhausted):
        armbudget.acquire(subscription, time.monotonic() + 1)


def test_writes_go_ahead_when_redis_is_unreachable(settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.ARM_WRITES_PER_SECOND = 1
    settings.ARM_WRITE_BURST = 1
    for _ in range(3):
        armbudget.acquire("sub-no-redis", time.monotonic() + 0.5)
    armbudget.throttled("sub-no-redis", 5)
    armbudget.observed("sub-no-redis", 0)


def test_arms_count_of_writes_left_caps_the_bucket(settings) -> None:
    settings.ARM_WRITES_PER_SECOND = 10
    settings.ARM_WRITE_BURST = 100
    subscription = f"sub-{uuid.uuid4()}"
    armbudget.acquire(subscription, time.monotonic() + 1)
    armbudget.observed(subscription, 0)
    started = time.monotonic()
    armbudget.acquire(subscription, time.monotonic() + 5)
    assert time.monotonic() - started >= 0.08


def test_it_takes_no_step_for_a_count_the_bucket_cannot_be_above(settings, django_assert_num_queries) -> None:
    settings.REDIS_URL = ""
    settings.CELERY_BROKER_URL = "filesystem://localhost/"
    settings.ARM_WRITES_PER_SECOND = 1
    settings.ARM_WRITE_BURST = 100
    subscription = f"sub-{uuid.uuid4()}"
    armbudget.acquire(subscription, time.monotonic() + 1, writes=10)  # 90 left
    # ARM has 95 left: the bucket holds at most about 90, so the count changes nothing and costs nothing.
    with django_assert_num_queries(0):
        armbudget.observed(subscription, 95)
    # ARM has 20 left: that caps the bucket, so 30 writes more must wait for the refill.
    armbudget.observed(subscription, 20)
    with pytest.raises(armbudget.Exhausted):
        armbudget.acquire(subscription, time.monotonic() + 1, writes=30)


def _approved(registry, requester, approver, n: int) -> list[int]:
    for _ in range(n):
        assert login(requester).post("/requests/new", request_data(registry)).status_code == 302
    pks = list(AccessRequest.objects.values_list("pk", flat=True))
    for pk in pks:
        login(approver).post(f"/requests/{pk}/decide", {"decision": "approve"})
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {RequestStatus.APPROVED}
    return pks


def _provision_on_two_workers(pks: list[int]) -> None:
    def worker(mine: list[int]) -> None:
        for pk in mine:
            # A task that is told to retry runs again after its delay, as Celery would.
            while (delay := provisioning.provision(pk)) is not None:
                time.sleep(delay)
        connection.close()

    outcomes = race(lambda: worker(pks[0::2]), lambda: worker(pks[1::2]))
    assert outcomes == [None, None]


@pytest.mark.parametrize("store", ["database", "redis"])
def test_approvals_provision_within_the_budget_without_a_429(
    store, registry, requester, approver, acr, settings
) -> None:
    if store == "redis":
        if not _redis_up():
            pytest.skip("needs Redis at 127.0.0.1:6379")
        settings.REDIS_URL = REDIS
        redis.Redis.from_url(REDIS).delete(armbudget.KEY_PREFIX + registry.subscription_id)
    pks = _approved(registry, requester, approver, 6)
    settings.ARM_WRITES_PER_SECOND = 5
    settings.ARM_WRITE_BURST = 10
    acr.set_write_budget("5/10")  # full from now, as the portal's bucket
    started = time.monotonic()
    _provision_on_two_workers(pks)
    elapsed = time.monotonic() - started
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {RequestStatus.READY}
    stats = acr.stats()
    assert stats["write_budget"]["throttled"] == 0
    # 6 approvals are 18 writes: 10 at once, then 5 a second.
    assert stats["write_budget"]["allowed"] == 18
    assert 1.2 < elapsed < 10


def test_without_the_portals_limit_arms_429s_are_waited_out(registry, requester, approver, acr, settings) -> None:
    pks = _approved(registry, requester, approver, 6)
    settings.ARM_WRITES_PER_SECOND = 0
    acr.set_write_budget("5/10")
    _provision_on_two_workers(pks)
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {RequestStatus.READY}
    stats = acr.stats()
    assert stats["write_budget"]["throttled"] > 0
    assert stats["write_budget"]["allowed"] == 18
    assert all(AccessRequest.objects.get(pk=pk).provision_attempts <= 2 for pk in pks), (
        "429s waited out in the worker, not burning attempts"
    )
