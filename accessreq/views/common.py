"""What every page module shares: the request type, pagination, and the one mapper from domain refusals to pages."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django_htmx.middleware import HtmxDetails

if TYPE_CHECKING:
    from django.shortcuts import SupportsGetAbsoluteUrl

from accessreq import acr
from accessreq.errors import Conflict, DomainError, Gone, Invalid


class AuthedRequest(HttpRequest):
    user: User  # login_required guarantees it is not AnonymousUser
    htmx: HtmxDetails


# Rows counted beyond the page asked for. Past this a list says "page 3 of 400 or more" rather than count 500,000
# audit events or 100,000 tokens for every page, which costs more than reading the page.
COUNT_AHEAD = 10_000


class CappedPaginator(Paginator):
    """Counts no further than `limit` rows (a COUNT over a LIMITed subquery), so a page of a huge list costs what
    its offset costs, not what the whole list does. `more` says whether rows lie beyond what was counted."""

    def __init__(self, object_list: QuerySet[Any] | list[Any], per_page: int, limit: int) -> None:
        super().__init__(object_list, per_page)
        self.limit = limit
        self.more = False

    @cached_property
    def count(self) -> int:
        if not isinstance(self.object_list, QuerySet):
            return len(self.object_list)
        # The order matters to the page, not to how many rows there are: without it the database can count the
        # rows a person may see straight from the indexes that find them, instead of sorting every row first.
        counted = self.object_list.order_by()[: self.limit + 1].count()
        self.more = counted > self.limit
        return min(counted, self.limit)


def paginate(request: HttpRequest, queryset: QuerySet[Any] | list[Any], per_page: int | None = None) -> Page[Any]:
    size = per_page or settings.PAGE_SIZE
    try:
        wanted = max(1, int(request.GET.get("page", 1)))
    except ValueError:
        wanted = 1
    # Enough to reach the page asked for and COUNT_AHEAD rows past it, so "Older" always leads somewhere real.
    limit = min(wanted, 1_000_000) * size + COUNT_AHEAD
    return CappedPaginator(queryset, size, limit).get_page(request.GET.get("page"))


def wants_fragment(request: AuthedRequest) -> bool:
    """An htmx request for part of the page. A history restore (the back button after the cache was dropped) asks
    for the whole page, and gets it."""
    return bool(request.htmx) and not request.htmx.history_restore_request


def status_for(exc: DomainError) -> int:
    if isinstance(exc, Invalid):
        return 400
    if isinstance(exc, Gone):
        return 410
    if isinstance(exc, Conflict):
        return 409
    return 400


def act(
    request: AuthedRequest,
    back: SupportsGetAbsoluteUrl | str,
    action: Callable[[], object],
    done: str,
    on_invalid: Callable[[Invalid], HttpResponse] | None = None,
) -> HttpResponse:
    """Run one domain action and go back to a page that says how it went. A refusal becomes a message there, or, for
    bad input, `on_invalid`'s answer (the form again, the error beside its field); a lack of rights (Forbidden) is
    left to Django's 403; anything else is a bug and stays a 500."""
    try:
        action()
    except Invalid as exc:
        if on_invalid is not None:
            return on_invalid(exc)
        messages.error(request, str(exc))
    except DomainError as exc:
        messages.error(request, str(exc))
    except acr.AcrError as exc:
        messages.error(request, f"The registry refused: {exc}")
    else:
        messages.success(request, done)
    return redirect(back)
