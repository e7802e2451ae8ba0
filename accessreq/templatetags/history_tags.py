"""`{{ event.action|history_label }}`: an audit action as the token page's history says it."""

from __future__ import annotations

from django import template

from accessreq import history

register = template.Library()


@register.filter
def history_label(action: str) -> str:
    return history.label(action)
