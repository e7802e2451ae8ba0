"""Which tokens are used, and for what: `collect-usage` reads each registry's login and repository events from its
Log Analytics workspace into per-token counts, and what those counts suggest (drop or narrow unused access, retire
unused tokens).

Collection is incremental and idempotent. Per registry and table, a cursor holds a watermark (the newest event
time read) and the keys of the events within `USAGE_OVERLAP_MINUTES` before it. Each page is read from the
watermark minus that overlap (Log Analytics ingests late), events already keyed are skipped, and the counts and
the cursor are written in one transaction whose conditional update of the cursor's version lets only one of two
simultaneous runs count a page. A run reads at most `USAGE_MAX_EVENTS_PER_RUN` events per table and registry.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accessreq import access, alerts, audit, loganalytics, notify, scopes
from accessreq.loganalytics import LOGIN_TABLE, REPOSITORY_TABLE
from accessreq.models import (
    FailedLoginBurst,
    Registry,
    Token,
    TokenStatus,
    TokenSuggestion,
    TokenUsage,
    TokenUsageDay,
    UsageAction,
    UsageCursor,
)

log = logging.getLogger(__name__)

# ContainerRegistryRepositoryEvents' OperationName -> our action, and the scope-map action each one exercises.
OPERATIONS = {"Pull": UsageAction.PULL, "Push": UsageAction.PUSH, "Delete": UsageAction.DELETE}
EXERCISES = {
    UsageAction.PULL: ("content/read",),
    # A push asks for pull too (clients check what exists first); content/read is needed with content/write.
    UsageAction.PUSH: ("content/write", "content/read"),
    UsageAction.DELETE: ("content/delete",),
}
# The logs show manifests pulled, pushed and deleted; metadata reads and writes leave no row, so they are never
# reported as unused.
OBSERVABLE = ("content/read", "content/write", "content/delete")
_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_TIME)


def _key(table: str, row: tuple[Any, ...]) -> str:
    """A stable id for one event: its time, correlation id and what it was about."""
    raw = "|".join([table, _iso(row[0]), *(str(v) for v in row[1:])])
    return hashlib.blake2b(raw.encode(), digest_size=10).hexdigest()


class _Tokens:
    """The registry's tokens by name; an event belongs to the newest token of that name made before it."""

    def __init__(self, registry: Registry) -> None:
        self.by_name: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
        for pk, name, created in Token.objects.filter(registry=registry).values_list("pk", "name", "created_at"):
            self.by_name[name.lower()].append((created, pk))
        for entries in self.by_name.values():
            entries.sort(reverse=True)

    def find(self, identity: str, when: datetime) -> int | None:
        for created, pk in self.by_name.get((identity or "").lower(), ()):
            # A token's first login can be logged a little before the portal recorded it as made.
            if created - timedelta(minutes=5) <= when:
                return pk
        return None


@dataclass
class _Batch:
    """What one page of events adds, before it is written."""

    last_used: dict[int, datetime] = field(default_factory=dict)
    usage: dict[tuple[int, str, str], list[Any]] = field(default_factory=dict)  # [count, first, last]
    operations: dict[tuple[int, date], int] = field(default_factory=lambda: defaultdict(int))
    failed: dict[tuple[int, date], int] = field(default_factory=lambda: defaultdict(int))
    failures: dict[int, list[datetime]] = field(default_factory=lambda: defaultdict(list))

    def used(self, token: int, when: datetime) -> None:
        if token not in self.last_used or self.last_used[token] < when:
            self.last_used[token] = when

    def add(self, table: str, row: tuple[Any, ...], tokens: _Tokens) -> bool:
        when, identity = row[0], row[1]
        token = tokens.find(identity, when)
        if token is None:
            return False
        day = when.astimezone(UTC).date()
        if table == LOGIN_TABLE:
            if str(row[2]) == "200":
                self.used(token, when)
            else:
                self.failed[(token, day)] += 1
                self.failures[token].append(when)
            return True
        action = OPERATIONS.get(row[2])
        if action is None or not row[3]:
            return False
        self.used(token, when)
        self.operations[(token, day)] += 1
        entry = self.usage.get((token, row[3], action))
        if entry is None:
            self.usage[(token, row[3], action)] = [1, when, when]
        else:
            entry[0] += 1
            entry[1] = min(entry[1], when)
            entry[2] = max(entry[2], when)
        return True


