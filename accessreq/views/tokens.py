"""Pages for tokens after provisioning: the inventory, and one token's page with its actions."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.db.models import F, Q, QuerySet
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from accessreq import access, delivery, expiry, history, reconcile, scopes, slots, tokens, usage, whocan
from accessreq.errors import Invalid
from accessreq.models import (
    LIVE_TOKEN_STATUSES,
    KeyVaultDelivery,
    PasswordSlot,
    Registry,
    SlotStatus,
    StorageLocation,
    Token,
    TokenStatus,
)
from accessreq.ratelimit import rate_limited
from accessreq.views import listing
from accessreq.views.common import AuthedRequest, act, paginate, wants_fragment
from accessreq.views.requests import render_reveal, reveal_is_a_button

FLAGS = {
    "orphaned": ("Owner deactivated", Q(orphaned_at__isnull=False)),
    "drift": ("Scope map changed outside the portal", Q(drift_actions__isnull=False)),
    "expired": ("Every password expired", Q(passwords_expired=True)),
    "risky": ("Write, delete, wildcard or partner", Q(risky=True)),
    "unverified": ("Password not proven at the registry", Q(verified_ok=False)),
}


def _unused_for(days: int) -> Q:
    cutoff = timezone.now() - timedelta(days=days)
    return Q(last_used_at__lt=cutoff) | Q(last_used_at__isnull=True, created_at__lt=cutoff)


# Filters on what the registry's logs say (see accessreq/usage.py); computed per request, as they move with time.
USED_FILTERS = {
    "never": ("Never used", lambda: Q(last_used_at__isnull=True)),
    "unused-30": ("Unused for 30 days", lambda: _unused_for(30)),
    "stale": ("Suggested for retirement (unused)", lambda: usage.stale_q()),
}


def annotated(qs: QuerySet[Token]) -> QuerySet[Token]:
    """What a list row shows besides the token: its registry and owner. The soonest expiry, "every password
    expired" and the attention rank are columns of the token, kept by the database as slots change."""
    return qs.select_related("registry", "owner").annotate(expired=F("passwords_expired"))


def by_attention(qs: QuerySet[Token]) -> QuerySet[Token]:
    """Orphans and drift first, then every password expired, then whatever expires or retires soonest: the order of
    the `token_live_by_attention` index, so a page is read from it rather than sorted from every row."""
    return qs.order_by("attention", "next_expiry", "retire_on", "pk")


TOKEN_SORTS = {
    "attention": ("Needs attention first", ()),
    "expires": ("Next password expiry", (F("next_expiry").asc(nulls_last=True), "pk")),
    "retires": ("Retirement date", ("retire_on", "pk")),
    "name": ("Name", ("name", "pk")),
    "owner": ("Owner", ("owner__username", "name", "pk")),
    "team": ("Team", ("team", "name", "pk")),
    "newest": ("Newest first", ("-created_at", "-pk")),
    # Both read the `token_live_by_last_use` index, forwards and backwards; never used sorts as longest ago.
    "used": ("Last used, most recent first", (F("last_used_at").desc(nulls_last=True), F("pk").desc())),
    "unused": ("Last used, longest ago first", (F("last_used_at").asc(nulls_first=True), F("pk").asc())),
}
EXPIRY_CHOICES = {"soon": "Expires or retires soon", "expired": "Every password expired"}


def _expiry(qs: QuerySet[Token], value: str) -> QuerySet[Token]:
    if value == "soon":
        return qs.filter(expiry.soon_filter())
    if value == "expired":
        return qs.filter(FLAGS["expired"][1])
    return qs


TOKEN_FILTERS: dict[str, listing.Narrow] = {
    "q": lambda qs, v: listing.search(qs, v, ("name", "purpose", "team", "owner__username")),
    "registry": lambda qs, v: qs.filter(registry__name=v),
    "owner": lambda qs, v: qs.filter(owner__username=v),
    "team": lambda qs, v: qs.filter(team__icontains=v),
    "repository": lambda qs, v: listing.with_rules_text(qs).filter(rules_text__icontains=v),
    "flag": lambda qs, v: qs.filter(FLAGS[v][1]) if v in FLAGS else qs,
    "expiry": _expiry,
}


@login_required
@require_GET
def token_list(request: AuthedRequest) -> HttpResponse:
    qs = annotated(access.tokens_for(request.user))
    found = listing.read(request, (*TOKEN_FILTERS, "status"), TOKEN_SORTS)
    status = found["status"] or "live"
    found.values["status"] = "" if status == "live" else status
    if status == "live":
        qs = qs.filter(status__in=LIVE_TOKEN_STATUSES)
    elif status in TokenStatus.values:
        qs = qs.filter(status=status)
    qs = listing.apply(qs, found, TOKEN_FILTERS)
    used = request.GET.get("used", "")
    if used in USED_FILTERS:
        qs = qs.filter(USED_FILTERS[used][1]())
    qs = by_attention(qs) if found.sort == "attention" else listing.ordered(qs, found)
    context = {
        "page": paginate(request, qs),
        "listing": found,
        "status": status,
        "flag": found["flag"],
        "used": used,
        "used_filters": {k: label for k, (label, _) in USED_FILTERS.items()},
        "flags": {k: label for k, (label, _) in FLAGS.items()},
        "statuses": TokenStatus.choices,
        "expiry_choices": EXPIRY_CHOICES,
        "registries": Registry.objects.filter(active=True).order_by("name").values_list("name", flat=True),
        "extra_query": "&".join(q for q in (found.query, urlencode({"used": used}) if used else "") if q),
    }
    return render(request, "accessreq/token_list.html", context)


