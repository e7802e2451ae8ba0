"""The fault suite: "ready" means a working password, whatever the registry, the worker and the broker do.

- 30% of ARM calls fail (429 with Retry-After, 500, 503, dropped connections, failed long-running operations): every
  request ends READY with a password the registry accepts and a Succeeded token, or FAILED with a reason and what it
  made in the registry taken back (or recorded as left).
- A worker killed at each step of provisioning (its claim left behind, its registry work half done) ends READY, with
  one token and a working password, once the claim lapses.
- A Redis restart loses nothing (PostgreSQL + Redis only; the sweep re-drives what the broker forgot).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from accessreq import acr as acr_module
from accessreq import enqueue, flow, jobs, provisioning, slots
from accessreq.models import AccessRequest, AuditEvent, PasswordSlot, RequestStatus, SlotStatus, Token
from accessreq.scopes import Rule
from acr_emulator.dataplane import allowed_actions
from acr_emulator.testing import make_client
from tests.conftest import SUBSCRIPTION, wait_until

REQUESTS = 20


def _file_and_approve(registry, requester, approver, n: int) -> list[AccessRequest]:
    filed = []
    for i in range(n):
        req = flow.submit(
            requester,
            registry=registry,
            rules=[Rule("myapp/api", ("content/read", "metadata/read"))],
            purpose=f"Fault suite request number {i}, pulling the base image.",
            client_kind="ci",
            owner=requester.username,
            team="Payments",
            password_days=30,
            retire_on=timezone.localdate() + timedelta(days=30),
        )
        assert flow.approve(req, approver, "", None)
        filed.append(req)
    return filed


def _finished(ids: list[int]) -> bool:
    """Every request ready or failed, and every failed one cleaned up: the clean-up runs after the failure commits,
    and its ARM calls may wait out a throttled write."""
    if AccessRequest.objects.filter(pk__in=ids, status__in=["approved", "provisioning"]).exists():
        return False
    failed = AccessRequest.objects.filter(pk__in=ids, status=RequestStatus.FAILED, renews__isnull=True)
    cleaned = AuditEvent.objects.filter(action="request.cleaned_up", target_id__in=[str(pk) for pk in ids])
    return cleaned.values("target_id").distinct().count() >= failed.count()


def _check_outcome(acr, requester, req: AccessRequest) -> str:
    """Ready with a working password on a Succeeded token, or failed with a reason and its leftovers accounted for."""
    req.refresh_from_db()
    registry_token = acr.state.registries["contosotest"].tokens.get(req.token_name.lower())
    if req.status == RequestStatus.READY:
        assert registry_token is not None and registry_token.provisioning_state == "Succeeded", req.token_name
        slot = PasswordSlot.objects.get(token__request=req, name="password1")
        assert slot.status == SlotStatus.AWAITING_REVEAL
        password = slots.reveal(slot, requester, None).password
        assert allowed_actions(acr.state, "contosotest", req.token_name, password, "myapp/api") == {
            "content/read",
            "metadata/read",
        }, req.token_name
        return "ready"
    assert req.status == RequestStatus.FAILED and req.failure_reason, req.token_name
    cleaned = AuditEvent.objects.get(action="request.cleaned_up", target_id=str(req.pk))
    assert registry_token is None or cleaned.details["left"], req.token_name
    return "failed"


@pytest.mark.timeout(300)
@pytest.mark.django_db(transaction=True)
def test_thirty_percent_faults_end_ready_and_working_or_failed_with_a_reason(
    registry, requester, approver, second_approver, acr, celery_worker, settings
) -> None:
    settings.PROVISIONING_RETRY_SECONDS = 0.05
    settings.CELERY_RETRY_MAX_DELAY = 2
    many = 100_000
    acr.add_fault(count=many, status=429, retry_after=1, probability=0.06)
    acr.add_fault(count=many, status=500, probability=0.06)
    acr.add_fault(count=many, status=503, probability=0.06)
    acr.add_fault(count=many, drop=True, probability=0.06)
    acr.add_fault(count=many, lro_fail=True, probability=0.10)
    filed = _file_and_approve(registry, requester, approver, REQUESTS)
    ids = [r.pk for r in filed]
    settings.CLAIM_LEASE_SECONDS = 3
    started = time.monotonic()

    def finished_while_beat_runs_the_quick_jobs() -> bool:
        jobs.sweep_claims()
        return _finished(ids)

    try:
        wait_until(finished_while_beat_runs_the_quick_jobs, timeout=240, interval=0.5)
    finally:
        print(
            f"finished in {time.monotonic() - started:.1f} s:",
            list(AccessRequest.objects.filter(pk__in=ids).values_list("pk", "status", "provision_attempts",
                                                                       "claimed_at", "next_attempt_at")),
        )
    acr.clear_faults()
    served = acr.requests()
    failed_calls = [c for c in served if c["status"] == 0 or c["status"] >= 429]
    outcomes = [_check_outcome(acr, requester, r) for r in filed]
    print(
        f"{len(served)} ARM calls, {len(failed_calls)} answered with a fault (plus failed LROs); "
        f"{outcomes.count('ready')} ready, {outcomes.count('failed')} failed: "
        f"{[r.failure_reason[:100] for r in filed if r.status == RequestStatus.FAILED]}"
    )
    assert outcomes.count("ready") >= REQUESTS // 2  # faults slow provisioning down; most still get through
    # One token per ready request, none twice.
    assert Token.objects.filter(request__in=ids).count() == outcomes.count("ready") + sum(
        1 for r in filed if r.status == RequestStatus.FAILED and Token.objects.filter(request=r).exists()
    )


def _approved(registry, requester, approver) -> AccessRequest:
    return _file_and_approve(registry, requester, approver, 1)[0]


def _dead_claim(model: type, pk: int, settings) -> None:
    long_ago = timezone.now() - timedelta(seconds=settings.CLAIM_LEASE_SECONDS + 1)
    changes = {"updated_at": long_ago} if model is AccessRequest else {}
    model.objects.filter(pk=pk).update(claimed_at=long_ago, claim_token="killed", **changes)


def _killed_after_scope_map(req: AccessRequest) -> None:
    description = f"{acr_module.MANAGED_MARKER} (request {req.pk})"
    acr_module.ensure_scope_map(req.registry, req.token_name, req.scope_map_actions, description)


def _killed_while_creating_the_token(req: AccessRequest) -> None:
    _killed_after_scope_map(req)
    client = make_client(django_settings.ACR_ARM_ENDPOINT, subscription_id=SUBSCRIPTION)
    scope_map_id = client.scope_maps.get("portal-rg", "contosotest", req.token_name).id
    client.tokens.begin_create(
        "portal-rg", "contosotest", req.token_name, {"properties": {"scopeMapId": scope_map_id}}, polling=False
    )


def _killed_during_generate_credentials(req: AccessRequest) -> None:
    # The registry made a password; the worker died before sealing it. Nobody has it.
    slot, _ = provisioning._ensure_in_registry(req)
    acr_module.generate_password(req.registry, req.token_name, slot.name, timezone.now() + timedelta(days=1))
    _dead_claim(PasswordSlot, slot.pk, django_settings)


def _killed_after_sealing(req: AccessRequest) -> None:
    # Everything done but marking the request ready.
    slot, claim = provisioning._ensure_in_registry(req)
    assert claim is not None
    slots.generate_claimed(claim, slot)


STEPS = {
    "after the scope map": _killed_after_scope_map,
    "while creating the token": _killed_while_creating_the_token,
    "during generateCredentials": _killed_during_generate_credentials,
    "after sealing the password": _killed_after_sealing,
}


@pytest.mark.django_db
@pytest.mark.parametrize("step", list(STEPS))
def test_a_worker_killed_at_each_step_ends_ready_with_one_working_password(
    step, registry, requester, approver, acr, settings
) -> None:
    settings.CLAIM_LEASE_SECONDS = 5
    acr.configure(lro_polls=3)
    req = AccessRequest.objects.select_related("registry").get(pk=_approved(registry, requester, approver).pk)
    AccessRequest.objects.filter(pk=req.pk).update(status=RequestStatus.PROVISIONING, provision_attempts=1)
    STEPS[step](req)
    _dead_claim(AccessRequest, req.pk, settings)
    # What the quick sweep does for a dead claim: send the work again; here the test runs it itself.
    assert provisioning.sweep_claims() == 1
    assert provisioning.provision(req.pk) is None
    assert len(acr.state.registries["contosotest"].tokens) == 1
    assert Token.objects.count() == 1 and PasswordSlot.objects.count() == 1
    assert _check_outcome(acr, requester, req) == "ready"


# --- a Redis restart ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    raise AssertionError("redis-server did not start")


@pytest.mark.django_db(transaction=True)
def test_a_redis_restart_loses_nothing(registry, requester, approver, acr, settings) -> None:
    if connection.vendor != "postgresql" or not django_settings.CELERY_BROKER_URL.startswith("redis://"):
        reason = "a Redis restart needs PostgreSQL and Redis (DATABASE_URL and REDIS_URL)"
        print(reason)
        pytest.skip(reason)
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from celery.contrib.testing.worker import start_worker

    from portal.celery import app

    settings.CLAIM_LEASE_SECONDS = 2
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    original = app.conf.broker_url
    redis = _redis(port)

    def use_broker(broker_url: str) -> None:
        # The producer pool keeps the URL it was made with: drop it so the next send connects to this one.
        app.conf.broker_url = broker_url
        app._pool = None
        app.amqp._producer_pool = None

    use_broker(url)
    try:
        # Queued while Redis runs, then Redis restarts with an empty memory before any worker took the messages.
        lost = _file_and_approve(registry, requester, approver, 3)
        redis.terminate()
        redis.wait(10)
        # Approved while Redis is down: the commit stands, the outbox keeps the message.
        waiting = _file_and_approve(registry, requester, approver, 3)
        redis = _redis(port)
        use_broker(url)
        ids = [r.pk for r in lost + waiting]
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            deadline = time.monotonic() + 60
            while not _finished(ids) and time.monotonic() < deadline:
                enqueue.relay()  # the relay-outbox job
                jobs.sweep_claims()  # the sweep-claims job
                time.sleep(0.5)
        assert _finished(ids)
        assert [_check_outcome(acr, requester, r) for r in lost + waiting] == ["ready"] * 6
    finally:
        redis.terminate()
        redis.wait(10)
        use_broker(original)