def collect_all() -> int:
    """collect-usage: every active registry with a workspace. Returns the events counted."""
    counted = 0
    for registry in Registry.objects.filter(active=True).exclude(log_analytics_workspace_id=""):
        try:
            counted += collect(registry)
        except loganalytics.TransientLogsError as exc:
            log.warning("usage of %s not collected this time: %s", registry, exc)
        except loganalytics.LogsError as exc:
            log.error("usage of %s cannot be collected: %s", registry, exc)
    refresh_suggestions()
    return counted


def resource_id(registry: Registry) -> str:
    return (
        f"/subscriptions/{registry.subscription_id}/resourceGroups/{registry.resource_group}"
        f"/providers/Microsoft.ContainerRegistry/registries/{registry.name}"
    )


def collect(registry: Registry, max_events: int | None = None) -> int:
    """Read what is new in both tables of one registry; the events counted."""
    budget = settings.USAGE_MAX_EVENTS_PER_RUN if max_events is None else max_events
    tokens = _Tokens(registry)
    return sum(_collect_table(registry, table, tokens, budget) for table in (LOGIN_TABLE, REPOSITORY_TABLE))


class _Raced(Exception):
    """Another run moved the cursor first; this page is theirs."""


def _collect_table(registry: Registry, table: str, tokens: _Tokens, budget: int) -> int:
    cursor, _ = UsageCursor.objects.get_or_create(registry=registry, table=table)
    overlap = timedelta(minutes=settings.USAGE_OVERLAP_MINUTES)
    read = counted = 0
    first = True
    while read < budget:
        watermark = cursor.watermark or timezone.now() - timedelta(days=settings.USAGE_BACKFILL_DAYS)
        since = watermark - overlap if first and cursor.watermark else watermark
        limit = min(settings.USAGE_PAGE_SIZE, budget - read)
        page = loganalytics.read_events(registry.log_analytics_workspace_id, table, resource_id(registry), since, limit)
        read += len(page.rows)
        seen: dict[str, str] = dict(cursor.recent_keys)
        batch = _Batch()
        newest = max([watermark, *(row[0] for row in page.rows)])
        # Only an event at or before the old watermark can have been read before, and only one within the overlap
        # of the new one is remembered: the events between need no key, which is most of them.
        read_before = cursor.watermark
        remembered = newest - overlap
        fresh = 0
        for row in page.rows:
            when = row[0]
            if (read_before is not None and when <= read_before) or when >= remembered:
                key = _key(table, row)
                if key in seen:
                    continue
                seen[key] = _iso(when)
            fresh += 1
            counted += batch.add(table, row, tokens)
        cutoff = _iso(remembered)
        kept = {k: t for k, t in seen.items() if t >= cutoff}
        try:
            with transaction.atomic():
                moved = UsageCursor.objects.filter(pk=cursor.pk, version=cursor.version).update(
                    watermark=newest, recent_keys=kept, version=F("version") + 1, updated_at=timezone.now()
                )
                if moved != 1:
                    raise _Raced
                _write(batch)
        except _Raced:
            log.info("usage of %s %s: another run is reading it", registry, table)
            return counted
        cursor.watermark, cursor.recent_keys, cursor.version = newest, kept, cursor.version + 1
        first = False
        if not page.full:
            break
        if not fresh and newest == watermark:
            log.warning("usage of %s %s: more than %d events at %s; moving on", registry, table, limit, newest)
            break
    return counted


def _stamp_for(vendor: str) -> Any:
    """How to pass an aware UTC datetime to raw SQL. Django's adapter for SQLite (naive UTC text) costs more per
    value than reading the event did; this gives the same text. PostgreSQL's driver takes the datetime itself."""
    if vendor == "sqlite":
        return lambda when: str(when.astimezone(UTC).replace(tzinfo=None))
    return connection.ops.adapt_datetimefield_value


