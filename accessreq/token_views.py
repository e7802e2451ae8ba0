"""Pages for tokens after provisioning: the inventory, one token's actions, and security's view of every registry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Count, IntegerField, Min, Q, QuerySet, Value, When
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accessreq import acr, lifecycle, tasks
from accessreq.models import (
    LIVE_TOKEN_STATUSES,
    PasswordSlot,
    Registry,
    SlotStatus,
    Token,
    TokenStatus,
    UnmanagedToken,
)
from accessreq.ratelimit import rate_limited
from accessreq.roles import roles_for
from accessreq.views import AuthedRequest, _paginate, render_reveal

FLAGS = {
    "orphaned": ("Owner deactivated", Q(orphaned_at__isnull=False)),
    "drift": ("Scope map changed outside the portal", Q(drift_actions__isnull=False)),
    "expired": ("Every password expired", Q(in_use=0, expired__gt=0)),
    "risky": ("Write, delete, wildcard or partner", Q(risky=True)),
}


def _annotated(qs: QuerySet[Token]) -> QuerySet[Token]:
    in_use = [SlotStatus.REVEALED, SlotStatus.AWAITING_REVEAL]
    return qs.select_related("registry", "owner").annotate(
        next_expiry=Min("slots__expires_at", filter=Q(slots__status__in=in_use)),
        in_use=Count("slots", filter=Q(slots__status__in=[*in_use, SlotStatus.GENERATING]), distinct=True),
        expired=Count("slots", filter=Q(slots__status=SlotStatus.EXPIRED), distinct=True),
    )


def _by_attention(qs: QuerySet[Token]) -> QuerySet[Token]:
    """Orphans and drift first, then whatever expires or retires soonest."""
    return qs.annotate(
        urgency=Case(
            When(orphaned_at__isnull=False, then=Value(0)),
            When(drift_actions__isnull=False, then=Value(1)),
            When(in_use=0, expired__gt=0, then=Value(2)),
            default=Value(3),
            output_field=IntegerField(),
        )
    ).order_by("urgency", "next_expiry", "retire_on", "pk")


def _risky(qs: QuerySet[Token]) -> QuerySet[Token]:
    # Risk is in the rules' JSON: matched as text, which every database supports, rather than with JSON paths.
    risky = (
        Q(rules__icontains="content/write")
        | Q(rules__icontains="content/delete")
        | Q(rules__icontains="metadata/write")
        | Q(rules__icontains="*")
        | Q(client_kind="partner")
    )
    return qs.annotate(risky=Case(When(risky, then=Value(True)), default=Value(False)))


def _get_token_for_user(request: AuthedRequest, pk: int) -> Token:
    token = lifecycle.tokens_for(request.user).select_related("registry", "owner", "requester").filter(pk=pk).first()
    if token is None:
        raise Http404("No such token.")
    return token


@login_required
@require_GET
def token_list(request: AuthedRequest) -> HttpResponse:
    qs = _risky(_annotated(lifecycle.tokens_for(request.user)))
    status = request.GET.get("status", "live")
    if status == "live":
        qs = qs.filter(status__in=LIVE_TOKEN_STATUSES)
    elif status in TokenStatus.values:
        qs = qs.filter(status=status)
    flag = request.GET.get("flag", "")
    if flag in FLAGS:
        qs = qs.filter(FLAGS[flag][1])
    page = _paginate(request, _by_attention(qs))
    query = {k: v for k, v in {"status": status, "flag": flag}.items() if v}
    context = {
        "page": page,
        "status": status,
        "flag": flag,
        "flags": {k: label for k, (label, _) in FLAGS.items()},
        "statuses": TokenStatus.choices,
        "extra_query": urlencode(query),
        "soon": timezone.now() + timedelta(days=14),
    }
    return render(request, "accessreq/token_list.html", context)


def _token_context(request: AuthedRequest, token: Token) -> dict[str, object]:
    slots = list(PasswordSlot.objects.filter(token=token))
    roles = roles_for(request.user)
    return {
        "token": token,
        "slots": slots,
        "generating": any(s.status == SlotStatus.GENERATING for s in slots),
        "can_manage": lifecycle.can_manage(token, request.user),
        "can_switch": lifecycle.can_switch(token, request.user),
        "is_security": roles.is_security,
        "rotating": any(s.retire_after for s in slots),
        "history": token.renewals.order_by("-created_at")[:10],
        "grace_days": settings.ROTATION_GRACE_DAYS,
    }


@never_cache
@login_required
@require_GET
def token_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    token = _get_token_for_user(request, pk)
    template = "accessreq/token_slots.html" if request.htmx else "accessreq/token_detail.html"
    return render(request, template, _token_context(request, token))


def _act(request: AuthedRequest, token: Token, action: Callable[[], object], done: str) -> HttpResponse:
    """Run one lifecycle action; a refusal is shown on the token's page, a lack of rights is a 403."""
    try:
        action()
    except PermissionDenied:
        raise
    except (lifecycle.LifecycleError, ValueError) as exc:
        messages.error(request, str(exc))
    except acr.AcrError as exc:
        messages.error(request, f"The registry refused: {exc}")
    else:
        messages.success(request, done)
    return redirect(token)


@login_required
@require_POST
def token_rotate(request: AuthedRequest, pk: int) -> HttpResponse:
    token = _get_token_for_user(request, pk)
    return _act(
        request,
        token,
        lambda: lifecycle.rotate(token, request.user, request),
        "A new password is being generated in the free slot. The old one keeps working until you confirm the switch.",
    )


