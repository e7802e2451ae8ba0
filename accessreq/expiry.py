"""What expires soon: one threshold for badges, home and the security page, the first reminder's (REMINDER_DAYS)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from accessreq.models import LIVE_TOKEN_STATUSES, PasswordSlot, SlotStatus, Token, TokenStatus

IN_USE = [SlotStatus.REVEALED, SlotStatus.AWAITING_REVEAL]


def soon_days() -> int:
    return max(settings.REMINDER_DAYS or [14])


def days_left(when: date | datetime) -> int:
    """Whole days from today to `when` (negative once past), counted in the portal's time zone."""
    if isinstance(when, datetime):
        when = timezone.localtime(when).date()
    return (when - timezone.localdate()).days


def state(when: date | datetime | None, verb: str = "expires") -> tuple[str, str] | None:
    """("expires in 5 days", "soon") / ("expired", "expired") / ("expires in 40 days", "later"); None for no date."""
    if when is None:
        return None
    past = when <= timezone.now() if isinstance(when, datetime) else when <= timezone.localdate()
    if past:
        return ("expired" if verb == "expires" else "retired" if verb == "retires" else f"{verb} passed", "expired")
    days = days_left(when)
    words = "today" if days <= 0 else "tomorrow" if days == 1 else f"in {days} days"
    return f"{verb} {words}", "soon" if days <= soon_days() else "later"


def expiring_passwords(tokens: QuerySet[Token]) -> QuerySet[PasswordSlot]:
    """Passwords in use on live tokens of `tokens` that expire within the threshold (not yet expired)."""
    now = timezone.now()
    return PasswordSlot.objects.filter(
        token__in=tokens.filter(status=TokenStatus.ACTIVE),
        status__in=IN_USE,
        expires_at__gt=now,
        expires_at__lte=now + timedelta(days=soon_days()),
    )


def retiring_tokens(tokens: QuerySet[Token]) -> QuerySet[Token]:
    today = timezone.localdate()
    return tokens.filter(
        status__in=LIVE_TOKEN_STATUSES, retire_on__gt=today, retire_on__lte=today + timedelta(days=soon_days())
    ).exclude(status=TokenStatus.RETIRING)


def counts(tokens: QuerySet[Token]) -> dict[str, int]:
    """How many passwords expire and how many tokens retire soon, among `tokens`."""
    return {
        "passwords": expiring_passwords(tokens).count(),
        "tokens": retiring_tokens(tokens).count(),
        "days": soon_days(),
    }


def soon_filter(now: datetime | None = None) -> Q:
    """Tokens (annotated with next_expiry) whose next password expiry or retirement falls within the threshold."""
    now = now or timezone.now()
    horizon = now + timedelta(days=soon_days())
    return Q(next_expiry__lte=horizon) | Q(retire_on__lte=horizon.date())
