"""The emulator's Log Analytics query API, driven by azure-monitor-query's LogsQueryClient."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError
from azure.monitor.query import LogsQueryStatus

from acr_emulator.loganalytics import QueryError, parse_timespan, run_query
from acr_emulator.state import format_time
from acr_emulator.testing import Emulator, make_logs_client

REPO = "ContainerRegistryRepositoryEvents"
LOGIN = "ContainerRegistryLoginEvents"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WORKSPACE = "11111111-2222-3333-4444-555555555555"


def _repo_row(minutes: int, identity: str, repository: str, op: str) -> dict:
    return {
        "TimeGenerated": format_time(T0 + timedelta(minutes=minutes)),
        "OperationName": op,
        "Identity": identity,
        "Repository": repository,
        "CorrelationId": f"c{minutes}",
        "_ResourceId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/reg",
        "Size": 10,
    }


@pytest.fixture
def loaded(emu: Emulator) -> Emulator:
    rows = [
        _repo_row(0, "ci-one", "myapp/api", "Push"),
        _repo_row(1, "ci-one", "myapp/api", "Pull"),
        _repo_row(2, "ci-one", "myapp/api", "Pull"),
        _repo_row(3, "ci-two", "myapp/web", "Pull"),
        _repo_row(4, "ci-one", "myapp/web", "Delete"),
    ]
    for row in rows:
        emu.state.record_event(REPO, row)
    emu.state.record_event(
        LOGIN,
        {"TimeGenerated": format_time(T0), "Identity": "ci-one", "ResultType": "401", "CorrelationId": "l1"},
    )
    return emu


def test_it_answers_rows_through_the_sdk(loaded: Emulator) -> None:
    client = make_logs_client(loaded.url)
    query = (
        f"{REPO} | where TimeGenerated > datetime({format_time(T0)}) and Identity == 'ci-one'"
        " | project TimeGenerated, Repository, OperationName | order by TimeGenerated asc | take 2"
    )
    result = client.query_workspace(WORKSPACE, query, timespan=None)
    assert result.status == LogsQueryStatus.SUCCESS
    table = result.tables[0]
    assert table.columns == ["TimeGenerated", "Repository", "OperationName"]
    assert [list(r) for r in table.rows] == [
        [T0 + timedelta(minutes=1), "myapp/api", "Pull"],
        [T0 + timedelta(minutes=2), "myapp/api", "Pull"],
    ]


def test_it_summarizes_count_and_max_by_columns(loaded: Emulator) -> None:
    client = make_logs_client(loaded.url)
    query = (
        f"{REPO} | where Identity in ('ci-one', 'ci-two') and TimeGenerated >= datetime('{format_time(T0)}')"
        " | summarize count(), max(TimeGenerated) by Identity, Repository, OperationName"
        " | order by Identity asc, Repository asc, OperationName asc"
    )
    result = client.query_workspace(WORKSPACE, query, timespan=(T0 - timedelta(hours=1), T0 + timedelta(hours=1)))
    table = result.tables[0]
    assert table.columns == ["Identity", "Repository", "OperationName", "count_", "max_TimeGenerated"]
    assert table.columns_types[-2:] == ["long", "datetime"]
    assert [list(r) for r in table.rows] == [
        ["ci-one", "myapp/api", "Pull", 2, T0 + timedelta(minutes=2)],
        ["ci-one", "myapp/api", "Push", 1, T0],
        ["ci-one", "myapp/web", "Delete", 1, T0 + timedelta(minutes=4)],
        ["ci-two", "myapp/web", "Pull", 1, T0 + timedelta(minutes=3)],
    ]


def test_it_limits_rows_to_the_timespan(loaded: Emulator) -> None:
    client = make_logs_client(loaded.url)
    result = client.query_workspace(
        WORKSPACE, f"{REPO} | summarize count()", timespan=(T0 + timedelta(minutes=2), timedelta(minutes=1))
    )
    assert [list(r) for r in result.tables[0].rows] == [[2]]


def test_it_returns_the_schema_for_an_empty_result(emu: Emulator) -> None:
    result = make_logs_client(emu.url).query_workspace(WORKSPACE, f"{LOGIN} | where ResultType == '401'", timespan=None)
    assert "JwtId" in result.tables[0].columns
    assert result.tables[0].rows == []


@pytest.mark.parametrize(
    "query",
    [
        f"{REPO} | extend x = 1",
        f"{REPO} | where Identity contains 'ci'",
        f"{REPO} | where Identity == 'a' or Identity == 'b'",
        f"{REPO} | summarize dcount(Identity)",
        f"{REPO} | where NoSuchColumn == 1",
        "NoSuchTable | take 1",
        f"{REPO} | take ten",
        f"{REPO}; drop table",
    ],
)
def test_it_rejects_what_is_outside_the_subset(emu: Emulator, query: str) -> None:
    with pytest.raises(HttpResponseError) as caught:
        make_logs_client(emu.url).query_workspace(WORKSPACE, query, timespan=None)
    assert caught.value.status_code == 400
    assert "BadArgumentError" in str(caught.value)


def test_it_answers_the_error_shape_over_http(emu: Emulator) -> None:
    request = urllib.request.Request(
        f"{emu.url}/v1/workspaces/{WORKSPACE}/query",
        data=json.dumps({"query": f"{REPO} | join x"}).encode(),
        headers={"Authorization": "Bearer x", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 400
    assert json.load(caught.value)["error"]["code"] == "BadArgumentError"


def test_it_requires_a_bearer(emu: Emulator) -> None:
    request = urllib.request.Request(
        f"{emu.url}/v1/workspaces/{WORKSPACE}/query", data=b'{"query": "x"}', method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 401


def test_it_rejects_get(emu: Emulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{emu.url}/v1/workspaces/{WORKSPACE}/query", timeout=5)
    assert caught.value.code == 405


def test_timespans() -> None:
    now = T0
    assert parse_timespan("PT1H", now) == (T0 - timedelta(hours=1), T0)
    assert parse_timespan("2025-03-01T00:00:00Z/P1D") == (T0 - timedelta(hours=12), T0 + timedelta(hours=12))
    with pytest.raises(QueryError):
        parse_timespan("yesterday")


def test_ago_and_take_without_the_server() -> None:
    rows = [_repo_row(0, "a", "r", "Pull")]
    answer = run_query(f"{REPO} | where TimeGenerated > ago(3650d) | take 5", {REPO: rows}, None)
    assert len(answer["tables"][0]["rows"]) == 1


def test_a_time_ordered_table_is_read_by_seeking_with_the_same_answer() -> None:
    rows = [_repo_row(i, f"t{i % 3}", "r", "Pull") for i in range(50)]
    query = (
        f"{REPO} | where TimeGenerated >= datetime({format_time(T0 + timedelta(minutes=20))}) and Identity == 't1'"
        " | project TimeGenerated, Identity | order by TimeGenerated asc | take 5"
    )
    seek = run_query(query, {REPO: rows}, None, {REPO: True})
    scan = run_query(query, {REPO: rows}, None, {REPO: False})
    assert seek == scan
    assert [r[0] for r in seek["tables"][0]["rows"]] == [
        format_time(T0 + timedelta(minutes=m)) for m in (22, 25, 28, 31, 34)
    ]


def test_recording_out_of_order_turns_seeking_off(emu: Emulator) -> None:
    emu.state.record_event(REPO, _repo_row(5, "a", "r", "Pull"))
    emu.state.record_event(REPO, _repo_row(1, "a", "r", "Pull"))
    assert emu.state.events_in_order[REPO] is False
    result = make_logs_client(emu.url).query_workspace(
        WORKSPACE, f"{REPO} | where TimeGenerated >= datetime({format_time(T0)}) | summarize count()", timespan=None
    )
    assert [list(r) for r in result.tables[0].rows] == [[2]]
