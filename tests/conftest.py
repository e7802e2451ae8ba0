from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.signals import task_postrun
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client

from portal.celery import app as celery_app
from portal.settings import filesystem_broker

PASSWORD = "test-password-1"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def _use_test_broker() -> None:
    # A broker of the tests' own, so a demo or another test run on the same machine cannot take the tests' messages.
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        # A shared Redis: a queue named for this process.
        celery_app.conf.task_default_queue = f"tests-{os.getpid()}"
        return
    root = Path(settings.VAR_DIR) / f"test-broker-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    celery_app.conf.broker_transport_options = filesystem_broker(root)


def _flush_with_audit_triggers_lifted() -> None:
    # After a transactional test (transactional_db, celery_worker, live_server) Django empties the database with its
    # flush command: one TRUNCATE on PostgreSQL, a DELETE per table on SQLite. The audit tables refuse both, as
    # they must in production, so the suite alone lifts their triggers for the flush's own transaction.
    from django.core.management.commands import flush

    from tests.audit_triggers import triggers_lifted

    handle = flush.Command.handle

    def handle_with_triggers_lifted(self: flush.Command, *args: object, **options: object) -> None:
        with triggers_lifted(str(options.get("database") or "default")):
            handle(self, *args, **options)

    flush.Command.handle = handle_with_triggers_lifted  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    _use_test_broker()
    _flush_with_audit_triggers_lifted()


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(Path(settings.VAR_DIR) / f"test-broker-{os.getpid()}", ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    # Rate-limit counters live in the cache; one test's attempts must not count against the next.
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: object) -> None:
    # The named users are made for every test; the real hasher's cost is for attackers, not for the suite.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def emulator() -> Iterator[object]:
    from acr_emulator.testing import start_emulator

    emu = start_emulator(lro_polls=1)
    yield emu
    emu.stop()


def _missing_data_plane_tools() -> list[str]:
    from acr_emulator.distribution import find_binary

    missing = [] if find_binary() else ["docker-registry"]
    return missing + ([] if shutil.which("skopeo") else ["skopeo"])


@pytest.fixture(scope="session")
def data_plane_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The emulator with a real Distribution registry beside it, for the whole run. Skipped (with the reason
    printed) when docker-registry or skopeo is missing; under CI=true a missing tool fails instead."""
    missing = _missing_data_plane_tools()
    if missing:
        reason = (
            f"data-plane tests need {' and '.join(missing)}: "
            "apt-get install -y --no-install-recommends docker-registry skopeo"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        print(f"\nSKIPPING: {reason}")
        pytest.skip(reason)
    from acr_emulator.testing import start_data_plane

    with start_data_plane(tmp_path_factory.mktemp("registry")) as dp:
        yield dp


@pytest.fixture
def data_plane(data_plane_session: object) -> object:
    """A fresh emulator (no registries, tokens or events) serving the session's registry: the next registry
    created reports the registry's HOST:PORT as its loginServer."""
    data_plane_session.reset()  # type: ignore[attr-defined]
    return data_plane_session


@pytest.fixture
def acr(emulator: object, settings: object) -> Iterator[object]:
    """A clean emulator, and the portal's settings pointing at it."""
    emulator.reset()  # type: ignore[attr-defined]
    settings.ACR_ARM_ENDPOINT = emulator.url  # type: ignore[attr-defined]
    settings.ACR_CREDENTIAL = "emulator"  # type: ignore[attr-defined]
    settings.ACR_POLLING_INTERVAL = 0  # type: ignore[attr-defined]
    # These registries have no data plane to prove passwords at; the data-plane tests switch the proof on.
    settings.ACR_VERIFY_PASSWORDS = False  # type: ignore[attr-defined]
    from accessreq import acr as acr_module

    acr_module._credential.cache_clear()
    from accessreq import armbudget

    # A shared Redis keeps the write bucket between tests (the database's is rolled back): each starts full.
    if armbudget.redis_url():
        armbudget.reset(SUBSCRIPTION)
    yield emulator
    emulator.clear_faults()  # type: ignore[attr-defined]


@pytest.fixture
def celery_worker(transactional_db: None) -> Iterator[object]:
    """A real Celery worker consuming from the real broker, in a thread of this process, for this test only.

    Its own database connection sees only committed data, hence transactional_db. It starts on an empty queue and
    stops with the test: a worker that outlived its test would run tasks other tests queue on commit, against rows
    those tests are tearing down.
    """
    from celery.contrib.testing.worker import start_worker

    celery_app.control.purge()
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as worker:
        yield worker


def make_user(username: str, *groups: Group, **extra: object) -> User:
    user = User.objects.create_user(
        username, f"{username}@example.com", PASSWORD, first_name=username.title(), **extra
    )
    for group in groups:
        user.groups.add(group)
    return user


