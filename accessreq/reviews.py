"""Access reviews: security asks every owner in a scope whether each token is still needed, by a due date.

Starting a review makes one item per live token in scope, each with a recommendation. Owners keep (with a one-line
justification), change (a change request prefilled from the token) or retire (`tokens.retire`). Reminders go out
before the due date (`remind_reviews`); at the due date (`close_reviews`) unanswered items get the review's outcome,
flagged or disabled through `tokens.disable`, the review closes and, when it recurs, the next one starts.
Every step is audited.
"""

from __future__ import annotations

import calendar
import logging
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from accessreq import access, acr, alerts, audit, notify, scopes, tokens, whocan
from accessreq.errors import Conflict, Invalid
from accessreq.models import (
    SLOTS_IN_USE,
    AccessReview,
    Registry,
    ReviewDecision,
    ReviewItem,
    ReviewRecurrence,
    ReviewScope,
    ReviewState,
    Token,
    TokenStatus,
    UnansweredOutcome,
)

log = logging.getLogger(__name__)

STALE_DAYS = 90
# Days before the due date when owners with unanswered items are reminded.
REMINDER_DAYS = tuple(getattr(settings, "REVIEW_REMINDER_DAYS", (7, 1)))


# --- recommendations -----------------------------------------------------------------------------------------------


def recommend(token: Token, today: date | None = None) -> str:
    """What the reviewer would likely do, and why, in a few words. Usage counts only when it is known."""
    today = today or timezone.localdate()
    now = timezone.now()
    last_used = getattr(token, "last_used_at", None)
    if token.orphaned_at is not None:
        return "orphaned: its owner left; transfer or retire"
    if last_used is not None and (now - last_used).days >= STALE_DAYS:
        return f"not used in {STALE_DAYS} days: retire"
    in_use = [s for s in token.slots.all() if s.status in SLOTS_IN_USE]
    if not in_use or all(s.expires_at is not None and s.expires_at <= now for s in in_use):
        return "expired passwords: retire, or rotate if still needed"
    if token.drift_actions is not None:
        return "scope map drifted: restore it or change the request"
    if token.status == TokenStatus.DISABLED:
        return "disabled: retire unless it is needed again"
    risks = scopes.risks(token.rules, token.client_kind)
    if risks:
        return f"risky ({', '.join(risks)}): narrow it if it can do with less"
    return "keep if still needed"


def plain_scope(token: Token) -> str:
    return "; ".join(r.words for r in whocan.token_reach(token)) or "nothing"


# --- starting ------------------------------------------------------------------------------------------------------


def _in_scope(scope: str, registry: Registry | None, team: str) -> QuerySet[Token]:
    qs = Token.objects.filter(status__in=[TokenStatus.ACTIVE, TokenStatus.DISABLED])
    if scope == ReviewScope.REGISTRY:
        qs = qs.filter(registry=registry)
    elif scope == ReviewScope.TEAM:
        qs = qs.filter(team__iexact=team)
    return qs.select_related("owner").prefetch_related("slots")


def start(
    user: User | None,
    *,
    name: str,
    scope: str,
    due_on: date | None,
    registry: Registry | None = None,
    team: str = "",
    recurrence: str = ReviewRecurrence.NONE,
    unanswered: str = UnansweredOutcome.FLAG,
    request: HttpRequest | None = None,
    previous: AccessReview | None = None,
) -> AccessReview:
    """A new review over a registry, a team or every token; `user` None when a recurring review starts itself."""
    if user is not None:
        access.require_security(user)
    errors: dict[str, list[str]] = {}
    name = name.strip()
    team = team.strip()
    if not name:
        errors["name"] = ["Name the review, e.g. “Q3 production registries”."]
    if scope not in ReviewScope.values:
        errors["scope"] = ["Choose a registry, a team or every token."]
    elif scope == ReviewScope.REGISTRY and registry is None:
        errors["registry"] = ["Choose the registry to review."]
    elif scope == ReviewScope.TEAM and not team:
        errors["team"] = ["Name the team to review."]
    if due_on is None or due_on <= timezone.localdate():
        errors["due_on"] = ["Choose a due date after today."]
    if recurrence not in ReviewRecurrence.values:
        errors["recurrence"] = ["Choose once or every quarter."]
    if unanswered not in UnansweredOutcome.values:
        errors["unanswered"] = ["Choose flag or disable."]
    if errors or due_on is None:
        raise Invalid(errors)
    creator = user if user is not None else previous.created_by if previous is not None else None
    if creator is None:
        raise Invalid("A review is started by a person, or follows an earlier one.")
    with transaction.atomic():
        review = AccessReview.objects.create(
            name=name,
            scope=scope,
            registry=registry if scope == ReviewScope.REGISTRY else None,
            team=team if scope == ReviewScope.TEAM else "",
            due_on=due_on,
            recurrence=recurrence,
            unanswered=unanswered,
            created_by=creator,
            previous=previous,
        )
        today = timezone.localdate()
        items = [
            ReviewItem(review=review, token=token, owner=token.owner, recommendation=recommend(token, today)[:300])
            for token in _in_scope(scope, registry, team)
        ]
        ReviewItem.objects.bulk_create(items, batch_size=1000)
        audit.record(
            "review.started",
            actor=user,
            target=review,
            details={
                "scope": scope,
                "registry": str(registry or ""),
                "team": team,
                "due_on": due_on,
                "items": len(items),
                "recurrence": recurrence,
                "unanswered": unanswered,
            },
            request=request,
        )
        transaction.on_commit(lambda: _tell_owners(review, "A token review needs your answer"))
    return review


