"""Security's pages: the dashboard of what needs attention, reconcile findings, and the audit log."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
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


@login_required
@require_GET
def security_dashboard(request: AuthedRequest) -> HttpResponse:
    access.require_security(request.user)
    tokens = annotated(Token.objects.filter(status__in=LIVE_TOKEN_STATUSES))
    counts = {key: tokens.filter(q).count() for key, (_, q) in FLAGS.items()}
    context = {
        "counts": counts,
        "flags": {k: label for k, (label, _) in FLAGS.items()},
        "attention": by_attention(
            tokens.filter(Q(orphaned_at__isnull=False) | Q(drift_actions__isnull=False) | ~Q(registry_state=""))
        )[:10],
        "registries": Registry.objects.filter(active=True).annotate(
            live=Count("tokens", filter=Q(tokens__status__in=LIVE_TOKEN_STATUSES)),
            unmanaged=Count("unmanaged_tokens", distinct=True),
        ),
        "unmanaged": paginate(request, UnmanagedToken.objects.select_related("registry").order_by("registry", "name")),
        "by_team": Token.objects.filter(status__in=LIVE_TOKEN_STATUSES)
        .values("team")
        .annotate(n=Count("id"), owners=Count("owner", distinct=True))
        .order_by("-n", "team")[:20],
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
