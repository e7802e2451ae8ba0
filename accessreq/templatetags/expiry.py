"""`{% expiry_badge when %}` / `{% expiry_badge when "retires" %}`: the date with its state beside it, amber when
it comes within the first reminder's days, red once it has passed."""

from __future__ import annotations

from datetime import date, datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accessreq import expiry

register = template.Library()


@register.simple_tag
def expiry_badge(when: date | datetime | None, verb: str = "expires") -> SafeString | str:
    found = expiry.state(when, verb)
    if found is None or when is None:
        return ""
    words, kind = found
    if isinstance(when, datetime):
        stamp, shown = timezone.localtime(when).isoformat(), f"{timezone.localtime(when):%Y-%m-%d %H:%M}"
    else:
        stamp = shown = f"{when:%Y-%m-%d}"
    return format_html(
        '<time datetime="{}">{}</time> <span class="badge badge-when-{}">{}</span>', stamp, shown, kind, words
    )