def _owner_addresses(review: AccessReview, unanswered_only: bool) -> list[str]:
    items = review.items.all()
    if unanswered_only:
        items = items.filter(decision="")
    emails = set(items.values_list("owner__email", flat=True))
    teams = set(items.values_list("token__team", flat=True))
    emails |= {tokens.team_email(team) for team in teams}
    return sorted(e for e in emails if e)


def _tell_owners(review: AccessReview, subject: str, unanswered_only: bool = False) -> None:
    notify._send(
        f"{subject}: {review.name}",
        f"Security asks whether each of your tokens in “{review.name}” is still needed, by {review.due_on:%Y-%m-%d}.\n"
        f"Keep, change or retire each one: {notify._link(reverse('my_reviews'))}\n"
        + (
            "Unanswered tokens will be disabled on the due date.\n"
            if review.unanswered == UnansweredOutcome.DISABLE
            else "Unanswered tokens will be flagged to security on the due date.\n"
        ),
        _owner_addresses(review, unanswered_only),
    )


# --- answering -----------------------------------------------------------------------------------------------------


def _settle(
    item: ReviewItem, user: User, decision: str, justification: str, request: HttpRequest | None
) -> None:
    with transaction.atomic():
        moved = ReviewItem.objects.filter(pk=item.pk, decision="", review__state=ReviewState.OPEN).update(
            decision=decision, justification=justification, decided_by=user, decided_at=timezone.now()
        )
        if not moved:
            raise Conflict("This item is answered already, or its review has closed.")
        audit.record(
            f"review.item_{decision}",
            actor=user,
            target=item.token,
            details={"review": item.review_id, "justification": justification},
            request=request,
        )


def keep(item: ReviewItem, user: User, justification: str, request: HttpRequest | None) -> None:
    access.require(access.can_answer(item, user), "Only the token's owner can answer for it.")
    justification = " ".join(justification.split())
    if not justification:
        raise Invalid("Say in one line why the token is still needed.", field="justification")
    if len(justification) > 200:
        raise Invalid("One line: at most 200 characters.", field="justification")
    _settle(item, user, ReviewDecision.KEEP, justification, request)


def change(item: ReviewItem, user: User, request: HttpRequest | None) -> str:
    """Marks the item answered and returns the change request form, prefilled from the token."""
    access.require(access.can_answer(item, user), "Only the token's owner can answer for it.")
    access.require(access.can_manage(item.token, user), "Only the token's owner or security can ask to change it.")
    _settle(item, user, ReviewDecision.CHANGE, "a change request follows", request)
    return f"{reverse('request_new')}?renew={item.token_id}"


def retire(item: ReviewItem, user: User, request: HttpRequest | None) -> None:
    access.require(access.can_answer(item, user), "Only the token's owner can answer for it.")
    if item.decision or item.review.state != ReviewState.OPEN:
        raise Conflict("This item is answered already, or its review has closed.")
    tokens.retire(item.token, user, f"retired in access review “{item.review.name}”", request)
    _settle(item, user, ReviewDecision.RETIRE, "retired", request)


# --- jobs ----------------------------------------------------------------------------------------------------------


def remind_reviews() -> int:
    """Owners with unanswered items, REMINDER_DAYS before the due date, each reminder once per review."""
    sent = 0
    today = timezone.localdate()
    for review in AccessReview.objects.filter(state=ReviewState.OPEN, due_on__gt=today):
        left = (review.due_on - today).days
        due = [d for d in REMINDER_DAYS if left <= d and d not in review.reminders_sent]
        if not due or not review.items.filter(decision="").exists():
            continue
        with transaction.atomic():
            # Conditional: two runs at once send it once.
            if AccessReview.objects.filter(pk=review.pk, reminders_sent=review.reminders_sent).update(
                reminders_sent=sorted({*review.reminders_sent, *due})
            ):
                audit.record("review.reminded", actor=None, target=review, details={"days_left": left})
                transaction.on_commit(partial(_tell_owners, review, "Reminder: a token review", True))
                sent += 1
    return sent


