"""The emulator's resources, and how they are saved to and loaded from a JSON file."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Passwords are 52 random urlsafe characters (~310 bits), so a slow hash adds no real protection; a modest
# iteration count keeps credential generation and data-plane checks fast in tests.
PBKDF2_ITERATIONS = 10_000


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: str) -> datetime:
    """RFC 3339 to an aware datetime; naive input is taken as UTC. ValueError when unparseable."""
    if not isinstance(value, str):
        raise ValueError("expected a string")
    # ARM writes 7 fractional digits; fromisoformat accepts at most 6.
    parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value.strip()))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class PasswordSlot:
    name: str
    creation_time: str
    expiry: str | None
    salt: str
    digest: str
    iterations: int = PBKDF2_ITERATIONS

    @classmethod
    def generate(cls, name: str, expiry: datetime | None) -> tuple[PasswordSlot, str]:
        """A new slot and its plaintext value, which only the caller ever sees."""
        value = secrets.token_urlsafe(39)
        salt = secrets.token_bytes(16)
        slot = cls(
            name=name,
            creation_time=format_time(utcnow()),
            expiry=format_time(expiry) if expiry else None,
            salt=salt.hex(),
            digest=_hash(value, salt, PBKDF2_ITERATIONS).hex(),
        )
        return slot, value

    def matches(self, password: str) -> bool:
        candidate = _hash(password, bytes.fromhex(self.salt), self.iterations)
        return hmac.compare_digest(candidate, bytes.fromhex(self.digest))

    def expired(self, now: datetime) -> bool:
        return self.expiry is not None and now >= parse_time(self.expiry)


def _hash(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


@dataclass
class ScopeMap:
    name: str
    actions: list[str]
    description: str | None = None
    type: str = "UserDefined"
    creation_date: str = ""
    provisioning_state: str = "Succeeded"
    pending_operation: str | None = None

    @property
    def system(self) -> bool:
        return self.type == "SystemDefined"


@dataclass
class Token:
    name: str
    scope_map: str  # key of a scope map in the same registry
    status: str = "enabled"
    creation_date: str = ""
    provisioning_state: str = "Succeeded"
    passwords: dict[str, PasswordSlot] = field(default_factory=dict)
    pending_operation: str | None = None


@dataclass
class Registry:
    name: str
    subscription_id: str
    resource_group: str
    location: str
    sku: str
    admin_user_enabled: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    creation_date: str = ""
    provisioning_state: str = "Succeeded"
    pending_operation: str | None = None
    scope_maps: dict[str, ScopeMap] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    # The data-plane address ("127.0.0.1:5000") this registry was created to be served at, if any; see
    # acr_emulator/dataplane.py for when it is reported as the login server.
    data_plane: str | None = None

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerRegistry/registries/{self.name}"
        )

    def in_scope(self, subscription_id: str, resource_group: str | None) -> bool:
        if self.subscription_id.lower() != subscription_id.lower():
            return False
        return resource_group is None or self.resource_group.lower() == resource_group.lower()


@dataclass
class Operation:
    """A long-running operation: answers "pending" for `remaining` more polls, then `result`."""

    id: str
    kind: str  # "async": Azure-AsyncOperation status body; "location": bare 202 then 204
    pending_status: str  # "Creating", "Updating", "Deleting", "InProgress"
    result: str  # "Succeeded" or "Failed"
    remaining: int
    start_time: str
    # (kind, registry key, child key) of the resource whose provisioningState follows this operation.
    target: list[str] | None = None
    end_time: str | None = None

    @property
    def done(self) -> bool:
        return self.remaining <= 0


# System scope maps as seen in real registries; the last two appeared in newer registries.
SYSTEM_SCOPE_MAPS: dict[str, tuple[str, list[str]]] = {
    "_repositories_admin": (
        "Can perform all read, write and delete operations on the registry",
        ["content/read", "content/write", "content/delete", "metadata/read", "metadata/write"],
    ),
    "_repositories_pull": ("Can pull any repository of the registry", ["content/read"]),
    "_repositories_pull_metadata_read": (
        "Can perform all read operations on the registry",
        ["content/read", "metadata/read"],
    ),
    "_repositories_push": ("Can push to any repository of the registry", ["content/read", "content/write"]),
    "_repositories_push_metadata_write": (
        "Can perform all read and write operations on the registry",
        ["content/read", "content/write", "metadata/read", "metadata/write"],
    ),
}


def system_scope_maps(created: str) -> dict[str, ScopeMap]:
    return {
        name.lower(): ScopeMap(
            name=name,
            actions=[f"repositories/*/{action}" for action in actions],
            description=description,
            type="SystemDefined",
            creation_date=created,
        )
        for name, (description, actions) in SYSTEM_SCOPE_MAPS.items()
    }


# Log tables the data plane writes, named after ACR's Log Analytics tables; each keeps its newest rows only.
EVENT_TABLES = ("ContainerRegistryLoginEvents", "ContainerRegistryRepositoryEvents")
MAX_EVENTS_PER_TABLE = 5_000


class State:
    """Every registry (keyed by lowercased name: registry names are global, like their DNS names),
    every pending operation and the data plane's recent events. Hold `lock` while reading or changing anything."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.registries: dict[str, Registry] = {}
        self.operations: dict[str, Operation] = {}
        self.events: dict[str, deque[dict[str, Any]]] = {
            table: deque(maxlen=MAX_EVENTS_PER_TABLE) for table in EVENT_TABLES
        }
        # Whether each table's rows are in TimeGenerated order (the usual case), which lets queries seek by time.
        self.events_in_order: dict[str, bool] = dict.fromkeys(EVENT_TABLES, True)

    def clear(self) -> None:
        with self.lock:
            self.registries.clear()
            self.operations.clear()
            for rows in self.events.values():
                rows.clear()
            self.events_in_order = dict.fromkeys(EVENT_TABLES, True)

    def record_event(self, table: str, row: dict[str, Any]) -> None:
        """Append a row to one of EVENT_TABLES; the oldest row goes once the table is full."""
        with self.lock:
            rows = self.events[table]
            if rows and str(row.get("TimeGenerated", "")) < str(rows[-1].get("TimeGenerated", "")):
                self.events_in_order[table] = False
            rows.append(row)

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "version": 1,
                "registries": [dataclasses.asdict(r) for r in self.registries.values()],
                "operations": [dataclasses.asdict(o) for o in self.operations.values()],
                "events": {table: list(rows) for table, rows in self.events.items()},
            }

    def load_dict(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.clear()
            for raw in data.get("registries", []):
                registry = Registry(**{k: v for k, v in raw.items() if k not in ("scope_maps", "tokens")})
                registry.scope_maps = {k: ScopeMap(**v) for k, v in raw.get("scope_maps", {}).items()}
                registry.tokens = {}
                for key, token in raw.get("tokens", {}).items():
                    passwords = {n: PasswordSlot(**p) for n, p in token.get("passwords", {}).items()}
                    registry.tokens[key] = Token(**{**token, "passwords": passwords})
                self.registries[registry.name.lower()] = registry
            for raw in data.get("operations", []):
                self.operations[raw["id"]] = Operation(**raw)
            for table, rows in (data.get("events") or {}).items():
                if table in self.events:
                    for row in rows:
                        self.record_event(table, row)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically, so a crash mid-write never leaves a half file behind."""
        target = Path(path)
        payload = json.dumps(self.to_dict(), indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        if target.exists() and target.stat().st_size:
            self.load_dict(json.loads(target.read_text(encoding="utf-8")))
