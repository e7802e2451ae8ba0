"""The audit trail: every state change and every reveal goes through `record`, and nowhere else.

Each row's `hash` is an HMAC-SHA256, under a key from AUDIT_KEYS, over the row and the previous row's hash. An
edited, inserted or removed row breaks the chain where it happened, and without the key nobody can compute a chain
that holds again. Removing the newest rows leaves a chain that holds, so `anchor` also writes the head (how many
rows, the last id and hash) to AuditAnchor, to a log line and to a file: `verify` checks the chain against them.
Writers are serialized so the chain never forks. The tables themselves refuse UPDATE and DELETE (migration 0005).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, models, transaction
from django.http import HttpRequest
from django.utils import timezone

from accessreq.models import AuditAnchor, AuditEvent

logger = logging.getLogger("accessreq.audit")

GENESIS = "0" * 64
# Rows hashed with plain SHA-256, before keys existed (migration 0005 marks them).
LEGACY_KEY_ID = "legacy-sha256"
# Distinct prefixes, so that a MAC over an event can never pass for one over an anchor, or the reverse.
_EVENT_DOMAIN = b"accessreq.audit.event\n"
_ANCHOR_DOMAIN = b"accessreq.audit.anchor\n"


def key_id(key: str) -> str:
    """A short name for a key, stored beside what it signed. Derived from the key, so rotating needs no names."""
    return hmac.new(key.encode(), b"accessreq.audit key id", hashlib.sha256).hexdigest()[:12]


def _keys() -> dict[str, bytes]:
    """Key id to key, newest (the signing key) first."""
    return {key_id(key): key.encode() for key in settings.AUDIT_KEYS}


def _fields(event: AuditEvent) -> dict[str, Any]:
    return {
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
    }


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def _event_mac(key: bytes, event: AuditEvent) -> str:
    # The key id is covered too, so a row cannot be relabelled to another key.
    return hmac.new(key, _EVENT_DOMAIN + _canonical({**_fields(event), "key_id": event.key_id}), "sha256").hexdigest()


def _legacy_digest(event: AuditEvent) -> str:
    return hashlib.sha256(_canonical(_fields(event))).hexdigest()


def client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def _lock_chain() -> None:
    """Serialize writers of the chain until the transaction ends.

    The one lock order, for approval, provisioning, token actions and the audit log alike:

    1. row locks, in this order and only on the rows the transaction changes: the request, then its token, then the
       token's password slots. `select_for_update(of=("self",))` whenever the query joins other tables: without
       `of`, PostgreSQL also locks every joined row (the registry, the requester's and owner's user rows) FOR
       UPDATE, and any insert with a foreign key to those rows (a token, a slot, an approval, an audit event) then
       waits for it: an approval holding a requester's row while waiting here, and a provisioning run holding this
       lock while inserting a slot for that requester, deadlocked exactly so;
    2. the outbox row (`enqueue`), an insert without foreign keys;
    3. this chain lock, LAST. `record` is called at the end of the change it records, and after it a transaction
       only inserts rows whose foreign keys point at rows nobody locks FOR UPDATE (users, registries) or at rows it
       holds itself. Taking it first would make every audited change wait on every other one while it holds rows.

    `tests/test_no_deadlocks.py` runs parallel approvals against a provisioning worker on PostgreSQL to keep it so.
    """
    # SQLite transactions here begin IMMEDIATE and so are already serialized; PostgreSQL needs a lock of its own.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(8731)")


def record(
    action: str,
    *,
    actor: User | None,
    target: models.Model,
    details: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent:
    """Append one event. Call it inside the transaction that makes the change, so both land or neither does."""
    signing_id, signing_key = next(iter(_keys().items()))
    # Inside the caller's transaction no savepoint is needed: an error here fails the change it records anyway.
    with transaction.atomic(savepoint=False):
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
            key_id=signing_id,
        )
        # Round-trip the details through JSON now, so the hash is computed over what the database will return.
        event.details = json.loads(json.dumps(event.details, default=str))
        event.hash = _event_mac(signing_key, event)
        event.save()
    return event


# Anchors.


@dataclass(frozen=True)
class Head:
    """What an anchor says: the log had `event_count` events, the last `last_event_id` with hash `last_hash`."""

    created_at: str
    event_count: int
    last_event_id: int
    last_hash: str
    key_id: str
    mac: str
    where: str  # for reports: "anchor 12" or "line 7 of FILE"

    def signed_fields(self) -> dict[str, Any]:
        return {
            "created_at": self.created_at,
            "event_count": self.event_count,
            "last_event_id": self.last_event_id,
            "last_hash": self.last_hash,
            "key_id": self.key_id,
        }

    @classmethod
    def of(cls, row: AuditAnchor) -> Head:
        return cls(
            created_at=row.created_at.isoformat(),
            event_count=row.event_count,
            last_event_id=row.last_event_id,
            last_hash=row.last_hash,
            key_id=row.key_id,
            mac=row.mac,
            where=f"anchor {row.pk}",
        )


def _anchor_mac(key: bytes, fields: dict[str, Any]) -> str:
    return hmac.new(key, _ANCHOR_DOMAIN + _canonical(fields), "sha256").hexdigest()


def anchor() -> AuditAnchor:
    """Record the log's head in AuditAnchor, in the `accessreq.audit` log and in AUDIT_ANCHOR_FILE.

    For a periodic job. The log line and the file line are written once the anchor commits, so they never name a
    head that was rolled back.
    """
    signing_id, signing_key = next(iter(_keys().items()))
    # Inside the caller's transaction no savepoint is needed: an error here fails the change it records anyway.
    with transaction.atomic(savepoint=False):
        _lock_chain()
        last = AuditEvent.objects.order_by("-id").values_list("id", "hash").first()
        row = AuditAnchor(
            created_at=timezone.now(),
            event_count=AuditEvent.objects.count(),
            last_event_id=last[0] if last else 0,
            last_hash=last[1] if last else GENESIS,
            key_id=signing_id,
        )
        row.mac = _anchor_mac(signing_key, Head.of(row).signed_fields())
        row.save()
    line = json.dumps({"anchor": row.pk, **Head.of(row).signed_fields(), "mac": row.mac}, sort_keys=True)
    transaction.on_commit(partial(_publish, line))
    return row


def _publish(line: str) -> None:
    logger.info(line)
    path = Path(settings.AUDIT_ANCHOR_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())


# Verification.


@dataclass(frozen=True)
class Problem:
    """One thing `verify` found. `kind` is one of: edited, unknown-key, legacy-after-keyed, removed, inserted,
    truncated, rewritten, bad-anchor."""

    kind: str
    event_id: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def _anchors_in_file(path: Path) -> Iterator[Head | Problem]:
    """The file's anchors, line by line. Heads only move forward, so a line behind the one before is reported."""
    highest = -1
    with path.open(encoding="utf-8") as file:
        for number, text in enumerate(file, start=1):
            if not text.strip():
                continue
            where = f"line {number} of {path}"
            try:
                data = json.loads(text)
                head = Head(
                    created_at=str(data["created_at"]),
                    event_count=int(data["event_count"]),
                    last_event_id=int(data["last_event_id"]),
                    last_hash=str(data["last_hash"]),
                    key_id=str(data["key_id"]),
                    mac=str(data["mac"]),
                    where=where,
                )
            except (ValueError, KeyError, TypeError):
                yield Problem("bad-anchor", None, f"{where} is not an anchor")
                continue
            if head.last_event_id < highest:
                yield Problem(
                    "bad-anchor",
                    head.last_event_id,
                    f"{where} names event {head.last_event_id}, behind event {highest} named before it: "
                    "events were removed and others written since",
                )
                continue
            highest = head.last_event_id
            yield head


