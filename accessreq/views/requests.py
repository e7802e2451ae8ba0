"""Pages for requests: home, filing, the approval queue, a request's progress and its one reveal."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from accessreq import access, expiry, flow, quota, scopes, slots, usage
from accessreq.errors import DomainError, Gone
from accessreq.forms import NewRequest
from accessreq.models import (
    OPEN_REQUEST_STATUSES,
    AccessRequest,
    PasswordSlot,
    Registry,
    RequestStatus,
    SlotStatus,
    Token,
    with_details,
)
from accessreq.ratelimit import rate_limited
from accessreq.views import listing, queue
from accessreq.views.common import AuthedRequest, act, paginate, status_for, wants_fragment


@login_required
@require_GET
def home(request: AuthedRequest) -> HttpResponse:
    user = request.user
    open_requests = AccessRequest.objects.filter(requester=user, status__in=OPEN_REQUEST_STATUSES).count()
    waiting = access.approval_queue_for(user).count() if access.roles_for(user).is_approver else 0
    to_reveal = list(
        access.passwords_to_reveal(user).select_related("token__registry").order_by("created_at", "pk")[:20]
    )
    tokens = Token.objects.filter(owner=user).count()
    recent = with_details(AccessRequest.objects.filter(requester=user))[:5]
    context = {
        "open_requests": open_requests,
        "waiting": waiting,
        "to_reveal": to_reveal,
        "tokens": tokens,
        "recent": recent,
        "soon": expiry.counts(access.tokens_for(user)),
    }
    return render(request, "accessreq/home.html", context)


REQUEST_SORTS = {
    "newest": ("Newest first", ("-created_at", "-id")),
    "oldest": ("Oldest first", ("created_at", "id")),
    "status": ("Status", ("status", "-created_at", "-id")),
    "token": ("Token name", ("token_name", "id")),
}
REQUEST_FILTERS: dict[str, listing.Narrow] = {
    "q": lambda qs, v: listing.search(qs, v, ("token_name", "purpose", "team", "owner__username")),
    "registry": lambda qs, v: qs.filter(registry__name=v),
    "repository": lambda qs, v: listing.with_rules_text(qs).filter(rules_text__icontains=v),
    "status": lambda qs, v: qs.filter(status=v) if v in RequestStatus.values else qs,
}
QUEUE_SORTS = {
    "oldest": ("Oldest first", ("created_at", "id")),
    "newest": ("Newest first", ("-created_at", "-id")),
}
QUEUE_FILTERS: dict[str, listing.Narrow] = {
    "q": lambda qs, v: listing.search(qs, v, ("token_name", "purpose", "team", "requester__username")),
    "registry": lambda qs, v: qs.filter(registry__name=v),
    "repository": lambda qs, v: listing.with_rules_text(qs).filter(rules_text__icontains=v),
    "team": lambda qs, v: qs.filter(team__icontains=v),
    "risk": lambda qs, v: qs.filter(risky=v == "risky") if v in ("risky", "read") else qs,
}


def _registry_names() -> list[str]:
    return list(Registry.objects.filter(active=True).order_by("name").values_list("name", flat=True))


@login_required
@require_GET
@vary_on_headers("HX-Request")
def request_list(request: AuthedRequest) -> HttpResponse:
    found = listing.read(request, tuple(REQUEST_FILTERS), REQUEST_SORTS)
    qs = listing.apply(access.my_requests(request.user), found, REQUEST_FILTERS)
    # The rows show the registry, nothing of approvals or requirements: one join, no prefetches.
    page = paginate(request, listing.ordered(qs.select_related("registry"), found))
    context = {
        "page": page,
        "listing": found,
        "status": found["status"],
        "statuses": RequestStatus.choices,
        "registries": _registry_names(),
        "extra_query": found.query,
    }
    template = "accessreq/request_rows.html" if wants_fragment(request) else "accessreq/request_list.html"
    return render(request, template, context)


def _rule_rows(request: AuthedRequest) -> int:
    try:
        current = int(request.POST.get("rules-TOTAL_FORMS", "1"))
    except ValueError:
        current = 1
    return min(max(current, 1), flow.MAX_RULES)


@login_required
@require_http_methods(["GET", "POST"])
@rate_limited("request")
def request_new(request: AuthedRequest) -> HttpResponse:
    renews = _token_to_change(request)
    base = {"renews": renews, "limits": {"max_rules": flow.MAX_RULES, "max_actions": scopes.MAX_ACTIONS_PER_SCOPE_MAP}}
    if request.method == "GET":
        # ?rule=repository:action,action (repeated) prefills a change with other rules, e.g. a narrower access
        # suggested from the token's usage; only with ?renew=, and only as a starting point for the form.
        prefill = usage.rules_from_query(request.GET.getlist("rule")) if renews else None
        new = NewRequest(request.user, renews=renews, rules=prefill or None)
        preview = _preview(new) if renews else None
        return render(request, "accessreq/request_new.html", {**base, "new": new, "preview": preview})
    if "add_rule" in request.POST:
        # Works without JavaScript: the form comes back with one more empty rule and nothing is validated yet.
        data = request.POST.copy()
        data["rules-TOTAL_FORMS"] = str(_rule_rows(request) + 1)
        new = NewRequest(request.user, data, renews=renews)
        preview = _preview(new)
        new.without_errors()
        context = {**base, "new": new, "preview": preview, "adding": True}
        return render(request, "accessreq/request_new.html", context)
    new = NewRequest(request.user, request.POST, renews=renews)
    if not new.is_valid():
        status = 422 if request.htmx else 200
        context = {**base, "new": new, "preview": _preview(new)}
        return render(request, "accessreq/request_new.html", context, status=status)
    assert new.review is not None
    created = flow.file(request.user, new.review, request)
    messages.success(request, f"Request #{created.pk} is filed and waits for approval.")
    return redirect(created)


def _preview(new: NewRequest) -> dict[str, object]:
    """What the request will create, from the same review that filing uses, so both give the same verdict."""
    new.is_valid()
    review = new.review
    rules = review.rules if review else []
    data = getattr(new.form, "cleaned_data", None) or {**new.form.initial}
    client_kind = data.get("client_kind") or "ci"
    actions = scopes.scope_map_actions(rules)
    registry = data.get("registry")
    return {
        "rules": rules,
        "actions": actions,
        "action_count": len(actions),
        "max_actions": scopes.MAX_ACTIONS_PER_SCOPE_MAP,
        # A change keeps its token's name.
        "token_name": new.renews.name
        if new.renews
        else flow.token_name_for(client_kind, data.get("team") or "team", "N"),
        "requirements": review.requirements if review else [],
        "rule_errors": _rule_problems(new),
        "renews": new.renews,
        "wildcards": [r["repository"] for r in rules if scopes.is_wildcard(r["repository"])],
        "risks": scopes.risks(rules, client_kind),
        "registry": registry,
        # A change adds no token, so only a new one is warned about its registry's limits.
        "quota_warnings": quota.warnings_for(registry) if isinstance(registry, Registry) and not new.renews else [],
    }


def _rule_problems(new: NewRequest) -> list[str]:
    """Why the preview leaves something out: each rule's own error by its number, then those of the whole set."""
    problems: list[str] = []
    for number, row in enumerate(new.rules.forms, start=1):
        repository = (row.data.get(row.add_prefix("repository")) or "").strip()
        for field, errors in row.errors.items():
            what = f"Repository {number}" + (f" ({repository})" if repository else "")
            if field == "actions":
                what = f"Actions on repository {number}"
            problems.extend(f"{what}: {error}" for error in errors)
    problems.extend(str(e) for e in new.rules.non_form_errors())
    if new.review:
        problems.extend(m for m in new.review.errors.get("rules", []) if m != flow.NO_RULES)
    return problems


