"""The data plane's audit trail: repository events from the registry's notifications, and the token server's logins.

Rows are named after ACR's Log Analytics tables ContainerRegistryRepositoryEvents and ContainerRegistryLoginEvents
(TimeGenerated, OperationName, LoginServer, Identity, Repository, Tag, Digest, CallerIpAddress, ResultType, ...),
kept in the emulator's state, newest `MAX_EVENTS_PER_TABLE` per table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from acr_emulator.api import Request, Response
from acr_emulator.dataplane import DataPlaneConfig
from acr_emulator.state import EVENT_TABLES, State, format_time, parse_time, utcnow

log = logging.getLogger("acr_emulator.events")

REPOSITORY_TABLE = "ContainerRegistryRepositoryEvents"
# Distribution's notification actions, as ACR's OperationName spells them.
_OPERATIONS = {"push": "Push", "pull": "Pull", "delete": "Delete"}


def _is_artifact(target: dict[str, Any]) -> bool:
    # Distribution also reports every blob (layer, config) it moves; ACR's table has one row per artifact.
    media_type = str(target.get("mediaType") or "")
    return "manifest" in media_type or "index" in media_type


def _address(value: str) -> str:
    """"192.0.2.1:5123" -> "192.0.2.1"; "[::1]:5123" -> "::1"."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        return value
    return host.strip("[]")


def repository_row(
    event: dict[str, Any], login_server: str, resource_id: str, subscription_id: str = ""
) -> dict[str, Any] | None:
    """One Distribution notification event as a ContainerRegistryRepositoryEvents row; None for what ACR's table
    would not hold (blob transfers, mounts)."""
    action = event.get("action")
    target = event.get("target") or {}
    if action not in _OPERATIONS or not isinstance(target, dict):
        return None
    if action != "delete" and not _is_artifact(target):
        return None
    request = event.get("request") or {}
    try:
        when = format_time(parse_time(event["timestamp"]))
    except (KeyError, ValueError):
        when = format_time(utcnow())
    return {
        "TimeGenerated": when,
        "Category": REPOSITORY_TABLE,
        "OperationName": _OPERATIONS[action],
        "LoginServer": login_server,
        "Identity": (event.get("actor") or {}).get("name", ""),
        "Repository": target.get("repository", ""),
        "Tag": target.get("tag", ""),
        "Digest": target.get("digest", ""),
        "MediaType": target.get("mediaType", ""),
        "ArtifactType": "",
        "Size": int(target.get("size") or target.get("length") or 0),
        "CallerIpAddress": _address(str(request.get("addr", ""))),
        "UserAgent": request.get("useragent", ""),
        "CorrelationId": request.get("id", ""),
        "ResultType": "Succeeded",
        "ResultDescription": "",
        # A string column in ACR's schema; Distribution's notifications carry no duration.
        "DurationMs": "",
        "Region": "",
        "UserTenantId": "",
        "_ResourceId": resource_id,
        "_SubscriptionId": subscription_id,
        "Type": REPOSITORY_TABLE,
        # Not an ACR column: Distribution's own event id, so a redelivered envelope is recorded once.
        "EventId": event.get("id", ""),
    }


class RegistryEvents:
    """Routes: `POST /_emulator/registry/notifications` (where the registry's notifications endpoint posts),
    `GET /_emulator/events` (every table, or `?table=NAME`) and `DELETE /_emulator/events`."""

    def __init__(self, state: State, data_plane: DataPlaneConfig, on_change: Callable[[], None]) -> None:
        self.state = state
        self.data_plane = data_plane
        self.on_change = on_change
        self.routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("POST", "/_emulator/registry/notifications"): self.notifications,
            ("GET", "/_emulator/events"): self.list,
            ("DELETE", "/_emulator/events"): self.clear,
        }

    def notifications(self, req: Request) -> Response:
        try:
            envelope = json.loads(req.body)
            events = envelope["events"]
            if not isinstance(events, list):
                raise TypeError("events must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            return Response(400, {"error": {"code": "InvalidRequest", "message": f"not a notification: {exc}"}})
        with self.state.lock:
            registry = self.data_plane.registry_for(self.state, self.data_plane.address or "")
            login_server = self.data_plane.address or ""
            resource_id = registry.id if registry is not None else ""
            subscription_id = registry.subscription_id if registry is not None else ""
            seen = {row.get("EventId") for row in self.state.events[REPOSITORY_TABLE]}
            recorded = 0
            for event in events:
                row = None
                if isinstance(event, dict):
                    row = repository_row(event, login_server, resource_id, subscription_id)
                if row is None or (row["EventId"] and row["EventId"] in seen):
                    continue
                self.state.record_event(REPOSITORY_TABLE, row)
                seen.add(row["EventId"])
                recorded += 1
        if recorded:
            self.on_change()
        return Response(200, {"recorded": recorded})

    def list(self, req: Request) -> Response:
        table = req.query.get("table")
        with self.state.lock:
            if table is None:
                return Response(200, {name: list(rows) for name, rows in self.state.events.items()})
            if table not in EVENT_TABLES:
                message = f"unknown table {table!r}; one of {', '.join(EVENT_TABLES)}"
                return Response(400, {"error": {"code": "InvalidRequest", "message": message}})
            return Response(200, {table: list(self.state.events[table])})

    def clear(self, req: Request) -> Response:
        with self.state.lock:
            for rows in self.state.events.values():
                rows.clear()
            self.state.events_in_order = dict.fromkeys(self.state.events, True)
        self.on_change()
        return Response(204)
