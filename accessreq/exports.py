"""Exports for evidence and tickets: the token inventory, the audit log and access review results, as CSV or JSON.

Each export is a generator of text chunks for a StreamingHttpResponse: rows are read with `.iterator(chunk_size)` and
written as they come, so memory stays flat however many rows there are. Nothing secret is ever written: no
password, no ciphertext, no key hash; audit details are copied without any field whose name says it is a secret.
A CSV cell that a spreadsheet would read as a formula (starting with = + - @, a tab or a carriage return) is
prefixed with a quote.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, time
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Prefetch, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from accessreq.errors import Invalid
from accessreq.models import AuditEvent, PasswordSlot, Token

FORMATS = ("csv", "json")
CHUNK_SIZE = 2000
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SECRET_WORDS = ("password", "secret", "ciphertext", "key_hash", "credential")


class _Echo:
    """A file-like object whose write returns what it was given, for csv.writer to stream through."""

    def write(self, value: str) -> str:
        return value


def safe_cell(value: Any) -> str:
    """One CSV cell: text, never read as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        value = json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv(columns: list[str], rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(columns)
    for row in rows:
        yield writer.writerow([safe_cell(row.get(c)) for c in columns])


def _json(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A JSON array, one element at a time."""
    yield "["
    first = True
    for row in rows:
        yield ("\n" if first else ",\n") + json.dumps(row, cls=DjangoJSONEncoder, sort_keys=True)
        first = False
    yield "\n]\n"


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise Invalid("Choose csv or json.", field="format")
    return fmt


def stream(fmt: str, columns: list[str], rows: Iterable[dict[str, Any]], name: str) -> StreamingHttpResponse:
    """The response for an export: `name` plus the date, as an attachment, never cached."""
    fmt = check_format(fmt)
    body = _csv(columns, rows) if fmt == "csv" else _json(rows)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    response = StreamingHttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}-{timezone.localdate():%Y-%m-%d}.{fmt}"'
    response["Cache-Control"] = "no-store, private"
    return response


def parse_moment(value: str | None, field: str, *, end: bool = False) -> datetime | None:
    """An ISO date or date-time; a date alone means the start of that day (or its end, for `until`)."""
    if not value:
        return None
    value = value.strip()
    try:
        moment = parse_datetime(value)
        if moment is None and (day := parse_date(value)) is not None:
            moment = datetime.combine(day, time.max if end else time.min)
    except ValueError:
        moment = None
    if moment is None:
        raise Invalid("Give a date (2025-01-31) or a date and time (2025-01-31T12:00:00Z).", field=field)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


# --- tokens --------------------------------------------------------------------------------------------------------

TOKEN_COLUMNS = [
    "registry",
    "token",
    "scope_map",
    "status",
    "status_reason",
    "owner",
    "team",
    "requester",
    "purpose",
    "client_kind",
    "rules",
    "risky",
    "created_at",
    "last_rotated_at",
    "retire_on",
    "password_expires",
    "orphaned",
    "drifted",
    "last_used_at",
]


def _rules_text(rules: list[dict]) -> str:
    return "; ".join(f"{r['repository']}: {' '.join(r['actions'])}" for r in rules)


def token_rows(qs: QuerySet[Token]) -> Iterator[dict[str, Any]]:
    slots = Prefetch("slots", queryset=PasswordSlot.objects.only("token_id", "name", "status", "expires_at"))
    qs = qs.select_related("registry", "owner", "requester").prefetch_related(slots).order_by("registry__name", "name")
    for token in qs.iterator(chunk_size=CHUNK_SIZE):
        expiries = [s.expires_at for s in token.slots.all() if s.expires_at is not None and s.status == "revealed"]
        yield {
            "registry": token.registry.name,
            "token": token.name,
            "scope_map": token.scope_map_name,
            "status": token.status,
            "status_reason": token.status_reason,
            "owner": token.owner.get_username(),
            "team": token.team,
            "requester": token.requester.get_username(),
            "purpose": token.purpose,
            "client_kind": token.client_kind,
            "rules": _rules_text(token.rules),
            "risky": token.risky,
            "created_at": token.created_at,
            "last_rotated_at": token.last_rotated_at,
            "retire_on": token.retire_on,
            "password_expires": max(expiries) if expiries else None,
            "orphaned": token.orphaned_at is not None,
            "drifted": token.drift_actions is not None,
            "last_used_at": getattr(token, "last_used_at", None),
        }


def export_tokens(fmt: str, qs: QuerySet[Token] | None = None) -> StreamingHttpResponse:
    check_format(fmt)
    return stream(fmt, TOKEN_COLUMNS, token_rows(qs if qs is not None else Token.objects.all()), "tokens")


# --- audit ---------------------------------------------------------------------------------------------------------

AUDIT_COLUMNS = [
    "id",
    "created_at",
    "actor",
    "action",
    "target_type",
    "target_id",
    "target",
    "details",
    "source_ip",
    "hash",
]


def _scrubbed(details: Any) -> Any:
    if isinstance(details, dict):
        return {
            k: ("[removed]" if any(w in k.lower() for w in _SECRET_WORDS) else _scrubbed(v)) for k, v in details.items()
        }
    if isinstance(details, list):
        return [_scrubbed(v) for v in details]
    return details


def audit_events(since: str | None = None, until: str | None = None, action: str | None = None) -> QuerySet[AuditEvent]:
    """Events in a time range (either end open), oldest first, optionally by action prefix (`token.`)."""
    start = parse_moment(since, "since")
    end = parse_moment(until, "until", end=True)
    if start and end and start > end:
        raise Invalid("The range ends before it starts.", field="until")
    qs = AuditEvent.objects.all()
    if start:
        qs = qs.filter(created_at__gte=start)
    if end:
        qs = qs.filter(created_at__lte=end)
    if action:
        action = action.strip()
        if len(action) > 64 or not all(c.isalnum() or c in "._-" for c in action):
            raise Invalid("An action prefix is letters, dots and underscores, e.g. password.", field="action")
        qs = qs.filter(action__startswith=action)
    return qs.order_by("id")


def audit_rows(qs: QuerySet[AuditEvent]) -> Iterator[dict[str, Any]]:
    fields = ("id", "created_at", "actor_name", "action", "target_type", "target_id", "target_repr", "details")
    for event in qs.only(*fields, "source_ip", "hash").iterator(chunk_size=CHUNK_SIZE):
        yield {
            "id": event.id,
            "created_at": event.created_at,
            "actor": event.actor_name,
            "action": event.action,
            "target_type": event.target_type,
            "target_id": event.target_id,
            "target": event.target_repr,
            "details": _scrubbed(event.details),
            "source_ip": event.source_ip,
            "hash": event.hash,
        }


def export_audit(
    fmt: str, since: str | None = None, until: str | None = None, action: str | None = None
) -> StreamingHttpResponse:
    check_format(fmt)
    return stream(fmt, AUDIT_COLUMNS, audit_rows(audit_events(since, until, action)), "audit")


def export_rows(
    fmt: str, columns: list[str], rows: Callable[[], Iterable[dict[str, Any]]], name: str
) -> StreamingHttpResponse:
    """Any other export (review results): the same streaming, formats and guards."""
    check_format(fmt)
    return stream(fmt, columns, rows(), name)
