"""The only module that talks to Azure Monitor Log Analytics, where each registry's diagnostic settings send
ContainerRegistryLoginEvents and ContainerRegistryRepositoryEvents.

It builds `azure-monitor-query`'s LogsQueryClient from settings (DefaultAzureCredential on Azure; a static bearer
over http for the local emulator, as `acr.py` does for ARM), reads the rows the usage collector needs, and turns the
SDK's errors into `LogsError` / `TransientLogsError`. Queries use a small KQL subset (the emulator serves no more):
`where` comparisons joined by `and`, `project`, `order by`, `take`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential
from azure.monitor.query import LogsQueryClient, LogsQueryStatus
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


def read_events(workspace_id: str, table: str, resource_id: str, since: datetime, limit: int) -> Page:
    """One page of `table` rows for the registry `resource_id` from `since`, oldest first."""
    query = events_query(table, resource_id, since, limit)
    # The timespan bounds the scan as well as the where clause; a minute ahead covers clock skew.
    timespan = (since, datetime.now(UTC) + timedelta(minutes=1))
    with _translated(), client() as logs:
        result = logs.query_workspace(workspace_id, query, timespan=timespan)
    if result.status != LogsQueryStatus.SUCCESS:
        # A partial answer (the service's size or time limit) would leave holes behind the watermark.
        raise TransientLogsError(f"partial result: {getattr(result, 'partial_error', '')}")
    table_rows = result.tables[0].rows if result.tables else []
    rows = [tuple(row) for row in table_rows]
    return Page(rows=rows, full=len(rows) >= limit)
