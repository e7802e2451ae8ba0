"""What every page module shares: the request type, pagination, and the one mapper from domain refusals to pages."""

from __future__ import annotations

from collections.abc import Callable
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


def paginate(request: HttpRequest, queryset: QuerySet[Any] | list[Any], per_page: int | None = None) -> Page[Any]:
    return Paginator(queryset, per_page or settings.PAGE_SIZE).get_page(request.GET.get("page"))


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
