"""How much of its SKU's token and scope-map limits each registry uses, how that moved over the last 90 days, and
when, at that pace, it reaches the limit.

The history is derived, not recorded: a registry's tokens on a past day are today's, less those created since, plus
those retired or found gone since (their audit events carry the time). Unmanaged tokens count from when reconcile
first saw them. Every count is one grouped query over all registries, so the cost does not grow with the tokens.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import BigIntegerField, Count, OuterRef, Subquery
from django.db.models.functions import Cast, TruncDate
from django.utils import timezone

from accessreq import scopes
from accessreq.models import (
    LIVE_TOKEN_STATUSES,
    OPEN_REQUEST_STATUSES,
    AccessRequest,
    AuditEvent,
    Registry,
    Token,
    UnmanagedToken,
)

HISTORY_DAYS = 90
# Beyond this a projection says "not within 5 years": a straight line that far out means nothing.
HORIZON_YEARS = 5
# A registry this close to a limit, or projected to reach it this soon, is flagged on the request form.
WARN_SHARE = 0.9
WARN_DAYS = 30
# Audit actions that mean a token left its registry.
ENDED = ("token.retired", "token.gone")
CACHE_KEY = "quota-forecasts"


@dataclass
class Forecast:
    """One limit of one registry: where it stands, the daily history and the projection."""

    what: str  # "tokens" or "scope maps"
    used: int
    limit: int
    history: list[int] = field(default_factory=list)  # oldest first, the last is today
    slope: float = 0.0  # per day, least squares over `history`
    reaches_on: date | None = None

    @property
    def share(self) -> float:
        return self.used / self.limit if self.limit else 1.0

    @property
    def percent(self) -> int:
        return min(100, math.floor(self.share * 100))

    @property
    def reached(self) -> bool:
        return self.used >= self.limit

    @property
    def outlook(self) -> str:
        if self.reached:
            return "limit reached"
        if self.reaches_on is not None:
            return f"reached about {self.reaches_on:%Y-%m-%d}"
        if abs(self.slope) < 1e-9:
            return "flat"
        if self.slope < 0:
            return "falling"
        return f"not within {HORIZON_YEARS} years"

    def warning(self, today: date) -> str:
        """Why a requester should know, or "" when there is nothing to say."""
        if self.reached:
            return f"has reached its limit of {self.limit:,} {self.what}"
        if self.share >= WARN_SHARE:
            return f"uses {self.used:,} of its {self.limit:,} {self.what} ({self.percent}%)"
        if self.reaches_on is not None and self.reaches_on <= today + timedelta(days=WARN_DAYS):
            return f"is projected to reach its limit of {self.limit:,} {self.what} by {self.reaches_on:%Y-%m-%d}"
        return ""


@dataclass
class RegistryQuota:
    registry_id: int
    name: str
    sku: str
    tokens: Forecast
    scope_maps: Forecast

    @property
    def forecasts(self) -> list[Forecast]:
        return [self.tokens, self.scope_maps]

    @property
    def percent(self) -> int:
        return max(f.percent for f in self.forecasts)

    def warnings(self, today: date) -> list[str]:
        return [f"{self.name} {w}." for f in self.forecasts if (w := f.warning(today))]


def slope(values: list[int]) -> float:
    """The least-squares slope of values taken one day apart."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    var = sum((x - mean_x) ** 2 for x in range(n))
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / var


def project(used: int, limit: int, per_day: float, today: date) -> date | None:
    """The day a count growing `per_day` from `used` reaches `limit`; None when it does not within the horizon."""
    if used >= limit:
        return today
    if per_day <= 1e-9:
        return None
    days = math.ceil((limit - used) / per_day)
    if days > HORIZON_YEARS * 366:
        return None
    return today + timedelta(days=days)


def _per_day(rows: Iterable[Any]) -> dict[int, dict[date, int]]:
    found: dict[int, dict[date, int]] = defaultdict(dict)
    for row in rows:
        if row["registry_id"] is not None:
            found[row["registry_id"]][row["day"]] = row["n"]
    return found


def _totals(rows: Iterable[Any]) -> dict[int, int]:
    return {row["registry_id"]: row["n"] for row in rows}


