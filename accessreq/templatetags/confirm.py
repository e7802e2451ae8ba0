"""`{% confirm_form "disable" token %}`: the attributes of a form that asks before it acts.

The form posts to the confirmation page (which works without script); `static/confirm.js` reads the data-
attributes, asks in a dialog, and posts to the action itself once confirmed. The words come from one place,
`accessreq.views.confirm`, so the dialog and the page say the same.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accessreq.views.confirm import REVOKE_KEY, TOKEN_ACTIONS, Confirm

register = template.Library()


def _attrs(confirm: Confirm, name: str, page: str, action: str) -> SafeString:
    return format_html(
        'method="post" action="{}" data-confirm="{}" data-confirm-detail="{}" data-confirm-button="{}" '
        'data-confirm-action="{}"',
        page,
        confirm.title.format(name=name),
        confirm.detail,
        confirm.button,
        action,
    )


@register.simple_tag
def confirm_form(action: str, token: Any) -> SafeString:
    confirm = TOKEN_ACTIONS[action]
    page = reverse("token_confirm", args=[token.pk, action])
    return _attrs(confirm, token.name, page, reverse(confirm.route, args=[token.pk]))


@register.simple_tag
def confirm_revoke_key(key: Any) -> SafeString:
    page = reverse("api_key_confirm_revoke", args=[key.pk])
    return _attrs(REVOKE_KEY, f"{key.name} ({key.prefix})", page, reverse("api_key_revoke", args=[key.pk]))