def _token_to_change(request: AuthedRequest) -> Token | None:
    """A renewal or change starts from a token its owner (or security) manages: ?renew=<id>, kept in the form."""
    raw = request.GET.get("renew") or request.POST.get("renew")
    if not raw:
        return None
    if not raw.isdigit():
        raise Http404("No such token.")
    return access.token_to_change(request.user, int(raw))


@login_required
@require_POST
def request_preview(request: AuthedRequest) -> HttpResponse:
    new = NewRequest(request.user, request.POST, renews=_token_to_change(request))
    return render(request, "accessreq/preview.html", {"preview": _preview(new)})


def _detail_context(request: AuthedRequest, access_request: AccessRequest) -> dict[str, object]:
    user = request.user
    access_request = with_details(AccessRequest.objects.filter(pk=access_request.pk)).get()
    token = Token.objects.filter(request=access_request).select_related("registry").prefetch_related("slots").first()
    slots = list(token.slots.all()) if token else []
    decided = {a.approver_id for a in access_request.approvals.all()}
    can_decide = (
        access_request.status == RequestStatus.PENDING
        and user.pk not in decided
        and access.can_decide(access_request, user)
    )
    return {
        "req": access_request,
        "token": token,
        "slots": slots,
        "state_key": ":".join([access_request.status, *(f"{s.name}={s.status}" for s in slots)]),
        "generating": any(s.status == SlotStatus.GENERATING for s in slots),
        "is_requester": user.pk == access_request.requester_id,
        "can_decide": can_decide,
        "can_cancel": access.can_cancel(access_request, user) and access_request.status == RequestStatus.PENDING,
        "can_retry": access.can_retry(user) and access_request.status == RequestStatus.FAILED,
        "sees_reason": access.sees_failure_reasons(user),
        "steps": _steps(access_request),
    }