def _write(batch: _Batch) -> None:
    """Add one page's aggregates: upserts that add counts and keep the newest and oldest times, so the cost is
    one statement per row changed, whatever the tables already hold (PostgreSQL and SQLite alike)."""
    ops = connection.ops
    stamp = _stamp_for(connection.vendor)
    token_table = connection.ops.quote_name(Token._meta.db_table)
    usage_table = connection.ops.quote_name(TokenUsage._meta.db_table)
    day_table = connection.ops.quote_name(TokenUsageDay._meta.db_table)
    with connection.cursor() as cursor:
        if batch.last_used:
            cursor.executemany(
                f"UPDATE {token_table} SET last_used_at = %s WHERE id = %s AND "
                "(last_used_at IS NULL OR last_used_at < %s)",
                [(stamp(when), pk, stamp(when)) for pk, when in batch.last_used.items()],
            )
        if batch.usage:
            cursor.executemany(
                f'INSERT INTO {usage_table} (token_id, repository, action, "count", first_at, last_at) '
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (token_id, repository, action) DO UPDATE SET "
                f'"count" = {usage_table}."count" + excluded."count", '
                f"first_at = CASE WHEN excluded.first_at < {usage_table}.first_at THEN excluded.first_at "
                f"ELSE {usage_table}.first_at END, "
                f"last_at = CASE WHEN excluded.last_at > {usage_table}.last_at THEN excluded.last_at "
                f"ELSE {usage_table}.last_at END",
                [
                    (token, repository, str(action), count, stamp(first), stamp(last))
                    for (token, repository, action), (count, first, last) in batch.usage.items()
                ],
            )
        days = set(batch.operations) | set(batch.failed)
        if days:
            cursor.executemany(
                f"INSERT INTO {day_table} (token_id, day, operations, failed_logins) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (token_id, day) DO UPDATE SET "
                f"operations = {day_table}.operations + excluded.operations, "
                f"failed_logins = {day_table}.failed_logins + excluded.failed_logins",
                [
                    (
                        token,
                        ops.adapt_datefield_value(day),
                        batch.operations.get((token, day), 0),
                        batch.failed.get((token, day), 0),
                    )
                    for token, day in sorted(days)
                ],
            )
    for token_id, times in batch.failures.items():
        _failed_logins(token_id, sorted(times))


def _failed_logins(token_id: int, times: list[datetime]) -> None:
    """Group failures into bursts (a gap longer than the window ends one); the first time a burst holds
    FAILED_LOGIN_BURST failures within FAILED_LOGIN_BURST_MINUTES, its owner and security are told."""
    window = timedelta(minutes=settings.FAILED_LOGIN_BURST_MINUTES)
    threshold = max(1, settings.FAILED_LOGIN_BURST)
    burst = FailedLoginBurst.objects.filter(token_id=token_id).order_by("-last_at").first()
    for when in times:
        if burst is None or when - burst.last_at > window:
            if burst is not None:
                burst.save()
            burst = FailedLoginBurst(token_id=token_id, started_at=when, last_at=when, count=0, recent=[])
        burst.count += 1
        burst.last_at = max(burst.last_at, when)
        burst.recent = sorted([*burst.recent, _iso(when)])[-threshold:]
        oldest = datetime.strptime(burst.recent[0], _TIME).replace(tzinfo=UTC)
        if burst.alerted_at is None and len(burst.recent) >= threshold and burst.last_at - oldest <= window:
            burst.alerted_at = timezone.now()
            burst.save()
            _alert(burst)
    if burst is not None:
        burst.save()


def _alert(burst: FailedLoginBurst) -> None:
    token = Token.objects.select_related("owner", "registry").get(pk=burst.token_id)
    details = {
        "failed_logins": burst.count,
        "first": _iso(burst.started_at),
        "last": _iso(burst.last_at),
        "window_minutes": settings.FAILED_LOGIN_BURST_MINUTES,
    }
    audit.record("token.failed_login_burst", actor=None, target=token, details=details)
    alerts.raise_(
        "token.failed_login_burst",
        f"{burst.count} failed logins as token {token.name} within {settings.FAILED_LOGIN_BURST_MINUTES} minutes",
        target=token,
        details=details,
    )
    transaction.on_commit(lambda: notify.failed_login_burst(token, burst, access.security_emails()))


# What usage suggests.


@dataclass(frozen=True)
class Suggestion:
    kind: str  # "drop", "narrow" or "retire"
    text: str


@dataclass(frozen=True)
class Advice:
    suggestions: list[Suggestion]
    rules: list[dict] | None  # the narrower rules for a change request; None when nothing would change

    def __bool__(self) -> bool:
        return bool(self.suggestions)


def usage_rows(token: Token) -> list[TokenUsage]:
    return list(TokenUsage.objects.filter(token=token).order_by("repository", "action"))


