"""Security's pages: the dashboard of what needs attention, reconcile findings, and the audit log."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.views.decorators.http import require_GET, require_POST

from accessreq import access, acr, enqueue, reconcile
from accessreq.errors import DomainError
from accessreq.models import LIVE_TOKEN_STATUSES, AuditEvent, Registry, Token, UnmanagedToken
from accessreq.views.common import AuthedRequest, act, paginate
from accessreq.views.tokens import FLAGS, annotated, by_attention

SUMMARY_KEY = "security-summary"


def _summary() -> dict[str, object]:
    """The dashboard's totals: each reads every live token, so they are computed in three grouped queries (never a
    COUNT per tile) and shared by all workers through the cache for SECURITY_SUMMARY_SECONDS."""
    found = cache.get(SUMMARY_KEY)
    if found is not None:
        return found
    live = Token.objects.filter(status__in=LIVE_TOKEN_STATUSES)
    live_in = live.filter(registry=OuterRef("pk")).order_by().values("registry").annotate(n=Count("pk")).values("n")
    unmanaged_in = (
        UnmanagedToken.objects.filter(registry=OuterRef("pk")).order_by().values("registry")
        .annotate(n=Count("pk")).values("n")
    )
    found = {
        "counts": live.aggregate(**{key: Count("pk", filter=q) for key, (_, q) in FLAGS.items()}),
        "registries": list(
            Registry.objects.filter(active=True).annotate(
                live=Coalesce(Subquery(live_in), 0), unmanaged=Coalesce(Subquery(unmanaged_in), 0)
            )
        ),
        "by_team": list(
            live.order_by().values("team")
            .annotate(n=Count("id"), owners=Count("owner", distinct=True))
            .order_by("-n", "team")[:20]
        ),
    }
    if settings.SECURITY_SUMMARY_SECONDS > 0:
        cache.set(SUMMARY_KEY, found, settings.SECURITY_SUMMARY_SECONDS)
    return found


@login_required
@require_GET
def security_dashboard(request: AuthedRequest) -> HttpResponse:
    access.require_security(request.user)
    tokens = annotated(Token.objects.filter(status__in=LIVE_TOKEN_STATUSES))
    context = {
        **_summary(),
        "flags": {k: label for k, (label, _) in FLAGS.items()},
        # Attention ranks 0 and 1 (orphaned, drifted), read from the start of the attention index.
        "attention": by_attention(tokens.filter(attention__lt=2))[:10],
        "unmanaged": paginate(request, UnmanagedToken.objects.select_related("registry").order_by("registry", "name")),
        "default_retire_on": timezone.localdate() + timedelta(days=90),
    }
    return render(request, "accessreq/security.html", context)


@login_required
@require_POST
def registry_reconcile(request: AuthedRequest, pk: int) -> HttpResponse:
    registry = access.get_registry_for_security(request.user, pk)
    # A registry may hold thousands of tokens: reading them is the worker's job, not the web request's.
    enqueue.reconcile_registry(registry.pk, request.user.pk)
    messages.success(request, f"Reconciling {registry} has started; its findings appear here when it is done.")
    return redirect("security")


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
    if problems:
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


@login_required
@require_GET
def audit_log(request: AuthedRequest) -> HttpResponse:
    access.require_security(request.user)
    qs = AuditEvent.objects.order_by("-id")
    action = request.GET.get("action", "")
    if action:
        qs = qs.filter(action__startswith=action)
    page = paginate(request, qs, per_page=50)
    context = {"page": page, "action": action, "extra_query": urlencode({"action": action}) if action else ""}
    return render(request, "accessreq/audit_log.html", context)
