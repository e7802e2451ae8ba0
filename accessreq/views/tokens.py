"""Pages for tokens after provisioning: the inventory, and one token's page with its actions."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import F, Q, QuerySet
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from accessreq import access, reconcile, slots, tokens
from accessreq.models import LIVE_TOKEN_STATUSES, PasswordSlot, SlotStatus, Token, TokenStatus
from accessreq.ratelimit import rate_limited
from accessreq.views.common import AuthedRequest, act, paginate, wants_fragment
from accessreq.views.requests import render_reveal

FLAGS = {
    "orphaned": ("Owner deactivated", Q(orphaned_at__isnull=False)),
    "drift": ("Scope map changed outside the portal", Q(drift_actions__isnull=False)),
    "expired": ("Every password expired", Q(passwords_expired=True)),
    "risky": ("Write, delete, wildcard or partner", Q(risky=True)),
    "unverified": ("Password not proven at the registry", Q(verified_ok=False)),
}


def annotated(qs: QuerySet[Token]) -> QuerySet[Token]:
    """What a list row shows besides the token: its registry and owner. The soonest expiry, "every password
    expired" and the attention rank are columns of the token, kept by the database as slots change."""
    return qs.select_related("registry", "owner").annotate(expired=F("passwords_expired"))


def by_attention(qs: QuerySet[Token]) -> QuerySet[Token]:
    """Orphans and drift first, then every password expired, then whatever expires or retires soonest: the order of
    the `token_live_by_attention` index, so a page is read from it rather than sorted from every row."""
    return qs.order_by("attention", "next_expiry", "retire_on", "pk")


@login_required
@require_GET
def token_list(request: AuthedRequest) -> HttpResponse:
    qs = annotated(access.tokens_for(request.user))
    status = request.GET.get("status", "live")
    if status == "live":
        qs = qs.filter(status__in=LIVE_TOKEN_STATUSES)
    elif status in TokenStatus.values:
        qs = qs.filter(status=status)
    flag = request.GET.get("flag", "")
    if flag in FLAGS:
        qs = qs.filter(FLAGS[flag][1])
    page = paginate(request, by_attention(qs))
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
    token_slots = list(PasswordSlot.objects.filter(token=token))
    return {
        "token": token,
        "slots": token_slots,
        "generating": any(s.status == SlotStatus.GENERATING for s in token_slots),
        "can_manage": access.can_manage(token, request.user),
        "can_switch": access.can_switch(token, request.user),
        "can_retry": access.can_retry(request.user),
        "is_security": access.roles_for(request.user).is_security,
        "rotating": any(s.retire_after for s in token_slots),
        "history": token.renewals.order_by("-created_at")[:10],
        "grace_days": settings.ROTATION_GRACE_DAYS,
    }


@never_cache
@login_required
@require_GET
@vary_on_headers("HX-Request")
def token_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    token = access.get_token_for_user(request.user, pk)
    template = "accessreq/token_slots.html" if wants_fragment(request) else "accessreq/token_detail.html"
    return render(request, template, _token_context(request, token))


@login_required
@require_POST
def token_rotate(request: AuthedRequest, pk: int) -> HttpResponse:
    token = access.get_token_for_user(request.user, pk)
    return act(
        request,
        token,
        lambda: tokens.rotate(token, request.user, request),
        "A new password is being generated in the free slot. The old one keeps working until you confirm the switch.",
    )


@login_required
@require_POST
def token_confirm_switch(request: AuthedRequest, pk: int) -> HttpResponse:
    token = access.get_token_for_user(request.user, pk)
    return act(
        request,
        token,
        lambda: tokens.confirm_switch(token, request.user, request),
        "The old password is deleted from the registry.",
    )


@never_cache
@login_required
@require_POST
@rate_limited("reveal")
def token_reveal(request: AuthedRequest, pk: int, slot: str) -> HttpResponse:
    found = access.slot_for_revealer(request.user, pk, slot)
    token = found.token
    return render_reveal(request, found, token.get_absolute_url(), f"Back to token {token.name}")


@login_required
@require_POST
def slot_retry(request: AuthedRequest, pk: int, slot: str) -> HttpResponse:
    found = access.slot_for_admin(request.user, pk, slot)
    return act(
        request,
        found.token,
        lambda: slots.retry(found, request.user, request),
        f"{found.name} will be generated again.",
    )


@login_required
@require_POST
def token_disable(request: AuthedRequest, pk: int) -> HttpResponse:
    token = access.get_token_for_user(request.user, pk)
    reason = request.POST.get("reason", "")
    return act(
        request, token, lambda: tokens.disable(token, request.user, reason, request), "The token is disabled."
    )


@login_required
@require_POST
def token_enable(request: AuthedRequest, pk: int) -> HttpResponse:
    token = access.get_token_for_user(request.user, pk)
    return act(request, token, lambda: tokens.enable(token, request.user, request), "The token is enabled.")


@login_required
@require_POST
def token_retire(request: AuthedRequest, pk: int) -> HttpResponse:
    token = access.get_token_for_user(request.user, pk)
    reason = request.POST.get("reason", "").strip() or "retired early by its owner"
    return act(
        request,
        token,
        lambda: tokens.retire(token, request.user, reason, request),
        "The token is disabled now and will be deleted with its scope map after the grace period.",
    )


@login_required
@require_POST
def token_transfer(request: AuthedRequest, pk: int) -> HttpResponse:
    token = access.get_token_for_user(request.user, pk)
    to = request.POST.get("to", "")
    return act(
        request, token, lambda: tokens.transfer(token, request.user, to, request), f"{to} now owns the token."
    )


@login_required
@require_POST
def token_let_expire(request: AuthedRequest, pk: int) -> HttpResponse:
    token = access.get_token_for_user(request.user, pk)
    value = request.POST.get("value") == "1"
    done = "No more reminders for this token." if value else "Reminders are back on."
    return act(request, token, lambda: tokens.set_let_expire(token, request.user, value, request), done)


@login_required
@require_POST
def token_restore(request: AuthedRequest, pk: int) -> HttpResponse:
    token = access.get_token_for_user(request.user, pk)
    return act(
        request,
        token,
        lambda: reconcile.restore(token, request.user, request),
        "The scope map holds the approved actions again.",
    )


