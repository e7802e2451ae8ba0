"""Security's tools beside the overview: who can reach a repository, what a token reaches, exports, and the
webhook deliveries."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accessreq import access, alerts, exports, whocan
from accessreq.errors import DomainError, Invalid
from accessreq.models import DeliveryStatus, Registry, Token, WebhookDelivery
from accessreq.views.common import AuthedRequest, paginate


@login_required
@require_GET
def who_can(request: AuthedRequest) -> HttpResponse:
    access.require_security(request.user)
    registries = list(Registry.objects.filter(active=True).order_by("name"))
    name = request.GET.get("registry", "").strip() or (registries[0].name if len(registries) == 1 else "")
    repository = request.GET.get("repository", "").strip()
    context: dict[str, object] = {"registries": registries, "registry_name": name, "repository": repository}
    status = 200
    if name and repository:
        registry = access.registry_named_for_security(request.user, name)
        try:
            grants = whocan.who_can(registry, repository)
        except Invalid as exc:
            context["error"] = exc.errors.get("repository", [str(exc)])[0]
            status = 400
        else:
            context.update(registry=registry, grants=grants, system_maps=whocan.system_scope_maps(registry))
    token_id = request.GET.get("token", "")
    unmanaged_id = request.GET.get("unmanaged", "")
    if token_id.isdigit():
        token = access.get_any_token_for_security(request.user, int(token_id))
        context.update(reach_token=token, reach=whocan.token_reach(token))
    elif unmanaged_id.isdigit():
        unmanaged = access.get_unmanaged_for_security(request.user, int(unmanaged_id))
        context.update(reach_token=unmanaged, reach=whocan.unmanaged_reach(unmanaged))
    return render(request, "accessreq/who_can.html", context, status=status)


@login_required
@require_GET
def export_tokens(request: AuthedRequest) -> HttpResponseBase:
    """The token inventory, every token the portal tracks (optionally of one registry or status)."""
    access.require_security(request.user)
    qs = Token.objects.all()
    if registry := request.GET.get("registry", "").strip():
        qs = qs.filter(registry=access.registry_named_for_security(request.user, registry))
    if status := request.GET.get("status", "").strip():
        qs = qs.filter(status=status)
    try:
        return exports.export_tokens(request.GET.get("format", "csv"), qs)
    except Invalid as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")


@login_required
@require_GET
def export_audit(request: AuthedRequest) -> HttpResponseBase:
    """The audit log over a time range, optionally by action prefix, oldest first."""
    access.require_security(request.user)
    try:
        return exports.export_audit(
            request.GET.get("format", "csv"),
            since=request.GET.get("since"),
            until=request.GET.get("until"),
            action=request.GET.get("action"),
        )
    except Invalid as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")


@login_required
@require_GET
def webhook_deliveries(request: AuthedRequest) -> HttpResponse:
    """Every webhook delivery, newest first, optionally of one status."""
    access.require_security(request.user)
    status = request.GET.get("status", "")
    qs = WebhookDelivery.objects.select_related("endpoint").defer("payload", "endpoint__secret")
    if status:
        if status not in DeliveryStatus.values:
            return HttpResponseBadRequest("Unknown status.", content_type="text/plain; charset=utf-8")
        qs = qs.filter(status=status)
    page = paginate(request, qs.order_by("-created_at", "-id"))
    # Incoming-webhook URLs carry their secret in the path (Slack, Teams): only the host is shown.
    rows = [(d, urlsplit(d.endpoint.url).hostname or "") for d in page.object_list]
    context = {
        "page": page,
        "rows": rows,
        "status": status,
        "statuses": DeliveryStatus.choices,
        "extra_query": urlencode({"status": status}) if status else "",
    }
    return render(request, "accessreq/webhook_deliveries.html", context)


@login_required
@require_POST
def webhook_retry(request: AuthedRequest, pk: int) -> HttpResponse:
    delivery = access.get_delivery_for_security(request.user, pk)
    try:
        alerts.retry_now(delivery, request.user, request)
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Delivery {delivery.pk} ({delivery.event}) is being sent again.")
    return redirect(f"{reverse('webhook_deliveries')}?{urlencode({'status': DeliveryStatus.FAILED})}")
