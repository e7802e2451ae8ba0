"""What people expect of the everyday pages: plain words beside the raw actions, expiry at a glance, lists they can
search, filter and sort from the URL, a token's own history, and a lifetime to choose when rotating."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accessreq import tokens
from accessreq.errors import Invalid
from accessreq.models import AccessRequest, AuditEvent, PasswordSlot, SlotStatus, Token
from tests.conftest import login, request_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(ready_request) -> Token:
    return ready_request.token


def test_it_says_in_plain_words_what_access_means(
    ready_request, token, requester, approver, second_approver, registry
) -> None:
    alice = login(requester)
    request_page = alice.get(f"/requests/{ready_request.pk}/").content.decode()
    assert "Pull and list tags in myapp/api." in request_page
    assert "Read only" in request_page
    token_page = alice.get(f"/tokens/{token.pk}/").content.decode()
    assert "Pull and list tags in myapp/api." in token_page
    push = {"rules-0-repository": "myapp/*", "rules-0-actions": ["content/read", "content/write"]}
    data = request_data(registry, **push)
    preview = alice.post("/requests/preview", data, HTTP_HX_REQUEST="true").content.decode()
    assert "Pull and push in every repository under myapp/, including ones created later." in preview
    assert "Why it is marked risky" in preview and "change images that others pull" in preview
    assert alice.post("/requests/new", data).status_code == 302
    queue = login(approver).get("/approvals/").content.decode()
    assert "Pull and push in every repository under myapp/" in queue
    assert "covers repositories created later" in queue


def test_it_badges_what_expires_soon_and_what_expired(token, requester) -> None:
    alice = login(requester)
    PasswordSlot.objects.filter(token=token).update(
        status=SlotStatus.REVEALED, expires_at=timezone.now() + timedelta(days=5, hours=1)
    )
    assert "expires in 5 days" in alice.get(f"/tokens/{token.pk}/").content.decode()
    listed = alice.get("/tokens/").content.decode()
    assert "badge-when-soon" in listed and "expires in 5 days" in listed
    home = alice.get("/").content.decode()
    assert "1 password expires" in home and 'href="/tokens/?expiry=soon"' in home
    PasswordSlot.objects.filter(token=token).update(expires_at=timezone.now() - timedelta(hours=1))
    page = alice.get(f"/tokens/{token.pk}/").content.decode()
    assert "badge-when-expired" in page and ">expired<" in page


def test_it_counts_what_expires_soon_for_security(token, security) -> None:
    PasswordSlot.objects.filter(token=token).update(
        status=SlotStatus.REVEALED, expires_at=timezone.now() + timedelta(days=2)
    )
    page = login(security).get("/security/").content.decode()
    assert '<span class="stat">1</span> password expiring and 0 tokens retiring within 14 days' in page


def test_it_filters_and_sorts_tokens_from_the_url(token, requester) -> None:
    alice = login(requester)
    assert token.name in alice.get("/tokens/?repository=myapp/").content.decode()
    assert token.name not in alice.get("/tokens/?repository=shared/").content.decode()
    assert token.name in alice.get(f"/tokens/?registry={token.registry.name}&owner=alice&team=pay").content.decode()
    assert token.name not in alice.get("/tokens/?owner=bob").content.decode()
    assert token.name in alice.get("/tokens/?q=payments+pulls").content.decode()
    for sort in ("attention", "expires", "retires", "name", "owner", "team", "newest", "nonsense;drop"):
        assert alice.get(f"/tokens/?sort={sort}").status_code == 200
    # The filters stay in the page links.
    page = alice.get("/tokens/?repository=myapp/&sort=name").content.decode()
    assert 'value="myapp/"' in page


def test_it_filters_and_sorts_requests_queue_and_audit(ready_request, registry, requester, approver, security) -> None:
    alice = login(requester)
    assert alice.post("/requests/new", request_data(registry, team="Search")).status_code == 302
    pending = AccessRequest.objects.latest("pk")
    mine = alice.get("/requests/?q=search&sort=oldest").content.decode()
    assert f"#{pending.pk}<" in mine and f"#{ready_request.pk}<" not in mine
    assert f"#{pending.pk}<" not in alice.get("/requests/?repository=shared/").content.decode()
    queue = login(approver).get("/approvals/?team=search&risk=read&sort=newest").content.decode()
    assert f"#{pending.pk} " in queue
    assert f"#{pending.pk} " not in login(approver).get("/approvals/?risk=risky").content.decode()
    audit = login(security).get("/audit/?actor=alice&action=request.&sort=oldest").content.decode()
    assert "request.submitted" in audit and "token.created" not in audit
    today = timezone.localdate().isoformat()
    assert "request.submitted" in login(security).get(f"/audit/?since={today}&until={today}").content.decode()
    assert "No events" in login(security).get("/audit/?until=2000-01-01").content.decode()


def test_it_shows_a_tokens_history_to_its_owner(ready_request, token, requester) -> None:
    alice = login(requester)
    assert alice.post(f"/requests/{ready_request.pk}/reveal").status_code == 200
    tokens.disable(token, requester, "leaked in a log", None)
    page = alice.get(f"/tokens/{token.pk}/").content.decode()
    history = page.split('id="events-title"')[1]
    for words in ("asked for it", "approved", "created in the registry", "password revealed", "disabled"):
        assert words in history, words
    assert "leaked in a log" in history
    assert history.index("disabled") < history.index("asked for it")  # newest first


def test_it_rotates_with_a_chosen_lifetime_within_policy(token, requester) -> None:
    PasswordSlot.objects.filter(token=token).update(status=SlotStatus.REVEALED)
    alice = login(requester)
    page = alice.get(f"/tokens/{token.pk}/").content.decode()
    assert 'name="password_days"' in page and f"Default {token.password_days} days" in page
    refused = alice.post(f"/tokens/{token.pk}/rotate", {"password_days": "9999"})
    assert refused.status_code == 400
    assert "at most 90 days" in refused.content.decode() and 'aria-invalid="true"' in refused.content.decode()
    assert not PasswordSlot.objects.filter(token=token, name="password2").exists()
    assert alice.post(f"/tokens/{token.pk}/rotate", {"password_days": "7"}).status_code == 302
    assert PasswordSlot.objects.get(token=token, name="password2").lifetime_days == 7
    assert AuditEvent.objects.get(action="token.rotated").details["password_days"] == 7


def test_rotate_checks_the_lifetime_itself(token, requester) -> None:
    PasswordSlot.objects.filter(token=token).update(status=SlotStatus.REVEALED)
    with pytest.raises(Invalid) as refused:
        tokens.rotate(token, requester, None, password_days=0)
    assert list(refused.value.errors) == ["password_days"]
    slot = tokens.rotate(token, requester, None)
    assert slot.lifetime_days is None  # the token's own


def test_it_offers_every_sort_and_says_when_filters_hide_everything(token, requester) -> None:
    alice = login(requester)
    page = alice.get("/tokens/?sort=name").content.decode()
    assert '<option value="name" selected>Name</option>' in page
    assert '<option value="expires" >Next password expiry</option>' in page
    assert "No tokens match these filters." in alice.get("/tokens/?owner=nobody").content.decode()
    requests = alice.get("/requests/").content.decode()
    assert '<option value="newest" selected>Newest first</option>' in requests


def test_it_counts_a_long_list_only_a_little_past_the_page(registry, requester, settings, monkeypatch) -> None:
    from accessreq.views import common

    settings.PAGE_SIZE = 2
    monkeypatch.setattr(common, "COUNT_AHEAD", 2)
    now = timezone.now()
    AccessRequest.objects.bulk_create(
        AccessRequest(
            registry=registry, requester=requester, owner=requester, team="t", purpose="Counting.", client_kind="ci",
            rules=[{"repository": f"myapp/svc{i}", "actions": ["content/read"]}], password_days=30,
            retire_on=now.date() + timedelta(days=30), token_name=f"count-{i}", created_at=now - timedelta(minutes=i),
        )
        for i in range(10)
    )
    alice = login(requester)
    first = alice.get("/requests/").content.decode()
    assert "Page 1 of 2 or more" in first and "page=2" in first
    fourth = alice.get("/requests/?page=4").content.decode()
    assert "Page 4 of 5<" in fourth and "count-7" in fourth
    assert "Page 5 of 5<" in alice.get("/requests/?page=9").content.decode()
