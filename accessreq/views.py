from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.db.models import Count, Prefetch, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from accessreq import apikeys, flow, health, provisioning, scopes
from accessreq.forms import NewRequest
from accessreq.models import (
    AccessRequest,
    ApiKey,
    Approval,
    ApprovalRequirement,
    AuditEvent,
    PasswordSlot,
    RequestStatus,
    SlotStatus,
    Token,
    TokenStatus,
)
from accessreq.ratelimit import rate_limited
from accessreq.roles import approval_queue_for, roles_for, visible_requests


class AuthedRequest(HttpRequest):
    user: AbstractBaseUser
    htmx: HtmxDetails


def _paginate(request: HttpRequest, queryset: QuerySet, per_page: int | None = None) -> Page:
    from django.conf import settings

    return Paginator(queryset, per_page or settings.PAGE_SIZE).get_page(request.GET.get("page"))


def _get_request_for_user(request: AuthedRequest, pk: int) -> AccessRequest:
    found = visible_requests(request.user).select_related("registry", "requester", "owner").filter(pk=pk).first()
    if found is None:
        raise Http404("No such request.")
    return found


def _with_related(qs: QuerySet[AccessRequest]) -> QuerySet[AccessRequest]:
    return qs.select_related("registry", "requester", "owner").prefetch_related(
        Prefetch(
            "requirements",
            queryset=ApprovalRequirement.objects.select_related("group").annotate(given=Count("approvals")),
        ),
        Prefetch("approvals", queryset=Approval.objects.select_related("approver")),
    )


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    checks = health.run_checks()
    down = [c.name for c in checks if not c.ok]
    body = {
        "status": "ok" if not down else "down",
        "down": down,
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
    }
    return JsonResponse(body, status=200 if not down else 503)


@login_required
@require_GET
def home(request: AuthedRequest) -> HttpResponse:
    user = request.user
    open_requests = AccessRequest.objects.filter(
        requester=user, status__in=[RequestStatus.PENDING, RequestStatus.APPROVED, RequestStatus.PROVISIONING]
    ).count()
    waiting = approval_queue_for(user).count() if roles_for(user).is_approver else 0
    to_reveal = PasswordSlot.objects.filter(token__requester=user, status=SlotStatus.AWAITING_REVEAL).count()
    tokens = Token.objects.filter(owner=user).count()
    recent = _with_related(AccessRequest.objects.filter(requester=user))[:5]
    context = {
        "open_requests": open_requests,
        "waiting": waiting,
        "to_reveal": to_reveal,
        "tokens": tokens,
        "recent": recent,
    }
    return render(request, "accessreq/home.html", context)


@login_required
@require_GET
def request_list(request: AuthedRequest) -> HttpResponse:
    qs = AccessRequest.objects.filter(Q(requester=request.user) | Q(owner=request.user))
    status = request.GET.get("status", "")
    if status in RequestStatus.values:
        qs = qs.filter(status=status)
    page = _paginate(request, _with_related(qs).order_by("-created_at", "-id"))
    context = {
        "page": page,
        "status": status,
        "statuses": RequestStatus.choices,
        "extra_query": urlencode({"status": status}) if status else "",
    }
    template = "accessreq/request_rows.html" if request.htmx else "accessreq/request_list.html"
    return render(request, template, context)


def _rule_rows(request: AuthedRequest) -> int:
    try:
        current = int(request.POST.get("rules-TOTAL_FORMS", "1"))
    except ValueError:
        current = 1
    return min(max(current, 1), 200)


@login_required
@require_http_methods(["GET", "POST"])
@rate_limited("request")
def request_new(request: AuthedRequest) -> HttpResponse:
    renews = _token_to_change(request)
    base = {"renews": renews}
    if request.method == "GET":
        new = NewRequest(request.user, renews=renews)
        preview = _preview(new) if renews else None
        return render(request, "accessreq/request_new.html", {**base, "new": new, "preview": preview})
    if "add_rule" in request.POST:
        # Works without JavaScript: the form comes back with one more empty rule and nothing is validated yet.
        data = request.POST.copy()
        data["rules-TOTAL_FORMS"] = str(_rule_rows(request) + 1)
        new = NewRequest(request.user, data, renews=renews)
        context = {**base, "new": new, "preview": _preview(new), "adding": True}
        return render(request, "accessreq/request_new.html", context)
    new = NewRequest(request.user, request.POST, renews=renews)
    if not new.is_valid():
        status = 422 if request.htmx else 200
        context = {**base, "new": new, "preview": _preview(new)}
        return render(request, "accessreq/request_new.html", context, status=status)
    created = flow.submit(new.cleaned, new.requirements, request.user, request)
    messages.success(request, f"Request #{created.pk} is filed and waits for approval.")
    return redirect(created)


