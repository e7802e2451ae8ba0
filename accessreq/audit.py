"""The audit trail: every state change and every reveal goes through `record`, and nowhere else.

Rows are hash-chained (each hash covers the previous one), so an edited, inserted or deleted row breaks the chain
at that point, and `verify` names it. Writers are serialized so the chain never forks.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, models, transaction
from django.http import HttpRequest
from django.utils import timezone

from accessreq.models import AuditEvent

GENESIS = "0" * 64


def _canonical(event: AuditEvent) -> str:
    return json.dumps(
        {
            "created_at": event.created_at.isoformat(),
            "actor_id": event.actor_id,
            "actor_name": event.actor_name,
            "action": event.action,
            "target_type": event.target_type,
            "target_id": event.target_id,
            "target_repr": event.target_repr,
            "details": event.details,
            "source_ip": event.source_ip,
            "prev_hash": event.prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


def _digest(event: AuditEvent) -> str:
    return hashlib.sha256(_canonical(event).encode()).hexdigest()


def client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def _lock_chain() -> None:
    # SQLite transactions here begin IMMEDIATE and so are already serialized; PostgreSQL needs a lock of its own.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(8731)")


def record(
    action: str,
    *,
    actor: AbstractBaseUser | None,
    target: models.Model,
    details: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent:
    """Append one event. Call it inside the transaction that makes the change, so both land or neither does."""
    with transaction.atomic():
        _lock_chain()
        last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
        event = AuditEvent(
            created_at=timezone.now(),
            actor=actor if actor is not None and actor.is_authenticated else None,
            actor_name=actor.get_username() if actor is not None else "system",
            action=action,
            target_type=target._meta.label_lower,
            target_id=str(target.pk),
            target_repr=str(target)[:255],
            details=details or {},
            source_ip=client_ip(request),
            prev_hash=last or GENESIS,
        )
        # Round-trip the details through JSON now, so the hash is computed over what the database will return.
        event.details = json.loads(json.dumps(event.details, default=str))
        event.hash = _digest(event)
        event.save()
    return event


def verify() -> AuditEvent | None:
    """The first event whose hash or link does not hold, or None when the whole chain is intact."""
    expected_prev = GENESIS
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != expected_prev or event.hash != _digest(event):
            return event
        expected_prev = event.hash
    return None
