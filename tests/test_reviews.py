"""Access reviews: starting one, owners answering, reminders, and the due date applying the outcome."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from accessreq import acr, jobs, reviews
from accessreq.errors import Conflict, Forbidden, Invalid
from accessreq.models import AccessReview, AuditEvent, ReviewItem, ReviewState, Token, TokenStatus
from tests.conftest import login

pytestmark = pytest.mark.django_db


def start(security, registry, **extra) -> AccessReview:
    data = {
        "name": "Q3 production",
        "scope": "registry",
        "registry": registry,
        "due_on": timezone.localdate() + timedelta(days=14),
    }
    data.update(extra)
    return reviews.start(security, **data)


def test_it_makes_one_item_per_live_token_with_a_recommendation(
    ready_request, registry, security, django_capture_on_commit_callbacks
) -> None:
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        review = start(security, registry)
    item = review.items.get()
    token = Token.objects.get(request=ready_request)
    assert item.token == token and item.owner.username == "alice"
    # The password waits to be revealed and has no expiry yet: nothing is expired.
    assert item.recommendation
    assert AuditEvent.objects.filter(action="review.started").exists()
    assert any("alice@example.com" in m.to for m in mail.outbox)


def test_it_recommends_from_what_is_known(ready_request) -> None:
    token = Token.objects.get(request=ready_request)
    token.slots.update(status="revealed", expires_at=timezone.now() - timedelta(days=1))
    assert reviews.recommend(token).startswith("expired passwords")
    token.last_used_at = timezone.now() - timedelta(days=120)  # when usage is known
    assert reviews.recommend(token) == "not used in 90 days: retire"
    Token.objects.filter(pk=token.pk).update(orphaned_at=timezone.now())
    token.refresh_from_db()
    assert reviews.recommend(token).startswith("orphaned")


def test_it_refuses_bad_reviews_and_non_security(registry, security, requester) -> None:
    with pytest.raises(Invalid) as caught:
        reviews.start(security, name="", scope="registry", due_on=timezone.localdate())
    assert set(caught.value.errors) == {"name", "registry", "due_on"}
    with pytest.raises(Forbidden):
        start(requester, registry)


def test_owners_keep_change_or_retire(ready_request, registry, security, requester, approver) -> None:
    review = start(security, registry)
    item = review.items.get()
    alice = login(requester)
    page = alice.get("/reviews/mine")
    assert page.status_code == 200 and item.token.name.encode() in page.content
    assert b"Pull and list tags in the repository myapp/api" in page.content
    assert login(approver).post(f"/reviews/items/{item.pk}/keep", {"justification": "x"}).status_code == 404
    assert alice.post(f"/reviews/items/{item.pk}/keep", {"justification": ""}).status_code == 302
    assert ReviewItem.objects.get(pk=item.pk).decision == ""
    assert alice.post(f"/reviews/items/{item.pk}/keep", {"justification": "CI still pulls it"}).status_code == 302
    item.refresh_from_db()
    assert item.decision == "keep" and item.justification == "CI still pulls it" and item.decided_by == requester
    with pytest.raises(Conflict):
        reviews.keep(item, requester, "again", None)
    # A second review: change opens the prefilled change request.
    second = start(security, registry, name="second")
    change = second.items.get()
    response = alice.post(f"/reviews/items/{change.pk}/change")
    assert response.status_code == 302 and response["Location"] == f"/requests/new?renew={change.token_id}"
    third = start(security, registry, name="third")
    retire = third.items.get()
    assert alice.post(f"/reviews/items/{retire.pk}/retire").status_code == 302
    assert Token.objects.get(pk=retire.token_id).status == TokenStatus.RETIRING
    assert ReviewItem.objects.get(pk=retire.pk).decision == "retire"
    progress = reviews.progress(third)
    assert (progress.total, progress.answered, progress.retired) == (1, 1, 1)


def test_an_unanswered_item_is_disabled_at_the_due_date(
    ready_request, registry, security, django_capture_on_commit_callbacks
) -> None:
    review = start(security, registry, unanswered="disable", recurrence="quarterly")
    token = Token.objects.get(request=ready_request)
    mail.outbox.clear()
    with time_machine.travel(timezone.now() + timedelta(days=8)):
        with django_capture_on_commit_callbacks(execute=True):
            assert jobs.run("remind-reviews") == 1
        assert jobs.run("remind-reviews") == 0  # once per reminder day
        assert jobs.run("close-reviews") == 0  # not due yet
    assert any("Reminder" in m.subject for m in mail.outbox)
    with time_machine.travel(timezone.now() + timedelta(days=15)):
        assert jobs.run("close-reviews") == 1
        token.refresh_from_db()
        assert token.status == TokenStatus.DISABLED
        assert "access review" in token.status_reason
        assert acr.get_token(registry, token.name).status == "disabled"
        item = review.items.get()
        assert item.outcome == "disabled" and item.decision == ""
        review.refresh_from_db()
        assert review.state == ReviewState.CLOSED
        assert AuditEvent.objects.filter(action="review.item_overdue").count() == 1
        assert AuditEvent.objects.filter(action="token.disabled", actor=None).exists()
        # The next quarter's review has started, over the tokens in scope now.
        following = AccessReview.objects.get(previous=review)
        assert following.due_on == reviews._next_due(review.due_on)
        assert 89 <= (following.due_on - review.due_on).days <= 92
        assert following.state == ReviewState.OPEN and following.items.count() == 1
        assert jobs.run("close-reviews") == 0


def test_a_flag_only_review_leaves_the_token_alone(ready_request, registry, security) -> None:
    review = start(security, registry)
    with time_machine.travel(timezone.now() + timedelta(days=15)):
        jobs.run("close-reviews")
    assert Token.objects.get(request=ready_request).status == TokenStatus.ACTIVE
    assert review.items.get().outcome == "flagged"
    review.refresh_from_db()
    assert reviews.progress(review).overdue == 1


def test_security_follows_progress_and_exports_evidence(ready_request, registry, security, requester) -> None:
    client = login(security)
    response = client.post(
        "/reviews/start",
        {
            "name": "All tokens",
            "scope": "all",
            "due_on": (timezone.localdate() + timedelta(days=5)).isoformat(),
            "recurrence": "none",
            "unanswered": "flag",
        },
    )
    review = AccessReview.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/reviews/{review.pk}/"
    assert client.post("/reviews/start", {"name": "", "scope": "team"}).status_code == 400
    page = client.get(f"/reviews/{review.pk}/")
    assert page.status_code == 200 and b"Answered" in page.content
    assert client.get("/reviews/").status_code == 200
    reviews.keep(review.items.get(), requester, "=still needed", None)
    rows = list(
        csv.DictReader(
            io.StringIO(b"".join(client.get(f"/reviews/{review.pk}/export?format=csv").streaming_content).decode())
        )
    )
    assert rows[0]["decision"] == "keep" and rows[0]["justification"] == "'=still needed"
    as_json = json.loads(b"".join(client.get(f"/reviews/{review.pk}/export?format=json").streaming_content))
    assert as_json[0]["decided_by"] == "alice"
    assert login(requester).get(f"/reviews/{review.pk}/").status_code == 403
    assert login(requester).get("/reviews/").status_code == 403
