from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.containerregistry import models as m

from acr_emulator.testing import Emulator, make_client
from acr_emulator.writebudget import WriteBudget, parse

from .helpers import READ, REGISTRY_ID, create_scope_map, create_token, raw

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def budget_emu(emu: Emulator, registry: m.Registry) -> Emulator:
    """The emulator with a registry made before any budget is set."""
    return emu


def test_it_parses_rate_and_burst() -> None:
    assert parse("10/200") == (10.0, 200)
    assert parse("2.5") == (2.5, 3)
    assert parse("") is None
    assert parse(None) is None
    for bad in ("fast", "0/10", "10/0", "-1/5", "10/x"):
        with pytest.raises(ValueError):
            parse(bad)


def test_it_refills_at_the_rate() -> None:
    budget = WriteBudget(20, 2)
    assert [budget.take().allowed for _ in range(3)] == [True, True, False]
    time.sleep(0.06)
    assert budget.take().allowed
    assert (budget.allowed, budget.throttled) == (3, 1)


def test_it_answers_429_in_arms_shape_when_the_bucket_is_empty(budget_emu: Emulator) -> None:
    budget_emu.set_write_budget("0.5/2")
    with make_client(budget_emu.url, retry_total=0) as client:
        first = create_scope_map(client, "map-one", [READ])
        assert first.provisioning_state == "Succeeded"
        create_scope_map(client, "map-two", [READ])
        with pytest.raises(HttpResponseError) as exc:
            create_scope_map(client, "map-three", [READ])
    response = exc.value.response
    assert exc.value.status_code == 429
    assert exc.value.error.code == "SubscriptionRequestsThrottled"
    # A write every 2 s: the next is at most two seconds away, rounded up to whole seconds.
    assert response.headers["Retry-After"] in ("1", "2")
    assert response.headers["x-ms-ratelimit-remaining-subscription-writes"] == "0"
    stats = budget_emu.stats()
    assert stats["write_budget"]["throttled"] == 1
    assert stats["write_budget"]["allowed"] == 2
    assert stats["responses"]["429"] == 1


def test_it_counts_down_remaining_writes_and_leaves_reads_alone(budget_emu: Emulator) -> None:
    budget_emu.set_write_budget("1/5")
    path = f"{REGISTRY_ID}/scopeMaps/map-sm"
    body = {"properties": {"actions": [READ], "description": "x"}}
    first = raw(budget_emu, "PUT", path, body)
    second = raw(budget_emu, "PUT", path, body)
    assert (first.status, second.status) == (200, 200)
    assert int(first.headers["x-ms-ratelimit-remaining-subscription-writes"]) == 4
    assert int(second.headers["x-ms-ratelimit-remaining-subscription-writes"]) == 3
    for _ in range(10):
        assert raw(budget_emu, "GET", path).status == 200
    assert budget_emu.stats()["write_budget"]["allowed"] == 2


def test_it_lifts_the_budget_and_reset_restores_the_start_up_one(budget_emu: Emulator) -> None:
    budget_emu.set_write_budget("1/1")
    budget_emu.set_write_budget(None)
    with make_client(budget_emu.url, retry_total=0) as client:
        for name in ("map-a", "map-b", "map-c"):
            create_scope_map(client, name, [READ])
    assert budget_emu.stats()["write_budget"] is None
    budget_emu.reset()
    assert budget_emu.stats() == {"write_budget": None, "responses": {}}


def test_it_is_set_through_the_admin_config(budget_emu: Emulator) -> None:
    request = urllib.request.Request(
        f"{budget_emu.url}/_emulator/config", data=json.dumps({"write_budget": "5/10"}).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["write_budget"] == "5/10"
    with urllib.request.urlopen(f"{budget_emu.url}/_emulator/stats", timeout=10) as response:
        stats = json.load(response)
    assert stats["write_budget"]["burst"] == 10
    bad = urllib.request.Request(
        f"{budget_emu.url}/_emulator/config", data=json.dumps({"write_budget": "lots"}).encode(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(bad, timeout=10)
    assert exc.value.code == 400
    assert budget_emu.stats()["write_budget"]["burst"] == 10


def test_it_tells_long_running_operations_when_to_poll(budget_emu: Emulator) -> None:
    budget_emu.configure(lro_retry_after=0.05)
    with make_client(budget_emu.url, polling_interval=5) as client:
        scope_map = create_scope_map(client, "map-sm", [READ])
        started = time.monotonic()
        token = create_token(client, "token-1", scope_map.id)
        elapsed = time.monotonic() - started
    assert token.provisioning_state == "Succeeded"
    # Retry-After (0.05 s) and not the client's 5 s fallback set the pace of the polls.
    assert elapsed < 2


def test_it_takes_the_budget_from_the_command_line() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "acr_emulator", "--port", "0", "--write-budget", "3/7", "--log-level", "WARNING"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        with urllib.request.urlopen(f"{url}/_emulator/stats", timeout=10) as response:
            assert json.load(response)["write_budget"]["burst"] == 7
    finally:
        process.terminate()
        process.wait(timeout=10)
    bad = subprocess.run(
        [sys.executable, "-m", "acr_emulator", "--port", "0", "--write-budget", "fast"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "--write-budget" in bad.stderr
