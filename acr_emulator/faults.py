"""Injected faults: throttling, server errors, slowness, failed long-running operations, dropped
connections."""

from __future__ import annotations

import json
import random
import threading
from dataclasses import asdict, dataclass
from typing import Any

OPERATIONS = frozenset(
    {
        "registries.create",
        "registries.get",
        "registries.list",
        "registries.update",
        "registries.delete",
        "registries.generate_credentials",
        "scope_maps.create",
        "scope_maps.get",
        "scope_maps.list",
        "scope_maps.update",
        "scope_maps.delete",
        "tokens.create",
        "tokens.get",
        "tokens.list",
        "tokens.update",
        "tokens.delete",
        "operations.get",
    }
)
# Only these start a long-running operation, so only these can consume an lro_fail fault.
LRO_OPERATIONS = frozenset(
    op for op in OPERATIONS if op.rsplit(".", 1)[1] in {"create", "update", "delete", "generate_credentials"}
)
STATUS_CODES = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}


@dataclass
class Fault:
    count: int = 1
    operation: str | None = None
    status: int | None = None
    retry_after: int | None = None
    delay: float | None = None
    lro_fail: bool = False
    drop: bool = False
    # Each matching call meets the fault with this probability; a call that escapes it does not use it up.
    probability: float = 1.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        """Validate a fault description; ValueError with a readable message when it is wrong."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        fault = cls(**data)
        if not isinstance(fault.count, int) or fault.count < 1:
            raise ValueError("count must be a positive integer")
        if fault.operation is not None and fault.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {fault.operation!r}; one of {', '.join(sorted(OPERATIONS))}")
        if fault.status is not None and fault.status not in STATUS_CODES:
            raise ValueError(f"status must be one of {sorted(STATUS_CODES)}")
        if fault.retry_after is not None and (not isinstance(fault.retry_after, int) or fault.retry_after < 0):
            raise ValueError("retry_after must be a non-negative integer (seconds)")
        if fault.delay is not None and (not isinstance(fault.delay, int | float) or fault.delay < 0):
            raise ValueError("delay must be a non-negative number (seconds)")
        if (
            isinstance(fault.probability, bool)
            or not isinstance(fault.probability, int | float)
            or not 0 < fault.probability <= 1
        ):
            raise ValueError("probability must be a number above 0 and at most 1")
        if fault.status is None and fault.delay is None and not fault.lro_fail and not fault.drop:
            raise ValueError("a fault needs one of status, delay, lro_fail or drop")
        if fault.lro_fail and fault.operation is not None and fault.operation not in LRO_OPERATIONS:
            raise ValueError(f"lro_fail needs a long-running operation, not {fault.operation!r}")
        return fault

    @classmethod
    def parse_spec(cls, spec: str) -> Fault:
        """CLI form: JSON, or "count=2,status=429,retry_after=1,operation=tokens.create"."""
        spec = spec.strip()
        if spec.startswith("{"):
            return cls.from_dict(json.loads(spec))
        data: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"expected key=value, got {part!r}")
            key = key.strip()
            value = value.strip()
            if key in ("count", "status", "retry_after"):
                data[key] = int(value)
            elif key in ("delay", "probability"):
                data[key] = float(value)
            elif key in ("lro_fail", "drop"):
                data[key] = value.lower() in ("1", "true", "yes", "")
            else:
                data[key] = value
        return cls.from_dict(data)

    def applies_to(self, operation: str) -> bool:
        if self.lro_fail and operation not in LRO_OPERATIONS:
            return False
        if self.operation is None:
            # Polls are left alone unless named, so a broad fault cannot wedge every LRO in progress.
            return operation != "operations.get"
        return self.operation == operation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultBook:
    """Faults in the order they were added; the first that applies to a call is used up by it."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._random = random.Random(seed)

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, operation: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies_to(operation) and self._random.random() < fault.probability:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_dict() for f in self._faults]
