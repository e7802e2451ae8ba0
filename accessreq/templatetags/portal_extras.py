"""Template helpers for showing the audit log to people: an event's details as readable lines, its target as a link."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import template
from django.urls import reverse

register = template.Library()

# Audit targets that have a page of their own, by the target's model label.
TARGET_PAGES = {"accessreq.accessrequest": "request_detail", "accessreq.token": "token_detail"}
NOTHING = "—"


@dataclass(frozen=True)
class Detail:
    label: str
    lines: list[str]
    empty: bool = False


# Keys that name what a record is about; the rest follow in their stored order.
LEADING = ("repository", "name", "slot", "token", "registry")


def plain(value: Any) -> str:
    """One value as a person reads it: no quotes, brackets or `None`."""
    if value is None:
        return NOTHING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        # PostgreSQL's jsonb keeps keys in an order of its own: put the name of a thing before what is said of it.
        keys = sorted(value, key=lambda key: (key not in LEADING, LEADING.index(key) if key in LEADING else 0))
        return "; ".join(f"{key}: {plain(value[key])}" for key in keys) or NOTHING
    if isinstance(value, list | tuple):
        return ", ".join(plain(item) for item in value) or NOTHING
    return str(value)


def _lines(value: Any) -> list[str]:
    # A list of records (rules, say) shows one record a line; anything else is one line.
    if isinstance(value, list | tuple) and any(isinstance(item, dict | list | tuple) for item in value):
        return [plain(item) for item in value]
    return [plain(value)]


@register.filter
def audit_details(details: Any) -> list[Detail]:
    """An event's details as labelled lines, in the order they were recorded."""
    if not isinstance(details, dict):
        return [] if details in (None, "") else [Detail("details", [plain(details)])]
    return [
        Detail(str(key).replace("_", " "), _lines(value), empty=value is None or value == [] or value == {})
        for key, value in details.items()
    ]


@register.simple_tag
def audit_target_url(event: Any) -> str:
    """The page of an event's target, or "" when it has none."""
    name = TARGET_PAGES.get(getattr(event, "target_type", ""))
    target_id = str(getattr(event, "target_id", ""))
    if name is None or not target_id.isdigit():
        return ""
    return reverse(name, args=[int(target_id)])