def forecasts(registry_ids: list[int] | None = None) -> list[RegistryQuota]:
    """Every active registry's forecast (or those named), in a fixed number of grouped queries."""
    today = timezone.now().astimezone(UTC).date()
    days = [today - timedelta(days=i) for i in range(HISTORY_DAYS, -1, -1)]
    since = datetime.combine(days[0], time.min, tzinfo=UTC) + timedelta(days=1)
    registries = Registry.objects.filter(active=True)
    if registry_ids is not None:
        registries = registries.filter(pk__in=registry_ids)
    registries_list = list(registries.only("pk", "name", "sku"))
    ids = [r.pk for r in registries_list]
    tokens = Token.objects.filter(registry_id__in=ids).order_by()
    live = _totals(
        tokens.filter(status__in=LIVE_TOKEN_STATUSES).values("registry_id").annotate(n=Count("pk")).values(
            "registry_id", "n"
        )
    )
    created = _per_day(
        tokens.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("registry_id", "day")
        .annotate(n=Count("pk"))
        .values("registry_id", "day", "n")
    )
    registry_of = Token.objects.filter(pk=Cast(OuterRef("target_id"), BigIntegerField())).values("registry_id")[:1]
    ended = _per_day(
        AuditEvent.objects.filter(action__in=ENDED, target_type=Token._meta.label_lower, created_at__gte=since)
        .order_by()
        .annotate(registry_id=Subquery(registry_of), day=TruncDate("created_at", tzinfo=UTC))
        .values("registry_id", "day")
        .annotate(n=Count("pk"))
        .values("registry_id", "day", "n")
    )
    unmanaged_qs = UnmanagedToken.objects.filter(registry_id__in=ids).order_by()
    unmanaged_since = _per_day(
        unmanaged_qs.annotate(day=TruncDate("first_seen_at", tzinfo=UTC))
        .values("registry_id", "day")
        .annotate(n=Count("pk"))
        .values("registry_id", "day", "n")
    )
    # An unmanaged token's own scope map, unless it uses a system one (counted anyway) or shares one.
    unmanaged_maps = _totals(
        unmanaged_qs.exclude(scope_map_name__startswith="_")
        .values("registry_id")
        .annotate(n=Count("scope_map_name", distinct=True))
        .values("registry_id", "n")
    )
    in_flight = _totals(
        AccessRequest.objects.filter(registry_id__in=ids, status__in=OPEN_REQUEST_STATUSES, renews__isnull=True)
        .order_by()
        .values("registry_id")
        .annotate(n=Count("pk"))
        .values("registry_id", "n")
    )
    result = []
    for registry in registries_list:
        managed = _managed_history(live.get(registry.pk, 0), days, created[registry.pk], ended[registry.pk])
        found = _running(days, unmanaged_since[registry.pk])
        token_history = [m + u for m, u in zip(managed, found, strict=True)]
        # Scope maps: one per managed token, the unmanaged tokens' own, and the system ones. A scope map per
        # unmanaged token is assumed for the history, where reconcile's distinct count is not known.
        system = len(scopes.SYSTEM_SCOPE_MAPS)
        map_history = [m + u + system for m, u in zip(managed, found, strict=True)]
        map_history[-1] = managed[-1] + unmanaged_maps.get(registry.pk, 0) + system
        pending = in_flight.get(registry.pk, 0)
        result.append(
            RegistryQuota(
                registry_id=registry.pk,
                name=registry.name,
                sku=registry.sku,
                tokens=_forecast("tokens", token_history, token_history[-1] + pending,
                                 scopes.SKU_TOKEN_LIMITS[registry.sku], today),
                scope_maps=_forecast("scope maps", map_history, map_history[-1] + pending,
                                     scopes.SKU_SCOPE_MAP_LIMITS[registry.sku], today),
            )
        )
    return result


def _managed_history(now: int, days: list[date], created: dict[date, int], ended: dict[date, int]) -> list[int]:
    """Counts at the end of each day, walking back from today's: a day's count is the next day's, less the tokens
    created on the next day, plus those that ended on it."""
    counts = [now]
    for day in reversed(days[1:]):
        counts.append(max(0, counts[-1] - created.get(day, 0) + ended.get(day, 0)))
    return counts[::-1]


def _running(days: list[date], first_seen: dict[date, int]) -> list[int]:
    before = sum(n for day, n in first_seen.items() if day <= days[0])
    counts = []
    for day in days:
        if day != days[0]:
            before += first_seen.get(day, 0)
        counts.append(before)
    return counts


def _forecast(what: str, history: list[int], used: int, limit: int, today: date) -> Forecast:
    per_day = slope(history)
    return Forecast(what, used, limit, history, per_day, project(used, limit, per_day, today))


def cached() -> list[RegistryQuota]:
    """All registries' forecasts, shared through the cache as long as the security page's totals are."""
    found = cache.get(CACHE_KEY)
    if found is None:
        found = forecasts()
        if settings.SECURITY_SUMMARY_SECONDS > 0:
            cache.set(CACHE_KEY, found, settings.SECURITY_SUMMARY_SECONDS)
    return found


def warnings_for(registry: Registry) -> list[str]:
    """What a requester choosing this registry should know about its limits."""
    today = timezone.now().astimezone(UTC).date()
    for quota in cached():
        if quota.registry_id == registry.pk:
            return quota.warnings(today)
    return []