def _exercised(rows: list[TokenUsage], since: datetime | None = None) -> dict[str, set[str]]:
    """repository -> scope-map actions exercised on it (since `since`, if given)."""
    found: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if since is None or row.last_at >= since:
            found[row.repository].update(EXERCISES[UsageAction(row.action)])
    return found


def never_used_actions(
    token: Token, rows: list[TokenUsage] | None = None, since: datetime | None = None
) -> list[str]:
    """Scope-map action strings granted and observable in the logs but never exercised since the token was made, or,
    with `since`, not exercised since then (each repository and action's last use is kept, so "used within the
    window" is "last used at or after its start")."""
    used = _exercised(usage_rows(token) if rows is None else rows, since)
    unused = []
    for rule in token.rules:
        for action in rule["actions"]:
            if action not in OBSERVABLE:
                continue
            if not any(action in acts and scopes.covers(rule["repository"], repo) for repo, acts in used.items()):
                unused.append(f"repositories/{rule['repository']}/{action}")
    return unused


def unused_actions_in_window(
    token: Token, rows: list[TokenUsage] | None = None, days: int | None = None, now: datetime | None = None
) -> list[str]:
    """never_used_actions within the last `days` (LEAST_PRIVILEGE_DAYS unless given): what a least-privilege
    suggestion would drop."""
    days = settings.LEAST_PRIVILEGE_DAYS if days is None else days
    return never_used_actions(token, rows, (now or timezone.now()) - timedelta(days=days))


def is_stale(token: Token, now: datetime | None = None) -> bool:
    """Live, older than STALE_DAYS, and not used within them."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.STALE_DAYS)
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.DISABLED) or token.created_at > cutoff:
        return False
    return token.last_used_at is None or token.last_used_at < cutoff


_MAX_NARROWED = 10  # a wildcard is suggested narrowed only to this many repositories


def advise(token: Token, rows: list[TokenUsage] | None = None, now: datetime | None = None) -> Advice:
    """Least privilege: actions unused for LEAST_PRIVILEGE_DAYS, wildcards of which only a few repositories were
    used, and, for a token unused for STALE_DAYS, retirement. Nothing for a token younger than the window or whose
    registry's usage is not collected."""
    now = now or timezone.now()
    if not token.is_live or token.status == TokenStatus.RETIRING or not token.registry.log_analytics_workspace_id:
        return Advice([], None)
    if is_stale(token, now):
        days = settings.STALE_DAYS
        text = (
            f"Not used for {days} days: retire it."
            if token.last_used_at
            else f"Never used in {(now - token.created_at).days} days: retire it."
        )
        return Advice([Suggestion("retire", text)], None)
    since = now - timedelta(days=settings.LEAST_PRIVILEGE_DAYS)
    if token.created_at > since:
        return Advice([], None)
    rows = usage_rows(token) if rows is None else rows
    used = _exercised(rows, since)
    suggestions: list[Suggestion] = []
    narrowed: list[tuple[str, list[str]]] = []
    for rule in token.rules:
        pattern, actions = rule["repository"], list(rule["actions"])
        repos = {repo: acts for repo, acts in used.items() if scopes.covers(pattern, repo)}
        exercised = set().union(*repos.values()) if repos else set()
        dropped = [a for a in actions if a in OBSERVABLE and a not in exercised]
        kept = [a for a in actions if a not in dropped]
        if dropped and not [a for a in kept if a in OBSERVABLE]:
            suggestions.append(Suggestion("drop", f"Nothing on {pattern} was used: drop the rule."))
            continue
        if dropped:
            suggestions.append(Suggestion("drop", f"Drop {', '.join(dropped)} on {pattern}."))
        if scopes.is_wildcard(pattern) and repos and len(repos) <= _MAX_NARROWED:
            names = sorted(repos)
            listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"
            suggestions.append(
                Suggestion(
                    "narrow",
                    f"Only {listed} {'was' if len(names) == 1 else 'were'} used "
                    f"under {pattern}: narrow to {'it' if len(names) == 1 else 'them'}.",
                )
            )
            unobservable = [a for a in kept if a not in OBSERVABLE]
            for repo in names:
                narrowed.append((repo, [a for a in kept if a in repos[repo]] + unobservable))
        else:
            narrowed.append((pattern, kept))
    if not suggestions:
        return Advice([], None)
    merged = scopes.merge_rules((repo, acts) for repo, acts in narrowed if acts)
    return Advice(suggestions, merged or None)