def _steps(access_request: AccessRequest) -> list[tuple[str, str]]:
    order = [RequestStatus.PENDING, RequestStatus.APPROVED, RequestStatus.PROVISIONING, RequestStatus.READY]
    status = access_request.status
    if status in (RequestStatus.REJECTED, RequestStatus.CANCELLED):
        return [(RequestStatus.PENDING.label, "done"), (access_request.get_status_display(), "bad")]
    if status == RequestStatus.FAILED:
        return [(s.label, "done") for s in order[:3]] + [(RequestStatus.FAILED.label, "bad")]
    current = order.index(RequestStatus(status))
    return [(s.label, "done" if i < current else "current" if i == current else "") for i, s in enumerate(order)]


@never_cache
@login_required
@require_GET
def request_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    access_request = access.get_request_for_user(request.user, pk)
    return render(request, "accessreq/request_detail.html", _detail_context(request, access_request))


@never_cache
@login_required
@require_GET
def request_progress(request: AuthedRequest, pk: int) -> HttpResponse:
    access_request = access.get_request_for_user(request.user, pk)
    context = _detail_context(request, access_request)
    if request.GET.get("seen") == context["state_key"]:
        return HttpResponse(status=204)  # htmx swaps nothing, so screen readers hear nothing new
    return render(request, "accessreq/request_status.html", context)


@login_required
@require_POST
def request_cancel(request: AuthedRequest, pk: int) -> HttpResponse:
    access_request = access.get_request_for_user(request.user, pk)
    return act(
        request,
        access_request,
        lambda: flow.cancel(access_request, request.user, request),
        f"Request #{access_request.pk} is cancelled.",
    )


@login_required
@require_POST
def request_retry(request: AuthedRequest, pk: int) -> HttpResponse:
    access_request = access.get_request_for_user(request.user, pk)
    return act(
        request,
        access_request,
        lambda: flow.retry(access_request, request.user, request),
        "Provisioning will be tried again.",
    )