@pytest.fixture
def groups(db: None) -> dict[str, Group]:
    return {
        "owners": Group.objects.create(name="myapp-owners"),
        "shared": Group.objects.create(name="shared-owners"),
        "admins": Group.objects.create(name="registry-admins"),
        "security": Group.objects.create(name="security"),
    }


@pytest.fixture
def requester(groups: dict[str, Group]) -> User:
    return make_user("alice")


@pytest.fixture
def approver(groups: dict[str, Group]) -> User:
    return make_user("bob", groups["owners"], groups["admins"])


@pytest.fixture
def second_approver(groups: dict[str, Group]) -> User:
    return make_user("carol", groups["owners"], groups["admins"])


@pytest.fixture
def security(groups: dict[str, Group]) -> User:
    return make_user("sam", groups["security"])


@pytest.fixture
def outsider(groups: dict[str, Group]) -> User:
    return make_user("olive")


@pytest.fixture
def admin_user(groups: dict[str, Group]) -> User:
    return make_user("root", is_superuser=True, is_staff=True)


@pytest.fixture
def registry(acr: object, groups: dict[str, Group]) -> object:
    """A registry in the emulator and in the portal: myapp/* owned by myapp-owners, shared/* by shared-owners."""
    from accessreq import acr as acr_module
    from accessreq.models import ApprovalRule, Registry

    reg = Registry(
        subscription_id=SUBSCRIPTION, resource_group="portal-rg", name="contosotest", admin_group=groups["admins"]
    )
    reg.login_server = acr_module.ensure_registry(reg, "westeurope", "Standard")
    reg.save()
    ApprovalRule.objects.create(registry=reg, pattern="myapp/*", group=groups["owners"])
    ApprovalRule.objects.create(registry=reg, pattern="shared/*", group=groups["shared"])
    return reg


def login(user: User) -> Client:
    """A test client signed in as a named user."""
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def race(*calls: Callable[[], object]) -> list[object]:
    """Start the calls together on threads of their own and return what each returned or raised, in call order.
    Each thread closes its own database connection, as a web or worker process would."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[object] = [None] * len(calls)

    def run(i: int, call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            outcomes[i] = call()
        except Exception as exc:  # noqa: BLE001 - the outcome is the test's to judge
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def run_on_worker(task: Any, *args: object, timeout: float = 60.0) -> None:
    """Send a task to the test's worker and wait until the worker has run it, whatever it did or did not change."""
    task_id = str(uuid.uuid4())
    done = threading.Event()

    def finished(sender: object = None, task_id: str | None = None, **kwargs: object) -> None:
        if task_id == wanted:
            done.set()

    wanted = task_id
    task_postrun.connect(finished, weak=False)
    try:
        task.apply_async(args=args, task_id=task_id)
        assert done.wait(timeout), f"the worker did not run {task.name} within {timeout} s"
    finally:
        task_postrun.disconnect(finished)


def wait_until(predicate: object, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Wait for the worker to reach a state. Not a timing assertion: the bound only stops a broken test."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError("the expected state was not reached")


def request_data(registry: object, **overrides: object) -> dict[str, object]:
    """The form fields of a valid request: pull and list on myapp/api."""
    from datetime import timedelta

    from django.utils import timezone

    data: dict[str, object] = {
        "registry": registry.pk,  # type: ignore[attr-defined]
        "rules-TOTAL_FORMS": "1",
        "rules-INITIAL_FORMS": "0",
        "rules-0-repository": "myapp/api",
        "rules-0-actions": ["content/read", "metadata/read"],
        "purpose": "The payments CI pipeline pulls the base image.",
        "client_kind": "ci",
        "owner": "alice",
        "team": "Payments",
        "password_days": "30",
        "retire_on": (timezone.localdate() + timedelta(days=90)).isoformat(),
    }
    data.update(overrides)
    return data


@pytest.fixture
def ready_request(registry: object, requester: User, approver: User) -> object:
    """A request filed by alice, approved by bob and provisioned in the emulator, its password not yet revealed."""
    from accessreq import provisioning
    from accessreq.models import AccessRequest, PasswordSlot, SlotStatus

    alice, bob = Client(), Client()
    alice.login(username="alice", password=PASSWORD)
    bob.login(username="bob", password=PASSWORD)
    assert alice.post("/requests/new", request_data(registry)).status_code == 302
    req = AccessRequest.objects.get()
    assert bob.post(f"/requests/{req.pk}/decide", {"decision": "approve"}).status_code == 302
    # The worker's job, done here in the test's own thread: the same domain function the task calls. Where a test
    # also runs a worker, it may be provisioning the same request at the same time, as a redelivered task would.
    # A run that finds the worker's claim on the request answers with a delay and leaves the work to it.
    provisioning.provision(req.pk)
    wait_until(lambda: PasswordSlot.objects.filter(token__request=req, status=SlotStatus.AWAITING_REVEAL).exists())
    req.refresh_from_db()
    return req
