"""The only module that talks to Azure Monitor Log Analytics, where each registry's diagnostic settings send
ContainerRegistryLoginEvents and ContainerRegistryRepositoryEvents.

It builds `azure-monitor-query`'s LogsQueryClient from settings (DefaultAzureCredential on Azure; a static bearer
over http for the local emulator, as `acr.py` does for ARM), reads the rows the usage collector needs, and turns the
SDK's errors into `LogsError` / `TransientLogsError`. Queries use a small KQL subset (the emulator serves no more):
`where` comparisons joined by `and`, `project`, `order by`, `take`. Answers are read as JSON through the client's
pipeline (`send_request`), not turned into model objects cell by cell.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest
from azure.identity import DefaultAzureCredential
from azure.monitor.query import LogsQueryClient
from django.conf import settings

from accessreq import emulatorauth

LOGIN_TABLE = "ContainerRegistryLoginEvents"
REPOSITORY_TABLE = "ContainerRegistryRepositoryEvents"
# The reader's RBAC role on the workspace: "Log Analytics Reader" (Microsoft.OperationalInsights/workspaces/
# query/read and the tables' read actions).
REQUIRED_PERMISSIONS = (
    "Microsoft.OperationalInsights/workspaces/query/read",
    "Microsoft.OperationalInsights/workspaces/query/ContainerRegistryLoginEvents/read",
    "Microsoft.OperationalInsights/workspaces/query/ContainerRegistryRepositoryEvents/read",
)
# What each table's rows carry for the collector, in this order.
COLUMNS = {
    LOGIN_TABLE: ("TimeGenerated", "Identity", "ResultType", "ResultDescription", "CorrelationId"),
    REPOSITORY_TABLE: ("TimeGenerated", "Identity", "OperationName", "Repository", "Digest", "CorrelationId"),
}


class LogsError(Exception):
    """The workspace refused the query or could not be read. The message is safe to show to admins."""


class TransientLogsError(LogsError):
    pass


@dataclass(frozen=True)
class Page:
    rows: list[tuple[Any, ...]]  # in COLUMNS[table] order; TimeGenerated an aware datetime
    full: bool  # as many rows as asked for: more may follow


@cache
def _credential() -> Any:
    if settings.LOG_ANALYTICS_CREDENTIAL == "emulator":
        return emulatorauth.StaticCredential(settings.ACR_EMULATOR_TOKEN)
    return DefaultAzureCredential()


def client() -> LogsQueryClient:
    kwargs: dict[str, Any] = {
        "endpoint": settings.LOG_ANALYTICS_ENDPOINT,
        "retry_total": 0,  # the job runs again in 15 minutes; no in-process sleeping
        "connection_timeout": settings.LOG_ANALYTICS_TIMEOUT,
        "read_timeout": settings.LOG_ANALYTICS_TIMEOUT,
    }
    if settings.LOG_ANALYTICS_CREDENTIAL == "emulator":
        kwargs["authentication_policy"] = emulatorauth.StaticBearerPolicy(settings.ACR_EMULATOR_TOKEN)
    return LogsQueryClient(_credential(), **kwargs)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _datetime(value: datetime) -> str:
    return "datetime(" + value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") + ")"


def events_query(table: str, resource_id: str, since: datetime, limit: int) -> str:
    """Rows of one registry's `table` from `since` (inclusive), oldest first, at most `limit`."""
    return (
        f"{table}"
        f" | where TimeGenerated >= {_datetime(since)} and _ResourceId =~ {_quote(resource_id)}"
        f" | project {', '.join(COLUMNS[table])}"
        " | order by TimeGenerated asc"
        f" | take {int(limit)}"
    )


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except ClientAuthenticationError as exc:
        raise LogsError(f"not allowed to query the workspace: {exc.message}") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientLogsError(f"connection: {type(exc).__name__}") from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        if status in (408, 429) or status >= 500:
            raise TransientLogsError(f"{status}: {exc.message}") from exc
        raise LogsError(f"{status}: {exc.message}") from exc


def _time(value: str) -> datetime:
    # The service writes up to seven fractional digits with a Z; fromisoformat (3.11+) reads that form, keeping six.
    when = datetime.fromisoformat(value)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _error_message(response: Any) -> str:
    """The service's own words from an error answer ({"error": {"code", "message"}}), else the HTTP reason."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    return str(error.get("message") or error.get("code") or response.reason or "error")


def read_events(workspace_id: str, table: str, resource_id: str, since: datetime, limit: int) -> Page:
    """One page of `table` rows for the registry `resource_id` from `since`, oldest first.

    The query goes through the client's pipeline (credential, timeouts, no retries) with `send_request`, and its
    JSON is read here: `query_workspace` would build a model object per row and parse every cell by its column
    type, which cost more than everything else collect-usage does per event. Only TimeGenerated needs parsing."""
    query = events_query(table, resource_id, since, limit)
    # The timespan bounds the scan as well as the where clause; a minute ahead covers clock skew.
    until = datetime.now(UTC) + timedelta(minutes=1)
    body = {"query": query, "timespan": f"{since.astimezone(UTC).isoformat()}/{until.isoformat()}"}
    request = HttpRequest("POST", f"/workspaces/{quote(workspace_id, safe='')}/query", json=body)
    with _translated(), client() as logs:
        response = logs.send_request(request)
        if response.status_code >= 400:
            raise HttpResponseError(message=_error_message(response), response=response)
        answer = response.json()
    if answer.get("error"):
        # A partial answer (the service's size or time limit) would leave holes behind the watermark.
        error = answer["error"]
        raise TransientLogsError(f"partial result: {error.get('code', '')} {error.get('message', '')}".strip())
    tables = answer.get("tables") or []
    if not tables:
        return Page(rows=[], full=False)
    names = [column["name"] for column in tables[0]["columns"]]
    try:
        order = [names.index(name) for name in COLUMNS[table]]
    except ValueError as exc:
        raise LogsError(f"{table} lacks a column the collector reads: {exc}") from exc
    rows = [(_time(row[order[0]]), *(row[i] for i in order[1:])) for row in tables[0]["rows"]]
    return Page(rows=rows, full=len(rows) >= limit)