def _apply_outcome(item: ReviewItem, review: AccessReview) -> bool:
    token = item.token
    reason = f"not answered in access review “{review.name}” by {review.due_on:%Y-%m-%d}"
    outcome = "flagged"
    if review.unanswered == UnansweredOutcome.DISABLE and token.status == TokenStatus.ACTIVE:
        tokens.disable(token, None, reason, None)
        outcome = "disabled"
    with transaction.atomic():
        if not ReviewItem.objects.filter(pk=item.pk, decision="", outcome="").update(outcome=outcome):
            return False
        audit.record(
            "review.item_overdue",
            actor=None,
            target=token,
            details={"review": review.pk, "outcome": outcome, "reason": reason},
        )
    return True


def _next_due(due: date) -> date:
    month = due.month + 2
    year, month = due.year + month // 12, month % 12 + 1
    return date(year, month, min(due.day, calendar.monthrange(year, month)[1]))


def close_reviews() -> int:
    """Reviews whose due date has come: unanswered items get the review's outcome, the review closes and, if it
    recurs, the next one starts over the tokens in scope then."""
    closed = 0
    today = timezone.localdate()
    for review in AccessReview.objects.filter(state=ReviewState.OPEN, due_on__lte=today).select_related("registry"):
        failed = False
        for item in review.items.filter(decision="", outcome="").select_related("token__registry", "token__owner"):
            try:
                _apply_outcome(item, review)
            except acr.AcrError as exc:
                log.warning("review %s item %s: outcome failed, will retry: %s", review.pk, item.pk, exc)
                failed = True
        if failed:
            continue
        with transaction.atomic():
            if not AccessReview.objects.filter(pk=review.pk, state=ReviewState.OPEN).update(
                state=ReviewState.CLOSED, closed_at=timezone.now()
            ):
                continue
            counts = progress(review).as_json()
            audit.record("review.closed", actor=None, target=review, details=counts)
            if counts["overdue"]:
                alerts.raise_(
                    "review.overdue",
                    f"{counts['overdue']} token(s) were not answered in access review “{review.name}”",
                    target=review,
                    details={**counts, "unanswered": review.unanswered},
                )
            closed += 1
            if review.recurrence == ReviewRecurrence.QUARTERLY:
                due = _next_due(review.due_on)
                while due <= today:
                    due = _next_due(due)
                start(
                    None,
                    name=review.name,
                    scope=review.scope,
                    due_on=due,
                    registry=review.registry,
                    team=review.team,
                    recurrence=review.recurrence,
                    unanswered=review.unanswered,
                    previous=review,
                )
    return closed


# --- progress and evidence -----------------------------------------------------------------------------------------


@dataclass
class Progress:
    total: int = 0
    answered: int = 0
    kept: int = 0
    changed: int = 0
    retired: int = 0
    overdue: int = 0
    flagged: int = 0
    disabled: int = 0

    @property
    def percent(self) -> int:
        return round(100 * self.answered / self.total) if self.total else 100

    def as_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def progress(review: AccessReview) -> Progress:
    counts = review.items.aggregate(
        total=Count("id"),
        answered=Count("id", filter=~Q(decision="")),
        kept=Count("id", filter=Q(decision=ReviewDecision.KEEP)),
        changed=Count("id", filter=Q(decision=ReviewDecision.CHANGE)),
        retired=Count("id", filter=Q(decision=ReviewDecision.RETIRE)),
        flagged=Count("id", filter=Q(outcome="flagged")),
        disabled=Count("id", filter=Q(outcome="disabled")),
    )
    overdue = (
        counts["total"] - counts["answered"]
        if review.due_on < timezone.localdate() or (review.state == ReviewState.CLOSED)
        else 0
    )
    return Progress(overdue=overdue, **counts)


RESULT_COLUMNS = [
    "review",
    "registry",
    "token",
    "owner",
    "team",
    "scope",
    "recommendation",
    "decision",
    "justification",
    "decided_by",
    "decided_at",
    "outcome",
]


def result_rows(review: AccessReview) -> Any:
    items = review.items.select_related("token__registry", "owner", "decided_by").order_by("id")
    for item in items.iterator(chunk_size=1000):
        yield {
            "review": review.name,
            "registry": item.token.registry.name,
            "token": item.token.name,
            "owner": item.owner.get_username(),
            "team": item.token.team,
            "scope": "; ".join(whocan.describe(r["repository"], r["actions"]) for r in item.token.rules),
            "recommendation": item.recommendation,
            "decision": item.decision or "unanswered",
            "justification": item.justification,
            "decided_by": item.decided_by.get_username() if item.decided_by else "",
            "decided_at": item.decided_at,
            "outcome": item.outcome,
        }


def age_days(token: Token) -> int:
    return (timezone.now() - token.created_at).days