def refresh_suggestions(now: datetime | None = None) -> int:
    """Work out every live token's advice again and keep it in TokenSuggestion (what security's list of suggestions
    reads), in one transaction. A suggestion that stands keeps the time it was first found. Returns how many."""
    now = now or timezone.now()
    tokens = (
        Token.objects.filter(status__in=[TokenStatus.ACTIVE, TokenStatus.DISABLED])
        .exclude(registry__log_analytics_workspace_id="")
        .select_related("registry")
        .prefetch_related("usage")
        .order_by("pk")
    )
    found: list[tuple[int, str, str]] = []
    for token in tokens.iterator(chunk_size=500):
        found.extend((token.pk, s.kind, s.text[:1000]) for s in advise(token, list(token.usage.all()), now).suggestions)
    with transaction.atomic():
        since = {
            (token, kind, text): when
            for token, kind, text, when in TokenSuggestion.objects.select_for_update().values_list(
                "token_id", "kind", "text", "since"
            )
        }
        TokenSuggestion.objects.all().delete()
        TokenSuggestion.objects.bulk_create(
            (TokenSuggestion(token_id=t, kind=k, text=x, since=since.get((t, k, x), now)) for t, k, x in found),
            batch_size=1000,
        )
    return len(found)


def daily(token: Token, days: int = 30, today: date | None = None) -> list[tuple[date, int, int]]:
    """(day, operations, failed logins) for the last `days` days, oldest first, zeros included."""
    today = today or timezone.now().astimezone(UTC).date()
    start = today - timedelta(days=days - 1)
    found = {
        d.day: (d.operations, d.failed_logins)
        for d in TokenUsageDay.objects.filter(token=token, day__gte=start, day__lte=today)
    }
    return [(start + timedelta(days=i), *found.get(start + timedelta(days=i), (0, 0))) for i in range(days)]


def stale_q(now: datetime | None = None) -> Q:
    """Tokens suggested for retirement: live, older than STALE_DAYS and unused within them, in registries whose
    usage is collected."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.STALE_DAYS)
    return (
        Q(status__in=[TokenStatus.ACTIVE, TokenStatus.DISABLED], created_at__lte=cutoff)
        & ~Q(registry__log_analytics_workspace_id="")
        & (Q(last_used_at__isnull=True) | Q(last_used_at__lt=cutoff))
    )


def stale_tokens(now: datetime | None = None) -> list[Token]:
    return list(Token.objects.filter(stale_q(now)).select_related("owner", "registry"))


def rules_query(rules: list[dict] | None) -> list[str]:
    """Rules as `repository:action,action` strings, for a change request's `?rule=` parameters."""
    return [f"{r['repository']}:{','.join(r['actions'])}" for r in rules or []]


def rules_from_query(values: list[str]) -> list[dict]:
    """The inverse of rules_query, for prefilling a form: malformed values are kept as typed, for the form to judge."""
    rules = []
    for value in values[:50]:
        repository, _, actions = value.partition(":")
        rules.append({"repository": repository.strip(), "actions": [a for a in actions.split(",") if a]})
    return rules


SPARK_WIDTH, SPARK_HEIGHT = 120, 24


def sparkline(days: list[tuple[date, int, int]]) -> dict[str, Any]:
    """An inline SVG polyline of operations per day (server-side, no script), and a sentence saying the same."""
    peak = max((d[1] for d in days), default=0)
    step = SPARK_WIDTH / max(len(days) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{SPARK_HEIGHT - 1 - (d[1] / peak * (SPARK_HEIGHT - 2) if peak else 0):.1f}"
        for i, d in enumerate(days)
    )
    total = sum(d[1] for d in days)
    busiest = max(days, key=lambda d: d[1]) if days and peak else None
    active = sum(1 for d in days if d[1])
    if busiest is None:
        text = f"No pulls, pushes or deletes in the last {len(days)} days."
    else:
        text = (
            f"{total} operations in the last {len(days)} days, on {active} of them; "
            f"the busiest was {busiest[0]:%Y-%m-%d} with {busiest[1]}."
        )
    return {"width": SPARK_WIDTH, "height": SPARK_HEIGHT, "points": points, "text": text}
