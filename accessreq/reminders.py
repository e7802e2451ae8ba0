"""Reminders before a token's retirement date or a password's expiry: each threshold once per address, gathered into
one digest per address per day, however often the job runs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, time
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accessreq import audit, notify, usage
from accessreq.models import Digest, Reminder, SlotStatus, SuggestionKind, Team, Token, TokenStatus, TokenSuggestion

UNUSED = "unused"  # a Due subject: suggested for retirement, as nothing used it for STALE_DAYS
LEAST_PRIVILEGE = "least-privilege"  # a Due subject: access to drop or narrow (usage.advise)


@dataclass(frozen=True)
class Due:
    token: Token
    subject: str  # "retirement" or a slot name
    due: datetime
    days_before: int
    detail: str = ""  # what is suggested, for a least-privilege item


def _threshold(due: datetime, now: datetime) -> int | None:
    """The tightest reminder threshold already crossed: 13 days left gives 14, 3 gives 7, 0.5 gives 1."""
    days_left = (due - now).total_seconds() / 86400
    if days_left <= 0:
        return None
    crossed = [d for d in settings.REMINDER_DAYS if days_left <= d]
    return min(crossed) if crossed else None


def due_reminders(now: datetime) -> list[Due]:
    found = []
    tokens = (
        Token.objects.filter(status__in=[TokenStatus.ACTIVE, TokenStatus.DISABLED], let_expire=False)
        .select_related("owner", "registry")
        .prefetch_related("slots")
    )
    for token in tokens:
        retire_at = timezone.make_aware(datetime.combine(token.retire_on, time.min))
        if (days := _threshold(retire_at, now)) is not None:
            found.append(Due(token, "retirement", retire_at, days))
        for slot in token.slots.all():
            if slot.status in (SlotStatus.REVEALED, SlotStatus.AWAITING_REVEAL) and slot.expires_at:
                if slot.retire_after is not None:
                    continue  # being rotated out: its expiry no longer matters
                if (days := _threshold(slot.expires_at, now)) is not None:
                    found.append(Due(token, slot.name, slot.expires_at, days))
    # Tokens nobody used for STALE_DAYS: once per idle spell (the spell starts at the last use).
    for token in usage.stale_tokens(now):
        if not token.let_expire:
            found.append(Due(token, UNUSED, token.last_used_at or token.created_at, 0))
    found.extend(_least_privilege())
    return found


def _least_privilege() -> list[Due]:
    """Access to drop or narrow, one item per token, as collect-usage last worked it out. Its `due` is when the
    newest of the token's suggestions was first found, so the same advice is mailed once and a new one again."""
    by_token: dict[int, list[TokenSuggestion]] = defaultdict(list)
    standing = (
        TokenSuggestion.objects.filter(
            kind__in=[SuggestionKind.DROP, SuggestionKind.NARROW],
            token__status__in=[TokenStatus.ACTIVE, TokenStatus.DISABLED],
            token__let_expire=False,
        )
        .select_related("token__owner", "token__registry")
        .order_by("token_id", "pk")
    )
    for suggestion in standing:
        by_token[suggestion.token_id].append(suggestion)
    return [
        Due(
            items[0].token,
            LEAST_PRIVILEGE,
            max(s.since for s in items),
            0,
            " ".join(s.text for s in items),
        )
        for items in by_token.values()
    ]


def send_reminders(now: datetime | None = None) -> int:
    """Reminders due, each once per address, gathered into one digest per address per day. Returns e-mails sent."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    teams = dict(Team.objects.exclude(email="").values_list("name", "email"))
    by_address: dict[str, list[Due]] = defaultdict(list)
    for item in due_reminders(now):
        for address in {item.token.owner.email, teams.get(item.token.team, "")} - {""}:
            by_address[address].append(item)
    sent = 0
    for address, items in by_address.items():
        already = set(
            Reminder.objects.filter(email=address, token__in=[i.token for i in items]).values_list(
                "token_id", "subject", "due", "days_before"
            )
        )
        fresh = [i for i in items if (i.token.pk, i.subject, i.due, i.days_before) not in already]
        if not fresh:
            continue
        try:
            with transaction.atomic():
                # One digest a day: a second run today leaves what is new for tomorrow's digest.
                Digest.objects.create(email=address, day=today)
                Reminder.objects.bulk_create(
                    Reminder(token=i.token, subject=i.subject, due=i.due, days_before=i.days_before, email=address)
                    for i in fresh
                )
                for token in {i.token for i in fresh}:
                    audit.record(
                        "token.reminded",
                        actor=None,
                        target=token,
                        details={"to": address, "about": sorted({i.subject for i in fresh if i.token == token})},
                    )
                transaction.on_commit(partial(notify.reminder_digest, address, fresh))
        except IntegrityError:
            continue
        sent += 1
    return sent
