"""Access review pages: security starts reviews and follows their progress; owners answer for their tokens."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.views.decorators.http import require_GET, require_POST

from accessreq import access, exports, reviews
from accessreq.errors import DomainError, Invalid
from accessreq.models import (
    AccessReview,
    Registry,
    ReviewRecurrence,
    ReviewScope,
    ReviewState,
    UnansweredOutcome,
)
from accessreq.views.common import AuthedRequest, act, paginate


def _list_page(request: AuthedRequest, errors: dict[str, list[str]] | None = None) -> HttpResponse:
    page = paginate(request, AccessReview.objects.select_related("registry"))
    context = {
        "page": page,
        "rows": [(r, reviews.progress(r)) for r in page.object_list],
        "errors": errors or {},
        "form": request.POST if errors else {},
        "registries": Registry.objects.filter(active=True),
        "scopes": ReviewScope.choices,
        "recurrences": ReviewRecurrence.choices,
        "outcomes": UnansweredOutcome.choices,
        "default_due": timezone.localdate() + timedelta(days=30),
    }
    return render(request, "accessreq/reviews.html", context, status=400 if errors else 200)


@login_required
@require_GET
def review_list(request: AuthedRequest) -> HttpResponse:
    access.require_security(request.user)
    return _list_page(request)


@login_required
@require_POST
def review_start(request: AuthedRequest) -> HttpResponse:
    access.require_security(request.user)
    data = request.POST
    raw = data.get("registry", "")
    registry = Registry.objects.filter(pk=int(raw), active=True).first() if raw.isdigit() else None
    try:
        review = reviews.start(
            request.user,
            name=data.get("name", ""),
            scope=data.get("scope", ""),
            registry=registry,
            team=data.get("team", ""),
            due_on=parse_date(data.get("due_on", "") or ""),
            recurrence=data.get("recurrence", ReviewRecurrence.NONE),
            unanswered=data.get("unanswered", UnansweredOutcome.FLAG),
            request=request,
        )
    except Invalid as exc:
        return _list_page(request, exc.errors)
    messages.success(request, f"“{review.name}” has started with {review.items.count()} tokens.")
    return redirect(review)


@login_required
@require_GET
def review_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    review = access.get_review_for_security(request.user, pk)
    items = review.items.select_related("token__registry", "owner", "decided_by").order_by("decision", "id")
    status = request.GET.get("decision", "")
    if status == "unanswered":
        items = items.filter(decision="")
    elif status:
        items = items.filter(decision=status)
    context = {
        "review": review,
        "progress": reviews.progress(review),
        "page": paginate(request, items, 50),
        "decision": status,
    }
    return render(request, "accessreq/review_detail.html", context)


@login_required
@require_GET
def review_export(request: AuthedRequest, pk: int) -> HttpResponseBase:
    review = access.get_review_for_security(request.user, pk)
    try:
        return exports.export_rows(
            request.GET.get("format", "csv"),
            reviews.RESULT_COLUMNS,
            lambda: reviews.result_rows(review),
            f"review-{review.pk}",
        )
    except Invalid as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")


@login_required
@require_GET
def my_reviews(request: AuthedRequest) -> HttpResponse:
    items = (
        access.review_items_for(request.user)
        .filter(review__state=ReviewState.OPEN)
        .select_related("review", "token__registry", "token__owner")
        .prefetch_related("token__slots")
        .order_by("decision", "review__due_on", "id")
    )
    page = paginate(request, items)
    rows = [
        {
            "item": i,
            "scope": reviews.plain_scope(i.token),
            "age": reviews.age_days(i.token),
            "last_used": getattr(i.token, "last_used_at", None),
        }
        for i in page.object_list
    ]
    return render(request, "accessreq/my_reviews.html", {"page": page, "rows": rows})


@login_required
@require_POST
def item_keep(request: AuthedRequest, pk: int) -> HttpResponse:
    item = access.get_review_item_for_user(request.user, pk)
    justification = request.POST.get("justification", "")
    return act(
        request,
        "my_reviews",
        lambda: reviews.keep(item, request.user, justification, request),
        f"{item.token.name} is kept.",
    )


@login_required
@require_POST
def item_change(request: AuthedRequest, pk: int) -> HttpResponse:
    item = access.get_review_item_for_user(request.user, pk)
    try:
        url = reviews.change(item, request.user, request)
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect("my_reviews")
    messages.info(request, f"Say what should change for {item.token.name}; it is approved like any request.")
    return redirect(url)


@login_required
@require_POST
def item_retire(request: AuthedRequest, pk: int) -> HttpResponse:
    item = access.get_review_item_for_user(request.user, pk)
    return act(
        request,
        "my_reviews",
        lambda: reviews.retire(item, request.user, request),
        f"{item.token.name} is retired: disabled now, deleted after the grace period.",
    )