def _preview(new: NewRequest) -> dict[str, object]:
    """What the request will create, computed from whatever is valid so far."""
    new.is_valid()
    rules = new.merged_rules
    data = getattr(new.form, "cleaned_data", None) or {**new.form.initial}
    client_kind = data.get("client_kind") or "ci"
    actions = scopes.scope_map_actions(rules)
    return {
        "rules": rules,
        "actions": actions,
        "action_count": len(actions),
        "max_actions": scopes.MAX_ACTIONS_PER_SCOPE_MAP,
        "token_name": flow.token_name_for(client_kind, data.get("team") or "team", "N"),
        "requirements": new.requirements,
        "wildcards": [r["repository"] for r in rules if scopes.is_wildcard(r["repository"])],
        "risks": scopes.risks(rules, client_kind),
        "registry": data.get("registry"),
    }


def _token_to_change(request: AuthedRequest) -> Token | None:
    """A renewal or change starts from a token its owner (or security) manages: ?renew=<id>, kept in the form."""
    from accessreq import lifecycle

    raw = request.GET.get("renew") or request.POST.get("renew")
    if not raw:
        return None
    if not raw.isdigit():
        raise Http404("No such token.")
    token = lifecycle.tokens_for(request.user).select_related("registry", "owner").filter(pk=int(raw)).first()
    if token is None:
        raise Http404("No such token.")
    if not lifecycle.can_manage(token, request.user):
        raise PermissionDenied("Only the token's owner or security can ask to change it.")
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.DISABLED):
        raise PermissionDenied("A retired token cannot change.")
    return token


@login_required
@require_POST
def request_preview(request: AuthedRequest) -> HttpResponse:
    new = NewRequest(request.user, request.POST, renews=_token_to_change(request))
    return render(request, "accessreq/preview.html", {"preview": _preview(new)})


def _detail_context(request: AuthedRequest, access_request: AccessRequest) -> dict[str, object]:
    user = request.user
    roles = roles_for(user)
    access_request = _with_related(AccessRequest.objects.filter(pk=access_request.pk)).get()
    token = Token.objects.filter(request=access_request).select_related("registry").prefetch_related("slots").first()
    slots = list(token.slots.all()) if token else []
    decided = {a.approver_id for a in access_request.approvals.all()}
    can_decide = (
        access_request.status == RequestStatus.PENDING
        and user.pk not in decided
        and bool(flow.approvable_requirements(access_request, user))
    )
    return {
        "req": access_request,
        "token": token,
        "slots": slots,
        "state_key": ":".join([access_request.status, *(f"{s.name}={s.status}" for s in slots)]),
        "generating": any(s.status == SlotStatus.GENERATING for s in slots),
        "is_requester": user.pk == access_request.requester_id,
        "can_decide": can_decide,
        "can_cancel": user.pk == access_request.requester_id and access_request.status == RequestStatus.PENDING,
        "can_retry": roles.is_admin and access_request.status == RequestStatus.FAILED,
        "sees_reason": roles.is_admin or roles.is_security,
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
    access_request = _get_request_for_user(request, pk)
    return render(request, "accessreq/request_detail.html", _detail_context(request, access_request))


@never_cache
@login_required
@require_GET
def request_progress(request: AuthedRequest, pk: int) -> HttpResponse:
    access_request = _get_request_for_user(request, pk)
    context = _detail_context(request, access_request)
    if request.GET.get("seen") == context["state_key"]:
        return HttpResponse(status=204)  # htmx swaps nothing, so screen readers hear nothing new
    return render(request, "accessreq/request_status.html", context)


@login_required
@require_POST
def request_cancel(request: AuthedRequest, pk: int) -> HttpResponse:
    access_request = _get_request_for_user(request, pk)
    if request.user.pk != access_request.requester_id:
        raise PermissionDenied("Only the requester can cancel a request.")
    try:
        flow.cancel(access_request, request.user, request)
    except flow.TransitionError as exc:
        messages.error(request, str(exc))
        return redirect(access_request)
    messages.success(request, f"Request #{access_request.pk} is cancelled.")
    return redirect(access_request)


@login_required
@require_POST
def request_retry(request: AuthedRequest, pk: int) -> HttpResponse:
    access_request = _get_request_for_user(request, pk)
    if not roles_for(request.user).is_admin:
        raise PermissionDenied("Only an admin can retry provisioning.")
    try:
        flow.retry(access_request, request.user, request)
    except flow.TransitionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Provisioning will be tried again.")
    return redirect(access_request)


@login_required
@require_GET
def approval_queue(request: AuthedRequest) -> HttpResponse:
    if not roles_for(request.user).is_approver:
        raise PermissionDenied("Only approvers have a queue.")
    page = _paginate(request, _with_related(approval_queue_for(request.user)).order_by("created_at", "id"))
    template = "accessreq/queue_rows.html" if request.htmx else "accessreq/queue.html"
    return render(request, template, {"page": page})


@login_required
@require_POST
def request_decide(request: AuthedRequest, pk: int) -> HttpResponse:
    access_request = _get_request_for_user(request, pk)
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
    except PermissionDenied:
        raise
    except flow.TransitionError as exc:
        error, status = str(exc), 409
    except ValueError as exc:
        error, status = str(exc), 400
    if request.htmx:
        row = _with_related(AccessRequest.objects.filter(pk=pk)).get()
        context = {"req": row, "error": error, "decided": not error, "comment": comment}
        return render(request, "accessreq/queue_row.html", context, status=status)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Your decision on request #{pk} is recorded.")
    back_to_queue = request.POST.get("next") == "queue"
    return redirect(reverse("approval_queue") if back_to_queue else access_request.get_absolute_url())


def _get_slot_for_requester(request: AuthedRequest, pk: int) -> PasswordSlot:
    """The request's first password. Who may see the request but did not ask for it gets a 403; others a 404."""
    access_request = _get_request_for_user(request, pk)
    slot = (
        PasswordSlot.objects.select_related("token__registry", "token__request")
        .filter(token__request=access_request, name="password1")
        .first()
    )
    if slot is None:
        if request.user.pk != access_request.requester_id:
            raise PermissionDenied("Only the requester can reveal this password.")
        raise Http404("This request has no password yet.")
    if request.user.pk != slot.requested_by_id:
        raise PermissionDenied("Only the person who asked for this password can reveal it.")
    return slot


@never_cache
@login_required
@require_POST
@rate_limited("reveal")
def reveal(request: AuthedRequest, pk: int) -> HttpResponse:
    slot = _get_slot_for_requester(request, pk)
    return render_reveal(request, slot, reverse("request_detail", args=[pk]), f"Back to request #{pk}")


def render_reveal(request: AuthedRequest, slot: PasswordSlot, back_url: str, back_label: str) -> HttpResponse:
    """The one response that shows a password, never cached; or, when it cannot be shown, why (410)."""
    back = {"back_url": back_url, "back_label": back_label}
    try:
        revealed = provisioning.reveal(slot, request.user, request)
    except provisioning.RevealRefused as exc:
        context = {"slot": slot, "reason": str(exc), "revealed_at": exc.revealed_at, **back}
        return render(request, "accessreq/reveal_refused.html", context, status=410)
    context = {"revealed": revealed, "regenerated": slot.generation > 1 or slot.token.last_rotated_at, **back}
    response = render(request, "accessreq/reveal.html", context)
    response["Cache-Control"] = "no-store, no-cache, must-revalidate, private, max-age=0"
    response["Pragma"] = "no-cache"
    return response


@login_required
@require_POST
def new_password(request: AuthedRequest, pk: int) -> HttpResponse:
    slot = _get_slot_for_requester(request, pk)
    try:
        provisioning.request_new_password(slot, request.user, request)
    except provisioning.RevealRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "A new password is being generated. This page shows when it is ready.")
    return redirect(slot.token.request)


