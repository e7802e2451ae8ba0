"""The security page's charts, drawn on the server as SVG: the numbers come from grouped queries (never a row per
token), this module turns them into shapes in a fixed viewBox, and templates/accessreq/_chart.html draws them with
presentation attributes only, so the page needs neither JavaScript nor inline styles. Each chart carries its numbers
as a table too, for screen readers and for anyone who wants the figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from accessreq.models import LIVE_TOKEN_STATUSES, SLOTS_IN_USE, AuditEvent, PasswordSlot, Token, TokenStatus
from accessreq.quota import ENDED, HISTORY_DAYS, RegistryQuota

WIDTH = 400
LABEL_WIDTH = 130  # room for a row's name left of its bar
ROW_HEIGHT = 24
PLOT = (40, 12, 388, 168)  # left, top, right, bottom of a line chart's plot area
# Colours readable on white and told apart without hue alone: each series also has its own dash pattern.
COLOURS = ("#0b5cad", "#8a5300", "#a31f1f", "#1d6b3a")
DASHES = ("", "6 3", "2 3", "8 3 2 3")


@dataclass
class Series:
    name: str
    values: list[int]
    colour: str = COLOURS[0]
    dash: str = ""
    points: str = ""  # a polyline's points, for line charts


@dataclass
class Bar:
    label: str
    values: list[int]
    y: int = 0  # the row's top
    rects: list[tuple[str, str]] = field(default_factory=list)  # (width, colour), drawn in order
    value_x: str = ""
    value_text: str = ""

    @property
    def text_y(self) -> int:
        return self.y + 16

    @property
    def bar_y(self) -> int:
        return self.y + 4


@dataclass
class Chart:
    """One chart: what it shows (title, desc), its numbers (labels × series) and the shapes drawn from them."""

    slug: str
    title: str
    desc: str
    kind: str  # "lines" or "bars"
    labels: list[str]
    series: list[Series]
    unit: str = ""
    height: int = 0
    maximum: int = 0
    bars: list[Bar] = field(default_factory=list)
    ticks: list[tuple[str, str]] = field(default_factory=list)  # (x, label) under a line chart

    @property
    def rows(self) -> list[tuple[str, list[int]]]:
        """The table beside the chart: one row per label, one column per series."""
        return [(label, [s.values[i] for s in self.series]) for i, label in enumerate(self.labels)]

    @property
    def plot(self) -> dict[str, int]:
        left, top, right, bottom = PLOT
        return {"left": left, "top": top, "right": right, "bottom": bottom, "label_x": left - 4,
                "top_text": top + 4, "tick_y": bottom + 16, "bar_x": LABEL_WIDTH, "name_x": LABEL_WIDTH - 4}


def lines(slug: str, title: str, desc: str, labels: list[str], series: list[Series]) -> Chart:
    left, top, right, bottom = PLOT
    maximum = max([1, *(v for s in series for v in s.values)])
    step = (right - left) / max(1, len(labels) - 1)
    for i, s in enumerate(series):
        s.colour, s.dash = COLOURS[i % len(COLOURS)], DASHES[i % len(DASHES)]
        s.points = " ".join(
            f"{left + x * step:.1f},{bottom - (bottom - top) * v / maximum:.1f}" for x, v in enumerate(s.values)
        )
    ticks = [(f"{left + x * step:.1f}", labels[x]) for x in range(0, len(labels), max(1, len(labels) // 3))]
    return Chart(slug, title, desc, "lines", labels, series, height=bottom + 24, maximum=maximum, ticks=ticks)


def bars(
    slug: str, title: str, desc: str, labels: list[str], series: list[Series], *, maximum: int = 0, unit: str = ""
) -> Chart:
    """Horizontal bars, one row per label; a second series is drawn over the first (a part of the whole)."""
    top = max([maximum, 1, *(v for s in series for v in s.values)])
    span = WIDTH - LABEL_WIDTH - 50
    for i, s in enumerate(series):
        s.colour = ("#9cc2e8", COLOURS[2])[i] if len(series) > 1 else COLOURS[0]
    rows = []
    for i, label in enumerate(labels):
        values = [s.values[i] for s in series]
        widths = [span * v / top for v in values]
        rows.append(
            Bar(
                label if len(label) <= 18 else f"{label[:17]}…",
                values,
                4 + i * ROW_HEIGHT,
                [(f"{w:.1f}", s.colour) for w, s in zip(widths, series, strict=True)],
                f"{LABEL_WIDTH + max(widths) + 4:.1f}",
                " / ".join(f"{v}{unit}" for v in values),
            )
        )
    height = max(ROW_HEIGHT, 8 + len(labels) * ROW_HEIGHT)
    return Chart(slug, title, desc, "bars", labels, series, unit, height, top, rows)


def _day(value: date) -> str:
    return f"{value:%b} {value.day}"


def tokens_over_time() -> Chart:
    """Tracked tokens live, retired and deleted outside the portal at the end of each week, walked back from today's
    counts through creation times and the audit events of tokens that left."""
    today = timezone.now().astimezone(UTC).date()
    days = [today - timedelta(days=i) for i in range(HISTORY_DAYS, -1, -1)]
    since = datetime.combine(days[1], time.min, tzinfo=UTC)
    now = dict(Token.objects.order_by().values_list("status").annotate(n=Count("pk")))
    live = sum(now.get(s, 0) for s in LIVE_TOKEN_STATUSES)
    created = dict(
        Token.objects.filter(created_at__gte=since)
        .order_by()
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values_list("day")
        .annotate(n=Count("pk"))
    )
    ended: dict[str, dict[date, int]] = {action: {} for action in ENDED}
    for action, day, n in (
        AuditEvent.objects.filter(action__in=ENDED, target_type=Token._meta.label_lower, created_at__gte=since)
        .order_by()
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values_list("action", "day")
        .annotate(n=Count("pk"))
    ):
        ended[action][day] = n
    retired, gone = ended["token.retired"], ended["token.gone"]
    counts = [(live, now.get(TokenStatus.RETIRED, 0), now.get(TokenStatus.GONE, 0))]
    for day in reversed(days[1:]):
        a, r, g = counts[-1]
        out_r, out_g = retired.get(day, 0), gone.get(day, 0)
        counts.append((max(0, a - created.get(day, 0) + out_r + out_g), max(0, r - out_r), max(0, g - out_g)))
    counts.reverse()
    weekly = list(range(0, len(days), 7))
    if weekly[-1] != len(days) - 1:
        weekly.append(len(days) - 1)
    series = [
        Series("Live", [counts[i][0] for i in weekly]),
        Series("Retired", [counts[i][1] for i in weekly]),
        Series("Gone", [counts[i][2] for i in weekly]),
    ]
    latest = counts[-1]
    return lines(
        "status",
        f"Tracked tokens by status, last {HISTORY_DAYS} days",
        f"Weekly counts. Today {latest[0]} live (active, disabled or retiring), {latest[1]} retired and "
        f"{latest[2]} gone (deleted outside the portal).",
        [_day(days[i]) for i in weekly],
        series,
    )


def passwords_expiring(weeks: int = 12) -> Chart:
    """Passwords in use on live tokens expiring in each of the next `weeks` weeks, counted in one query."""
    start = timezone.now()
    edges = [start + timedelta(weeks=w) for w in range(weeks + 1)]
    found = PasswordSlot.objects.filter(
        status__in=SLOTS_IN_USE, token__status__in=LIVE_TOKEN_STATUSES, expires_at__gte=start, expires_at__lt=edges[-1]
    ).aggregate(
        **{f"w{w}": Count("pk", filter=Q(expires_at__gte=edges[w], expires_at__lt=edges[w + 1])) for w in range(weeks)}
    )
    values = [found[f"w{w}"] for w in range(weeks)]
    labels = [f"From {_day(timezone.localtime(edges[w]).date())}" for w in range(weeks)]
    return bars(
        "expiring",
        f"Passwords expiring per week, next {weeks} weeks",
        f"{sum(values)} passwords in use expire in the next {weeks} weeks; the busiest week has {max(values)}.",
        labels,
        [Series("Passwords expiring", values)],
    )


def by_team(rows: list[dict]) -> Chart:
    """Live tokens per team and how many of them are risky, from the summary's grouped team counts."""
    rows = rows[:10]
    return bars(
        "teams",
        "Live tokens and risky tokens by team",
        f"The {len(rows)} teams with the most live tokens; the darker part of each bar is its risky tokens.",
        [r["team"] for r in rows],
        [Series("Live tokens", [r["n"] for r in rows]), Series("Risky", [r["risky"] for r in rows])],
    )


def by_quota(quotas: list[RegistryQuota]) -> Chart:
    ordered = sorted(quotas, key=lambda q: (-q.percent, q.name))[:10]
    return bars(
        "quota",
        "Registries by share of their limits used",
        "The larger of tokens and scope maps used, as a percentage of the SKU's limit.",
        [q.name for q in ordered],
        [Series("Percent of limit used", [q.percent for q in ordered])],
        maximum=100,
        unit="%",
    )
