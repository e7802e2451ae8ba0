"""Search, filter and sort for every list page, from the URL's query, so a filtered list can be bookmarked and shared.

Each list names its filters and its sort orders; anything else in the URL is ignored, and a sort is only ever one of
the whitelisted orderings, never a column name taken from the request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest

MAX_SEARCH = 100


@dataclass
class Listing:
    """The chosen filters (only those the page knows, trimmed), the chosen sort, and the query for page links."""

    values: dict[str, str] = field(default_factory=dict)
    sort: str = ""
    sorts: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def query(self) -> str:
        kept = {k: v for k, v in self.values.items() if v}
        if self.sort and self.sort != next(iter(self.sorts), ""):
            kept["sort"] = self.sort
        return urlencode(kept)

    @property
    def sort_choices(self) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in self.sorts.items()]

    @property
    def active(self) -> bool:
        return any(self.values.values())

    def __getitem__(self, name: str) -> str:
        # Templates look names up as keys first: only the filters answer, so `listing.sort` is the attribute.
        if name not in self.values:
            raise KeyError(name)
        return self.values[name]


def read(request: HttpRequest, names: tuple[str, ...], sorts: Mapping[str, tuple[str, tuple[Any, ...]]]) -> Listing:
    values = {name: request.GET.get(name, "").strip()[:MAX_SEARCH] for name in names}
    sort = request.GET.get("sort", "")
    if sort not in sorts:
        sort = next(iter(sorts), "")
    return Listing(values=values, sort=sort, sorts=sorts)


def ordered(qs: QuerySet[Any], listing: Listing) -> QuerySet[Any]:
    if not listing.sort:
        return qs
    return qs.order_by(*listing.sorts[listing.sort][1])


def with_rules_text(qs: QuerySet[Any]) -> QuerySet[Any]:
    """The rules as text, so a repository can be searched in them on any database."""
    return qs.annotate(rules_text=Cast("rules", TextField()))


def search(qs: QuerySet[Any], text: str, fields: tuple[str, ...]) -> QuerySet[Any]:
    """Every word must match one of the fields."""
    for word in text.split()[:5]:
        match = Q()
        for name in fields:
            match |= Q(**{f"{name}__icontains": word})
        qs = qs.filter(match)
    return qs


Narrow = Callable[[QuerySet[Any], str], QuerySet[Any]]


def apply(qs: QuerySet[Any], listing: Listing, filters: Mapping[str, Narrow]) -> QuerySet[Any]:
    for name, narrow in filters.items():
        if value := listing.values.get(name, ""):
            qs = narrow(qs, value)
    return qs