def _sorted_anchors(anchor_file: Path | None, problems: list[Problem]) -> Iterator[Head]:
    """The table's anchors and the file's, merged in order of the event they name; problems go to `problems`."""
    table = (Head.of(row) for row in AuditAnchor.objects.order_by("last_event_id", "id").iterator(chunk_size=2000))
    sources: list[Iterable[Head]] = [table]
    if anchor_file is not None:

        def from_file() -> Iterator[Head]:
            for item in _anchors_in_file(anchor_file):
                if isinstance(item, Problem):
                    problems.append(item)
                else:
                    yield item

        sources.append(from_file())
    return heapq.merge(*sources, key=lambda head: head.last_event_id)


def _check_anchor_mac(head: Head, keys: dict[str, bytes]) -> Problem | None:
    key = keys.get(head.key_id)
    if key is None:
        return Problem("bad-anchor", None, f"{head.where} is signed with key {head.key_id}, not in AUDIT_KEYS")
    if not hmac.compare_digest(head.mac, _anchor_mac(key, head.signed_fields())):
        return Problem("bad-anchor", None, f"{head.where} does not match its MAC: it was forged or edited")
    return None


def verify(anchor_file: Path | None = None) -> Iterator[Problem]:
    """Every place where the log does not hold, in order; nothing when it is intact.

    Streams the events and the anchors (the table's, and `anchor_file`'s when given) side by side, in id order, so
    memory stays flat whatever the log's size. After a break it carries on from the row found, so that one edit is
    reported once rather than as a break at every row after it.
    """
    keys = _keys()
    problems: list[Problem] = []  # from the anchor file, which the merge reads ahead
    anchors = _sorted_anchors(anchor_file, problems)
    # Read the first anchor before the first event: an anchor only names events committed before it, so the
    # events read after it include them all.
    pending = next(anchors, None)
    expected_prev = before_prev = GENESIS
    count = 0
    seen_keyed = False
    last_id = 0

    def anchors_up_to(event_id: int) -> Iterator[Head]:
        nonlocal pending
        while pending is not None and pending.last_event_id <= event_id:
            head, pending = pending, next(anchors, None)
            bad = _check_anchor_mac(head, keys)
            if bad is not None:
                problems.append(bad)
                continue
            yield head

    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        # Anchors naming an id below this event's that was not seen: that event is gone.
        for head in anchors_up_to(event.id - 1):
            if head.last_event_id > 0:
                problems.append(
                    Problem(
                        "removed",
                        head.last_event_id,
                        f"event {head.last_event_id}, named by {head.where}, is missing",
                    )
                )
        yield from problems
        problems.clear()

        count += 1
        if event.prev_hash != expected_prev:
            if event.prev_hash == before_prev and count > 1:
                yield Problem(
                    "inserted",
                    last_id,
                    f"event {last_id} was inserted: event {event.id} links to the event before it",
                )
            else:
                yield Problem(
                    "removed",
                    event.id,
                    f"events were removed before event {event.id}: the previous hash it names is not the one "
                    f"of event {last_id or 'none'} before it",
                )
        if event.key_id == LEGACY_KEY_ID:
            if seen_keyed:
                yield Problem(
                    "legacy-after-keyed",
                    event.id,
                    f"event {event.id} claims to be a legacy unkeyed row, after keyed ones: it was rewritten",
                )
            elif event.hash != _legacy_digest(event):
                yield Problem("edited", event.id, f"event {event.id} does not match its hash: it was edited")
        elif event.key_id not in keys:
            seen_keyed = True
            yield Problem(
                "unknown-key",
                event.id,
                f"event {event.id} is signed with key {event.key_id}, which AUDIT_KEYS does not hold",
            )
        else:
            seen_keyed = True
            if not hmac.compare_digest(event.hash, _event_mac(keys[event.key_id], event)):
                yield Problem("edited", event.id, f"event {event.id} does not match its MAC: it was edited or forged")
        before_prev, expected_prev = expected_prev, event.hash
        last_id = event.id

        for head in anchors_up_to(event.id):
            if head.last_hash != event.hash:
                yield Problem(
                    "rewritten",
                    event.id,
                    f"event {event.id} has a different hash from the one {head.where} recorded: it was rewritten",
                )
            if head.event_count != count:
                kind = "removed" if count < head.event_count else "inserted"
                yield Problem(
                    kind,
                    event.id,
                    f"{count} events up to event {event.id}, where {head.where} recorded {head.event_count}",
                )
        yield from problems
        problems.clear()

    # Whatever anchors remain name events beyond the last one left.
    for head in anchors_up_to(2**63):
        if head.last_event_id == 0:
            continue
        yield Problem(
            "truncated",
            head.last_event_id,
            f"{head.where} recorded {head.event_count} events up to event {head.last_event_id}; the log now ends "
            f"at event {last_id or 'none'} with {count}: the newest events were removed",
        )
    yield from problems