@login_required
@require_POST
def token_confirm_switch(request: AuthedRequest, pk: int) -> HttpResponse:
    token = _get_token_for_user(request, pk)
    return _act(
        request,
        token,
        lambda: lifecycle.confirm_switch(token, request.user, request),
        "The old password is deleted from the registry.",
    )


@never_cache
@login_required
@require_POST
@rate_limited("reveal")
def token_reveal(request: AuthedRequest, pk: int, slot: str) -> HttpResponse:
    token = _get_token_for_user(request, pk)
    found = slot_for_revealer(token, slot, request.user)
    return render_reveal(request, found, token.get_absolute_url(), f"Back to token {token.name}")


def slot_for_revealer(token: Token, name: str, user: object) -> PasswordSlot:
    """A token's password slot, for the one person who may reveal it (403 for others who see the token)."""
    found = PasswordSlot.objects.select_related("token__registry").filter(token=token, name=name).first()
    if found is None:
        raise Http404("No such password.")
    if found.requested_by_id != user.pk:
        raise PermissionDenied("Only the person who asked for this password can reveal it.")
    return found


@login_required
@require_POST
def token_disable(request: AuthedRequest, pk: int) -> HttpResponse:
    token = _get_token_for_user(request, pk)
    reason = request.POST.get("reason", "")
    return _act(
        request, token, lambda: lifecycle.disable(token, request.user, reason, request), "The token is disabled."
    )


@login_required
@require_POST
def token_enable(request: AuthedRequest, pk: int) -> HttpResponse:
    token = _get_token_for_user(request, pk)
    return _act(request, token, lambda: lifecycle.enable(token, request.user, request), "The token is enabled.")


@login_required
@require_POST
def token_retire(request: AuthedRequest, pk: int) -> HttpResponse:
    token = _get_token_for_user(request, pk)
    reason = request.POST.get("reason", "").strip() or "retired early by its owner"
    return _act(
        request,
        token,
        lambda: lifecycle.retire(token, request.user, reason, request),
        "The token is disabled now and will be deleted with its scope map after the grace period.",
    )


@login_required
@require_POST
def token_transfer(request: AuthedRequest, pk: int) -> HttpResponse:
    token = _get_token_for_user(request, pk)
    to = request.POST.get("to", "")
    return _act(
        request, token, lambda: lifecycle.transfer(token, request.user, to, request), f"{to} now owns the token."
    )


@login_required
@require_POST
def token_let_expire(request: AuthedRequest, pk: int) -> HttpResponse:
    token = _get_token_for_user(request, pk)
    value = request.POST.get("value") == "1"
    done = "No more reminders for this token." if value else "Reminders are back on."
    return _act(request, token, lambda: lifecycle.set_let_expire(token, request.user, value, request), done)


@login_required
@require_POST
def token_restore(request: AuthedRequest, pk: int) -> HttpResponse:
    token = _get_token_for_user(request, pk)
    return _act(
        request,
        token,
        lambda: lifecycle.restore(token, request.user, request),
        "The scope map holds the approved actions again.",
    )


def _require_security(request: AuthedRequest) -> None:
    if not roles_for(request.user).is_security:
        raise PermissionDenied("This page is for security staff.")


@login_required
@require_GET
def security_dashboard(request: AuthedRequest) -> HttpResponse:
    _require_security(request)
    tokens = _risky(_annotated(Token.objects.filter(status__in=LIVE_TOKEN_STATUSES)))
    counts = {key: tokens.filter(q).count() for key, (_, q) in FLAGS.items()}
    context = {
        "counts": counts,
        "flags": {k: label for k, (label, _) in FLAGS.items()},
        "attention": _by_attention(tokens.filter(Q(orphaned_at__isnull=False) | Q(drift_actions__isnull=False)))[:10],
        "registries": Registry.objects.filter(active=True).annotate(
            live=Count("tokens", filter=Q(tokens__status__in=LIVE_TOKEN_STATUSES)),
            unmanaged=Count("unmanaged_tokens", distinct=True),
        ),
        "unmanaged": _paginate(request, UnmanagedToken.objects.select_related("registry").order_by("registry", "name")),
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
    _require_security(request)
    registry = Registry.objects.filter(pk=pk, active=True).first()
    if registry is None:
        raise Http404("No such registry.")
    # A registry may hold thousands of tokens: reading them is the worker's job, not the web request's.
    tasks.reconcile_registry.delay(registry.pk, request.user.pk)
    messages.success(request, f"Reconciling {registry} has started; its findings appear here when it is done.")
    return redirect("security")


def _get_unmanaged(request: AuthedRequest, pk: int) -> UnmanagedToken:
    _require_security(request)
    found = UnmanagedToken.objects.select_related("registry").filter(pk=pk).first()
    if found is None:
        raise Http404("No such token.")
    return found


@login_required
@require_POST
def unmanaged_adopt(request: AuthedRequest, pk: int) -> HttpResponse:
    unmanaged = _get_unmanaged(request, pk)
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
        token = lifecycle.adopt(unmanaged, request.user, owner, team, retire_on, request)
    except (lifecycle.LifecycleError, acr.AcrError) as exc:
        messages.error(request, str(exc))
        return redirect("security")
    messages.success(request, f"{token.name} is now tracked, owned by {owner.get_username()}.")
    return redirect(token)


@login_required
@require_POST
def unmanaged_disable(request: AuthedRequest, pk: int) -> HttpResponse:
    unmanaged = _get_unmanaged(request, pk)
    try:
        lifecycle.disable_unmanaged(unmanaged, request.user, request.POST.get("reason", ""), request)
    except (ValueError, acr.AcrError) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{unmanaged.name} is disabled in the registry.")
    return redirect(reverse("security"))
