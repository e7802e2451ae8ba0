"""Security's pages: the dashboard of what needs attention, reconcile findings, what usage suggests, and the audit
log."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from accessreq import access, acr, charts, enqueue, expiry, quota, reconcile
from accessreq.errors import DomainError
from accessreq.models import (
    LIVE_TOKEN_STATUSES,
    AuditEvent,
    Registry,
    SuggestionKind,
    Token,
    TokenStatus,
    TokenSuggestion,
    UnmanagedToken,
)
from accessreq.views import listing
from accessreq.views.common import AuthedRequest, act, paginate, wants_fragment
from accessreq.views.tokens import FLAGS, USED_FILTERS, annotated, by_attention

SUMMARY_KEY = "security-summary"
REFRESHING_KEY = "security-summary-refreshing"
# A stale summary is still served this many times SECURITY_SUMMARY_SECONDS while the next one is worked out.
STALE_FACTOR = 10
# Should the refresh die with its process, another takes over after this many seconds.
REFRESH_TIMEOUT = 300
log = logging.getLogger(__name__)


def _summary() -> dict[str, Any]:
    """The dashboard's totals and charts: each reads every live token, so they are computed in a few grouped queries
    (never a COUNT per tile or a row per token) and shared by all workers through the cache for
    SECURITY_SUMMARY_SECONDS. Once that has passed, the first request to notice starts working them out again on a
    thread of its own, and it and every other request are served the previous figures meanwhile: at 100k tokens
    that takes a fair part of a second, which no one should wait for, and without the marker every worker that
    noticed at that moment would compute the same figures at once. Only with nothing cached does a request wait."""
    seconds = settings.SECURITY_SUMMARY_SECONDS
    cached: dict[str, Any] | None = cache.get(SUMMARY_KEY)
    if cached is None:
        return _store_summary(seconds)
    if timezone.now().timestamp() - cached["computed_at"] >= seconds and cache.add(REFRESHING_KEY, 1, REFRESH_TIMEOUT):
        threading.Thread(target=_refresh, args=(seconds,), name="security-summary", daemon=True).start()
    return cached


def _store_summary(seconds: float) -> dict[str, Any]:
    started = timezone.now().timestamp()
    found = _compute_summary()
    found["computed_at"] = started
    if seconds > 0:
        cache.set(SUMMARY_KEY, found, seconds * STALE_FACTOR)
    return found


def _refresh(seconds: float) -> None:
    try:
        _store_summary(seconds)
    except Exception:  # noqa: BLE001 - the previous figures stay on show; the next request to notice tries again
        log.exception("the security summary could not be worked out")
    finally:
        cache.delete(REFRESHING_KEY)
        connection.close()  # this thread's own


def _compute_summary() -> dict[str, Any]:
    live = Token.objects.filter(status__in=LIVE_TOKEN_STATUSES)
    live_in = live.filter(registry=OuterRef("pk")).order_by().values("registry").annotate(n=Count("pk")).values("n")
    unmanaged_in = (
        UnmanagedToken.objects.filter(registry=OuterRef("pk")).order_by().values("registry")
        .annotate(n=Count("pk")).values("n")
    )
    found: dict[str, Any] = {
        "counts": live.aggregate(**{key: Count("pk", filter=q) for key, (_, q) in FLAGS.items()}),
        "registries": list(
            Registry.objects.filter(active=True).annotate(
                live=Coalesce(Subquery(live_in), 0), unmanaged=Coalesce(Subquery(unmanaged_in), 0)
            )
        ),
        "by_team": list(
            live.order_by().values("team")
            .annotate(n=Count("id"), owners=Count("owner", distinct=True), risky=Count("id", filter=Q(risky=True)))
            .order_by("-n", "team")[:20]
        ),
    }
    used = live.aggregate(**{key: Count("pk", filter=q()) for key, (_, q) in USED_FILTERS.items()})
    found["usage_counts"] = {key: (label, used[key]) for key, (label, _) in USED_FILTERS.items()}
    found["suggestion_count"] = TokenSuggestion.objects.filter(SUGGESTION_TOKENS).count()
    found["soon"] = expiry.counts(Token.objects.all())
    found["quotas"] = quota.cached()
    found["charts"] = [
        charts.tokens_over_time(),
        charts.passwords_expiring(),
        charts.by_team(found["by_team"]),
        charts.by_quota(found["quotas"]),
    ]
    return found


@login_required
@require_GET
@vary_on_headers("HX-Request")
def security_dashboard(request: AuthedRequest) -> HttpResponse:
    access.require_security(request.user, "This page is for security staff.")
    reconciling = _reconciling(request)
    if wants_fragment(request) and reconciling is not None:
        if reconciling["running"]:
            return HttpResponse(status=204)  # nothing new: htmx swaps nothing
        # Done (or given up on): the whole page again, findings and all, without the polling.
        response = HttpResponse(status=200)
        response["HX-Redirect"] = request.get_full_path()
        return response
    tokens = annotated(Token.objects.filter(status__in=LIVE_TOKEN_STATUSES))
    context = {
        **_summary(),
        "flags": {k: label for k, (label, _) in FLAGS.items()},
        # Attention ranks 0 and 1 (orphaned, drifted), read from the start of the attention index, and tokens the
        # registry reports as broken.
        "attention": by_attention(tokens.filter(Q(attention__lt=2) | ~Q(registry_state="")))[:10],
        "unmanaged": paginate(request, UnmanagedToken.objects.select_related("registry").order_by("registry", "name")),
        "default_retire_on": timezone.localdate() + timedelta(days=90),
        "reconciling": reconciling,
        "history_days": quota.HISTORY_DAYS,
        "summary_seconds": settings.SECURITY_SUMMARY_SECONDS * STALE_FACTOR,
    }
    return render(request, "accessreq/security.html", context)


# Suggestions stand for live tokens only: one retired or being retired since they were worked out has none.
SUGGESTION_TOKENS = Q(token__status__in=[TokenStatus.ACTIVE, TokenStatus.DISABLED])
SUGGESTION_SORTS = {
    "token": ("Token", ("token__name", "token__registry__name", "kind", "pk")),
    "kind": ("Kind", ("kind", "token__name", "pk")),
    "team": ("Team", ("token__team", "token__name", "pk")),
    "owner": ("Owner", ("token__owner__username", "token__name", "pk")),
    "unused": ("Last used, longest ago first", (F("token__last_used_at").asc(nulls_first=True), "token__name", "pk")),
    "used": ("Last used, most recent first", (F("token__last_used_at").desc(nulls_last=True), "token__name", "pk")),
    "newest": ("Newest suggestion first", ("-since", "-pk")),
}
SUGGESTION_FILTERS: dict[str, listing.Narrow] = {
    "q": lambda qs, v: listing.search(
        qs, v, ("token__name", "token__registry__name", "token__team", "token__owner__username", "text")
    ),
    "kind": lambda qs, v: qs.filter(kind=v) if v in SuggestionKind.values else qs,
    "team": lambda qs, v: qs.filter(token__team__icontains=v),
}


@login_required
@require_GET
def suggestions(request: AuthedRequest) -> HttpResponse:
    """Every standing least-privilege and retirement suggestion, as the last collect-usage worked them out."""
    access.require_security(request.user, "This page is for security staff.")
    found = listing.read(request, tuple(SUGGESTION_FILTERS), SUGGESTION_SORTS)
    qs = TokenSuggestion.objects.filter(SUGGESTION_TOKENS).select_related("token__registry", "token__owner")
    qs = listing.ordered(listing.apply(qs, found, SUGGESTION_FILTERS), found)
    context = {
        "page": paginate(request, qs),
        "listing": found,
        "kinds": SuggestionKind.choices,
        "least_privilege_days": settings.LEAST_PRIVILEGE_DAYS,
        "extra_query": found.query,
    }
    return render(request, "accessreq/suggestions.html", context)


@login_required
@require_POST
def registry_reconcile(request: AuthedRequest, pk: int) -> HttpResponse:
    registry = access.get_registry_for_security(request.user, pk)
    # A registry may hold thousands of tokens: reading them is the worker's job, not the web request's.
    after = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    enqueue.reconcile_registry(registry.pk, request.user.pk)
    messages.success(request, f"Reconciling {registry} has started; this page shows its findings when it is done.")
    query = urlencode({"reconciling": registry.pk, "after": after, "since": int(timezone.now().timestamp())})
    return redirect(f"{reverse('security')}?{query}")


RECONCILE_PATIENCE = timedelta(minutes=5)


def _reconciling(request: AuthedRequest) -> dict[str, object] | None:
    """A reconcile this person started from the page: running (the page asks every 2 s), done, or overdue."""
    raw = {k: request.GET.get(k, "") for k in ("reconciling", "after", "since")}
    if not all(v.isdigit() for v in raw.values()):
        return None
    registry = Registry.objects.filter(pk=int(raw["reconciling"])).first()
    if registry is None:
        return None
    done = AuditEvent.objects.filter(
        id__gt=int(raw["after"]),
        action="registry.reconciled",
        target_type=Registry._meta.label_lower,
        target_id=str(registry.pk),
    ).first()
    started = datetime.fromtimestamp(int(raw["since"]), tz=UTC)
    overdue = done is None and timezone.now() - started > RECONCILE_PATIENCE
    return {"registry": registry, "done": done, "overdue": overdue, "running": done is None and not overdue}


@login_required
@require_POST
def unmanaged_adopt(request: AuthedRequest, pk: int) -> HttpResponse:
    unmanaged = access.get_unmanaged_for_security(request.user, pk)
    owner = get_user_model().objects.filter(username=request.POST.get("owner", "").strip(), is_active=True).first()
    team = request.POST.get("team", "").strip()
    retire_on = parse_date(request.POST.get("retire_on", "") or "")
    problems = []
    if owner is None:
        problems.append("Name an active user as the owner.")
    if not team:
        problems.append("Name the owning team.")
    if retire_on is None or retire_on <= timezone.localdate():
        problems.append("Choose a retirement date after today.")
    if problems or owner is None or retire_on is None:
        messages.error(request, f"{unmanaged.name} was not adopted: {' '.join(problems)}")
        return redirect("security")
    try:
        token = reconcile.adopt(unmanaged, request.user, owner, team, retire_on, request)
    except (DomainError, acr.AcrError) as exc:
        messages.error(request, str(exc))
        return redirect("security")
    messages.success(request, f"{token.name} is now tracked, owned by {owner.get_username()}.")
    return redirect(token)


@login_required
@require_POST
def unmanaged_disable(request: AuthedRequest, pk: int) -> HttpResponse:
    unmanaged = access.get_unmanaged_for_security(request.user, pk)
    reason = request.POST.get("reason", "")
    return act(
        request,
        "security",
        lambda: reconcile.disable_unmanaged(unmanaged, request.user, reason, request),
        f"{unmanaged.name} is disabled in the registry.",
    )


AUDIT_SORTS = {"newest": ("Newest first", ("-id",)), "oldest": ("Oldest first", ("id",))}


def _on_or_after(qs: QuerySet[AuditEvent], value: str) -> QuerySet[AuditEvent]:
    day = parse_date(value) if len(value) == 10 else None
    return qs.filter(created_at__date__gte=day) if day else qs


def _on_or_before(qs: QuerySet[AuditEvent], value: str) -> QuerySet[AuditEvent]:
    day = parse_date(value) if len(value) == 10 else None
    return qs.filter(created_at__date__lte=day) if day else qs


AUDIT_FILTERS: dict[str, listing.Narrow] = {
    "action": lambda qs, v: qs.filter(action__startswith=v),
    "actor": lambda qs, v: qs.filter(actor_name=v),
    "target": lambda qs, v: listing.search(qs, v, ("target_repr",)),
    "since": _on_or_after,
    "until": _on_or_before,
}


@login_required
@require_GET
def audit_log(request: AuthedRequest) -> HttpResponse:
    access.require_security(request.user, "The audit log is for security staff.")
    found = listing.read(request, tuple(AUDIT_FILTERS), AUDIT_SORTS)
    qs = listing.ordered(listing.apply(AuditEvent.objects.all(), found, AUDIT_FILTERS), found)
    page = paginate(request, qs, per_page=50)
    context = {"page": page, "listing": found, "action": found["action"], "extra_query": found.query}
    return render(request, "accessreq/audit_log.html", context)
