"""`{{ rules|describe_rules }}` and `{{ risks|explain_risks }}`: what access means, in plain words (scopes.py)."""

from __future__ import annotations

from collections.abc import Sequence

from django import template

from accessreq import scopes

register = template.Library()


@register.filter
def describe_rules(rules: Sequence[dict] | None) -> list[str]:
    return scopes.describe(rules or [])


@register.filter
def explain_risks(risks: Sequence[str] | None) -> list[tuple[str, str]]:
    return scopes.explain_risks(risks or [])