def _manage(token: Token, user: User) -> dict[str, bool]:
    """What the Manage card offers this person for this token now; no card at all when nothing."""
    live = token.status in (TokenStatus.ACTIVE, TokenStatus.DISABLED)
    owner_actions = live and access.can_manage(token, user)
    switch = access.can_switch(token, user)
    found = {
        "change": owner_actions,
        "owner_actions": owner_actions,
        "disable": switch and token.status == TokenStatus.ACTIVE,
        "enable": switch and token.status == TokenStatus.DISABLED,
    }
    return {**found, "any": any(found.values())}


def _token_context(request: AuthedRequest, token: Token) -> dict[str, object]:
    token_slots = list(PasswordSlot.objects.filter(token=token))
    return {
        "manage": _manage(token, request.user),
        "token_risks": scopes.risks(token.rules, token.client_kind),
        "reach": whocan.reach_now(token),
        "token": token,
        "slots": token_slots,
        "generating": any(s.status == SlotStatus.GENERATING for s in token_slots),
        "can_manage": access.can_manage(token, request.user),
        "can_rotate": access.can_rotate(token, request.user),
        "can_switch": access.can_switch(token, request.user),
        "can_retry": access.can_retry(request.user),
        "is_security": access.roles_for(request.user).is_security,
        "rotating": any(s.retire_after for s in token_slots),
        "history": token.renewals.order_by("-created_at")[:10],
        "events": list(history.for_token(token)),
        "grace_days": settings.ROTATION_GRACE_DAYS,
        **_delivery_context(request, token),
        **_usage_context(token),
    }


def _delivery_context(request: AuthedRequest, token: Token) -> dict[str, object]:
    """Where the token's password lives: its Key Vault secret, or where the requester stored the one they revealed."""
    if not access.can_see_storage(token, request.user):
        return {}
    return {
        "key_vault_delivery": KeyVaultDelivery.objects.filter(token=token).first(),
        "storage_location": StorageLocation.objects.filter(token=token).select_related("recorded_by").first(),
        "can_record_storage": access.can_record_storage(token, request.user),
    }


def _usage_context(token: Token) -> dict[str, object]:
    rows = usage.usage_rows(token)
    days = usage.daily(token)
    advice = usage.advise(token, rows)
    return {
        "usage_collected": bool(token.registry.log_analytics_workspace_id),
        "usage_rows": rows,
        "never_used": usage.never_used_actions(token, rows),
        "advice": advice,
        "narrow_query": urlencode({"renew": token.pk, "rule": usage.rules_query(advice.rules)}, doseq=True)
        if advice.rules
        else "",
        "sparkline": usage.sparkline(days),
        "usage_days": days,
        "usage_total": sum(d[1] for d in days),
        "failed_total": sum(d[2] for d in days),
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
    raw = request.POST.get("password_days", "").strip()
    try:
        days = int(raw) if raw else None
        if days is not None:
            tokens.check_lifetime(token, days)
    except (ValueError, Invalid) as exc:
        # Beside the field, on the page as it was: nothing was rotated.
        message = exc.errors["password_days"][0] if isinstance(exc, Invalid) else "Enter a whole number of days."
        context = {**_token_context(request, token), "rotate_error": message, "rotate_days": raw}
        return render(request, "accessreq/token_detail.html", context, status=400)
    return act(
        request,
        token,
        lambda: tokens.rotate(token, request.user, request, password_days=days),
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
@require_http_methods(["GET", "POST"])
@rate_limited("reveal")
def token_reveal(request: AuthedRequest, pk: int, slot: str) -> HttpResponse:
    if request.method == "GET":
        token = access.get_token_for_user(request.user, pk)
        return reveal_is_a_button(request, f"{token.get_absolute_url()}#token-slots", f"token {token.name}")
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
        request,
        token,
        lambda: tokens.disable(token, request.user, reason, request),
        "The token is disabled.",
        on_invalid=lambda exc: _refused_here(request, token, "disable", exc, reason),
    )


def _refused_here(request: AuthedRequest, token: Token, form: str, exc: Invalid, typed: str) -> HttpResponse:
    """The token's page again, with the error beside the form's field and what was typed kept (400): a message at
    the top of a long page is easily missed, and retyping is a second chance to mistype. Nothing changed."""
    context = {**_token_context(request, token), f"{form}_error": str(exc), f"{form}_typed": typed}
    return render(request, "accessreq/token_detail.html", context, status=400)


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
        request,
        token,
        lambda: tokens.transfer(token, request.user, to, request),
        f"{to} now owns the token.",
        on_invalid=lambda exc: _refused_here(request, token, "transfer", exc, to),
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


# --- where the password lives ----------------------------------------------------------------------------------------


@login_required
@require_POST
def token_storage(request: AuthedRequest, pk: int) -> HttpResponse:
    """The requester records where they stored the password they revealed."""
    token = access.get_token_for_user(request.user, pk)
    location = request.POST.get("location", "")
    return act(
        request,
        token,
        lambda: delivery.record_storage(token, request.user, location, request),
        "Recorded where the password is stored.",
        on_invalid=lambda exc: _refused_here(request, token, "storage", exc, location),
    )