@login_required
@require_GET
def audit_log(request: AuthedRequest) -> HttpResponse:
    if not roles_for(request.user).is_security:
        raise PermissionDenied("The audit log is for security staff.")
    qs = AuditEvent.objects.order_by("-id")
    action = request.GET.get("action", "")
    if action:
        qs = qs.filter(action__startswith=action)
    page = _paginate(request, qs, per_page=50)
    context = {"page": page, "action": action, "extra_query": urlencode({"action": action}) if action else ""}
    return render(request, "accessreq/audit_log.html", context)


def _api_keys_page(
    request: AuthedRequest, form: apikeys.NewKeyForm, new_key: tuple[ApiKey, str] | None = None
) -> HttpResponse:
    keys = ApiKey.objects.filter(user=request.user).order_by("-created_at", "-id")
    return render(request, "accessreq/api_keys.html", {"keys": keys, "form": form, "new_key": new_key})


# never_cache sends no-store: the page that shows a new key must not be kept by the browser or a proxy.
@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: AuthedRequest) -> HttpResponse:
    if request.method == "GET":
        return _api_keys_page(request, apikeys.NewKeyForm())
    form = apikeys.NewKeyForm(request.POST)
    if not form.is_valid():
        return _api_keys_page(request, form)
    # Rendered rather than redirected: the key exists in plaintext only in this response, never in the session.
    new_key = apikeys.create(request.user, form.cleaned_data["name"], form.cleaned_data["days"], request=request)
    return _api_keys_page(request, apikeys.NewKeyForm(), new_key=new_key)


@login_required
@require_POST
def api_key_revoke(request: AuthedRequest, pk: int) -> HttpResponse:
    key = ApiKey.objects.filter(user=request.user, pk=pk).first()
    if key is None:
        raise Http404("No such key.")
    if apikeys.revoke(key, request.user, request):
        messages.success(request, f"The key {key.name} ({key.prefix}) is revoked.")
    else:
        messages.error(request, f"The key {key.name} ({key.prefix}) was already revoked.")
    return redirect("api_keys")
