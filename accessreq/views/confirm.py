"""Asking first: the page that confirms a destructive action when the browser runs no script.

With the script (`static/confirm.js`), a form marked `data-confirm` opens a dialog and, once confirmed, posts to
the action itself. Without it, the same form posts here, and this page says what will happen and carries the
values typed so far to the action. Nothing changes on this page.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from accessreq import access
from accessreq.models import ApiKey
from accessreq.views.common import AuthedRequest


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    required: bool = False
    placeholder: str = ""


@dataclass(frozen=True)
class Confirm:
    title: str
    detail: str
    button: str
    route: str
    fields: tuple[Field, ...] = ()


TOKEN_ACTIONS = {
    "disable": Confirm(
        "Disable {name}?",
        "Every client using this token stops working at once, until someone enables it again. The owner is told why.",
        "Disable the token",
        "token_disable",
        (Field("reason", "Why?", required=True),),
    ),
    "retire": Confirm(
        "Retire {name}?",
        "It is disabled at once and deleted with its scope map after the grace period. This cannot be undone; "
        "it stays in the history.",
        "Retire the token",
        "token_retire",
        (Field("reason", "Why? (optional)"),),
    ),
    "transfer": Confirm(
        "Hand {name} over?",
        "The new owner becomes accountable for it and gets its reminders; you may lose the right to manage it. "
        "Both of you are told.",
        "Transfer ownership",
        "token_transfer",
        (Field("to", "New owner's username", required=True, placeholder="username"),),
    ),
}
REVOKE_KEY = Confirm(
    "Revoke the API key {name}?",
    "Every script using it is refused from now on. A revoked key cannot be used again; make a new one instead.",
    "Revoke the key",
    "api_key_revoke",
)


def _page(request: AuthedRequest, confirm: Confirm, name: str, action: str, back: str) -> HttpResponse:
    values = {f.name: request.POST.get(f.name, request.GET.get(f.name, "")) for f in confirm.fields}
    context = {
        "title": confirm.title.format(name=name),
        "detail": confirm.detail,
        "button": confirm.button,
        "action": action,
        "fields": [(f, values[f.name]) for f in confirm.fields],
        "back": back,
    }
    return render(request, "accessreq/confirm.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def token_confirm(request: AuthedRequest, pk: int, action: str) -> HttpResponse:
    token = access.get_token_for_user(request.user, pk)
    confirm = TOKEN_ACTIONS.get(action)
    if confirm is None:
        raise Http404("No such action.")
    allowed = access.can_switch(token, request.user) if action == "disable" else access.can_manage(token, request.user)
    access.require(allowed, "You may not do this to this token.")
    return _page(request, confirm, token.name, reverse(confirm.route, args=[pk]), token.get_absolute_url())


@login_required
@require_http_methods(["GET", "POST"])
def api_key_confirm_revoke(request: AuthedRequest, pk: int) -> HttpResponse:
    key = ApiKey.objects.filter(user=request.user, pk=pk).first()
    if key is None:
        raise Http404("No such key.")
    name = f"{key.name} ({key.prefix})"
    return _page(request, REVOKE_KEY, name, reverse("api_key_revoke", args=[pk]), reverse("api_keys"))