@login_required
@require_GET
@vary_on_headers("HX-Request")
def approval_queue(request: AuthedRequest) -> HttpResponse:
    access.require(access.roles_for(request.user).is_approver, "Only approvers have a queue.")
    found = listing.read(request, tuple(QUEUE_FILTERS), QUEUE_SORTS)

    def build() -> QuerySet[AccessRequest]:
        return listing.ordered(listing.apply(access.approval_queue_for(request.user), found, QUEUE_FILTERS), found)

    page = paginate(request, queue.queue_ids(request.user, found, build))
    context = {
        "page": page,
        "rows": queue.render_rows(queue.rows_for(page.object_list), get_token(request)),
        "listing": found,
        "registries": _registry_names(),
        "extra_query": found.query,
    }
    template = "accessreq/queue_rows.html" if wants_fragment(request) else "accessreq/queue.html"
    return render(request, template, context)



@login_required
@require_POST
def request_decide(request: AuthedRequest, pk: int) -> HttpResponse:
    access_request = access.get_request_for_user(request.user, pk)
    decision = request.POST.get("decision")
    comment = request.POST.get("comment", "")
    error, status = "", 200
    try:
        if decision == "approve":
            flow.approve(access_request, request.user, comment, request)
        elif decision == "reject":
            flow.reject(access_request, request.user, comment, request)
        else:
            error, status = "Choose approve or reject.", 400
    except DomainError as exc:
        error, status = str(exc), status_for(exc)
    if request.htmx:
        # The row again, with the refusal in it, where the approver is looking. A 200, so htmx swaps it and the
        # browser logs no failed request; the refusal's own status travels in a header for anyone who asks.
        row = queue.render_rows(
            queue.rows_for([pk]), get_token(request), error=error, decided=not error, comment=comment
        )
        response = HttpResponse(row)
        response["HX-Reswap"] = "outerHTML"
        if error:
            response["X-Refused-Status"] = str(status)
        return response
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Your decision on request #{pk} is recorded.")
    back_to_queue = request.POST.get("next") == "queue"
    return redirect(reverse("approval_queue") if back_to_queue else access_request.get_absolute_url())


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
@rate_limited("reveal")
def reveal(request: AuthedRequest, pk: int) -> HttpResponse:
    if request.method == "GET":
        access_request = access.get_request_for_user(request.user, pk)
        return reveal_is_a_button(request, access_request.get_absolute_url(), f"request #{pk}")
    slot = access.first_slot_for_requester(request.user, pk)
    return render_reveal(request, slot, reverse("request_detail", args=[pk]), f"Back to request #{pk}")


def reveal_is_a_button(request: AuthedRequest, page_url: str, page_name: str) -> HttpResponse:
    """A reveal address opened by a reload, a bookmark or a shared link: revealing is a button, never a visit, so
    that nothing but a deliberate press shows the password. Still a 405 (only POST reveals), but one that says so."""
    context = {"page_url": page_url, "page_name": page_name}
    response = render(request, "accessreq/reveal_get.html", context, status=405)
    response["Allow"] = "POST"
    return response


def render_reveal(request: AuthedRequest, slot: PasswordSlot, back_url: str, back_label: str) -> HttpResponse:
    """The one response that shows a password, never cached; or, when it cannot be shown, why (410)."""
    back = {"back_url": back_url, "back_label": back_label}
    try:
        revealed = slots.reveal(slot, request.user, request)
    except Gone as exc:
        manages = access.can_manage(slot.token, request.user)
        refused = {"slot": slot, "reason": str(exc), "revealed_at": exc.revealed_at, "manages": manages, **back}
        return render(request, "accessreq/reveal_refused.html", refused, status=410)
    regenerated = slot.generation > 1 or slot.token.last_rotated_at is not None
    context: dict[str, object] = {"revealed": revealed, "slot": slot, "regenerated": regenerated, **back}
    response = render(request, "accessreq/reveal.html", context)
    response["Cache-Control"] = "no-store, no-cache, must-revalidate, private, max-age=0"
    response["Pragma"] = "no-cache"
    return response


@login_required
@require_POST
def new_password(request: AuthedRequest, pk: int) -> HttpResponse:
    slot = access.first_slot_for_requester(request.user, pk)
    return act(
        request,
        reverse("request_detail", args=[pk]),
        lambda: slots.request_new_password(slot, request.user, request),
        "A new password is being generated. This page shows when it is ready.",
    )
