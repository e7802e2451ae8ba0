"""Routed approval: owners approve, never the requester; the queue shows what waits for each approver."""

from __future__ import annotations

import importlib
import re

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import PermissionDenied
from django.test import Client

from accessreq import flow, routing
from accessreq.errors import Conflict
from accessreq.models import AccessRequest, ApprovalRule, AuditEvent, RequestStatus
from tests.conftest import PASSWORD, login, make_user, race, request_data

pytestmark = pytest.mark.django_db




def _file(registry, requester, **overrides) -> AccessRequest:
    response = login(requester).post("/requests/new", request_data(registry, **overrides))
    assert response.status_code == 302, response.context and response.context["new"].rule_errors
    return AccessRequest.objects.latest("pk")


WRITE = {"rules-0-actions": ["content/read", "content/write"]}


def test_it_routes_to_the_most_specific_owner(registry, groups) -> None:
    platform = groups["shared"]
    ApprovalRule.objects.create(registry=registry, pattern="myapp/api", group=platform)
    rules = [{"repository": "myapp/api", "actions": ["content/read"]}]
    assert [r.group.name for r in routing.requirements(registry, rules, None)] == ["shared-owners"]
    rules = [{"repository": "myapp/web", "actions": ["content/read"]}]
    assert [r.group.name for r in routing.requirements(registry, rules, None)] == ["myapp-owners"]


def test_it_routes_a_wildcard_to_the_owners_inside_it_too(registry, groups) -> None:
    ApprovalRule.objects.create(registry=registry, pattern="myapp/api", group=groups["shared"])
    rules = [{"repository": "myapp/*", "actions": ["content/read"]}]
    assert sorted(r.group.name for r in routing.requirements(registry, rules, None)) == [
        "myapp-owners",
        "shared-owners",
    ]


def test_it_routes_uncovered_repositories_to_the_admin_group(registry) -> None:
    rules = [{"repository": "other/thing", "actions": ["content/read"]}]
    (req,) = routing.requirements(registry, rules, None)
    assert req.group == registry.admin_group and req.via_admin_group


def test_it_raises_the_count_for_write_per_owner(registry, requester) -> None:
    rules = [
        {"repository": "myapp/api", "actions": ["content/read", "content/write"]},
        {"repository": "other/thing", "actions": ["content/read"]},
    ]
    counts = {r.group.name: r.count for r in routing.requirements(registry, rules, requester)}
    assert counts == {"myapp-owners": 2, "registry-admins": 1}


def test_it_needs_each_owner_groups_approval(registry, requester, approver, groups) -> None:
    dana = make_user("dana", groups["shared"])
    req = _file(
        registry,
        requester,
        **{"rules-TOTAL_FORMS": "2", "rules-1-repository": "shared/sdk", "rules-1-actions": ["content/read"]},
    )
    assert flow.approve(req, approver, "", None) is False
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.PENDING
    assert flow.approve(req, dana, "", None) is True
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.APPROVED


def test_it_needs_distinct_approvers_for_write(registry, requester, approver, second_approver) -> None:
    req = _file(registry, requester, **WRITE)
    bob = login(approver)
    assert bob.post(f"/requests/{req.pk}/decide", {"decision": "approve"}).status_code == 302
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.PENDING
    # The same approver cannot count twice.
    # htmx gets the row with the refusal in it (a 200 it swaps in place), the refusal's status in a header.
    again = bob.post(f"/requests/{req.pk}/decide", {"decision": "approve"}, HTTP_HX_REQUEST="true")
    assert again.status_code == 200 and again["X-Refused-Status"] == "409"
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.PENDING
    login(second_approver).post(f"/requests/{req.pk}/decide", {"decision": "approve"})
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.APPROVED


def test_it_refuses_self_approval_even_in_the_owner_group(registry, approver, second_approver, groups) -> None:
    make_user("erin", groups["owners"])  # so the group still has two others who can approve
    req = _file(registry, approver, owner="bob")  # bob files for repositories his own group owns
    bob = login(approver)
    response = bob.post(f"/requests/{req.pk}/decide", {"decision": "approve"})
    assert response.status_code == 403
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.PENDING
    assert not req.approvals.exists()
    assert req.pk not in [r.pk for r in bob.get("/approvals/").context["page"].object_list]
    with pytest.raises(PermissionDenied):
        flow.approve(req, approver, "", None)


def test_it_shows_the_queue_oldest_first_with_risk(registry, requester, approver, second_approver) -> None:
    first = _file(registry, requester)
    second = _file(registry, requester, **{"rules-0-repository": "myapp/*"}, **WRITE)
    response = login(approver).get("/approvals/")
    assert list(response.context["page"].object_list) == [first.pk, second.pk]
    body = response.content.decode()
    assert "wildcard" in body and "write" in body


def test_it_reads_the_queue_afresh_on_every_view(registry, requester, approver, second_approver, groups) -> None:
    """The queue keeps its id query's SQL between views: what it reads still follows every decision, every new
    request, every change to the approver's groups and every filter."""
    bob = login(approver)

    def queue(query: str = "") -> list[int]:
        return list(bob.get(f"/approvals/{query}").context["page"].object_list)

    make_user("dave", groups["shared"])
    mine = _file(registry, requester)
    shared = _file(registry, requester, **{"rules-0-repository": "shared/base"})
    assert queue() == [mine.pk]
    later = _file(registry, requester, team="Platform")
    assert queue() == [mine.pk, later.pk]
    assert queue("?team=platform") == [later.pk] and queue("?team=payments") == [mine.pk]
    flow.approve(AccessRequest.objects.get(pk=mine.pk), second_approver, "", None)
    assert queue() == [later.pk]
    # Carol is in the same groups as Bob; what she approved leaves her queue, not his.
    write = _file(registry, requester, **WRITE)
    flow.approve(AccessRequest.objects.get(pk=write.pk), second_approver, "", None)
    assert queue() == [later.pk, write.pk]
    assert list(login(second_approver).get("/approvals/").context["page"].object_list) == [later.pk]
    approver.groups.add(groups["shared"])
    assert queue() == [shared.pk, later.pk, write.pk]
    assert queue("?sort=newest") == [write.pk, later.pk, shared.pk]


def test_it_escapes_what_people_typed_in_the_queue_rows(registry, requester, approver) -> None:
    """Every typed value reaches the queue's hand-built rows escaped, once: no markup, and no `&amp;lt;` either."""
    hostile = "<script>alert(\"q\")</script> & 'x'"
    escaped = "&lt;script&gt;alert(&quot;q&quot;)&lt;/script&gt; &amp; &#x27;x&#x27;"
    req = _file(registry, requester, purpose=f"Pulls the base image. {hostile}", team=f"Pay{hostile}")
    AccessRequest.objects.filter(pk=req.pk).update(token_name=f"tok{hostile}")
    bob = login(approver)
    page = bob.get("/approvals/").content.decode()
    row = page[page.index(f'<tr id="queue-row-{req.pk}"') :]
    row = row[: row.index("</tr>")]
    assert f"<code>tok{escaped}</code>" in row
    assert f"Pulls the base image. {escaped}</td>" in row
    assert f"(Pay{escaped})" in row
    assert "<script>" not in row and "&amp;lt;" not in row
    # The row answered in place after a refused decision echoes the comment typed, escaped the same way.
    answered = bob.post(
        f"/requests/{req.pk}/decide", {"comment": hostile, "next": "queue"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert f"Pulls the base image. {escaped}</td>" in answered
    assert f">{escaped}</textarea>" in answered
    assert "<script>" not in answered and "&amp;lt;" not in answered


def test_it_stores_a_requests_risk_and_filters_the_queue_on_it(registry, requester, approver) -> None:
    read = _file(registry, requester)
    wide = _file(registry, requester, **{"rules-0-repository": "myapp/*"})
    assert (read.risky, wide.risky) == (False, True)
    bob = login(approver)
    risky = bob.get("/approvals/?risk=risky")
    assert list(risky.context["page"].object_list) == [wide.pk]
    assert list(bob.get("/approvals/?risk=read").context["page"].object_list) == [read.pk]
    # Rows written before the column existed are backfilled from their rules.
    AccessRequest.objects.update(risky=False)
    importlib.import_module("accessreq.migrations.0017_pages").backfill(django_apps, None)
    assert set(AccessRequest.objects.filter(risky=True).values_list("pk", flat=True)) == {wide.pk}


def test_it_decides_from_the_queue_without_javascript(registry, requester, approver) -> None:
    """The row's plain form carries the page's CSRF value, so a browser without htmx can still decide."""
    req = _file(registry, requester)
    bob = Client(enforce_csrf_checks=True)
    assert bob.login(username=approver.username, password=PASSWORD)
    page = bob.get("/approvals/").content.decode()
    form = page[page.index(f'action="/requests/{req.pk}/decide"') :]
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)[1]
    answer = bob.post(
        f"/requests/{req.pk}/decide", {"csrfmiddlewaretoken": csrf, "decision": "approve", "next": "queue"}
    )
    assert answer.status_code == 302 and answer["Location"] == "/approvals/"
    assert req.approvals.filter(approver=approver).exists()


def test_it_updates_the_queue_row_in_place(registry, requester, approver) -> None:
    req = _file(registry, requester)
    response = login(approver).post(
        f"/requests/{req.pk}/decide", {"decision": "approve", "next": "queue"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert body.strip().startswith(f'<tr id="queue-row-{req.pk}"')
    assert "Your decision is recorded" in body


def test_it_rejects_with_a_comment_and_ends_the_request(
    registry, requester, approver, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    req = _file(registry, requester)
    bob = login(approver)
    refused = bob.post(f"/requests/{req.pk}/decide", {"decision": "reject"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 200 and refused["X-Refused-Status"] == "400"
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.PENDING
    with django_capture_on_commit_callbacks(execute=True):
        bob.post(f"/requests/{req.pk}/decide", {"decision": "reject", "comment": "Use the shared pull token."})
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.REJECTED
    assert "Use the shared pull token." in mailoutbox[-1].body
    assert mailoutbox[-1].to == ["alice@example.com"]


def test_it_lets_the_requester_cancel_until_approved(registry, requester, approver) -> None:
    req = _file(registry, requester)
    alice = login(requester)
    assert login(approver).post(f"/requests/{req.pk}/cancel").status_code == 403
    assert alice.post(f"/requests/{req.pk}/cancel").status_code == 302
    assert AccessRequest.objects.get(pk=req.pk).status == RequestStatus.CANCELLED
    # Approving a cancelled request no longer applies.
    response = login(approver).post(f"/requests/{req.pk}/decide", {"decision": "approve"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["X-Refused-Status"] == "409"


def test_it_hides_requests_from_outsiders(registry, requester, approver, outsider) -> None:
    req = _file(registry, requester)
    olive = login(outsider)
    assert olive.get(f"/requests/{req.pk}/").status_code == 404
    assert olive.get(f"/requests/{req.pk}/status").status_code == 404
    assert olive.post(f"/requests/{req.pk}/decide", {"decision": "approve"}).status_code == 404
    assert olive.post(f"/requests/{req.pk}/cancel").status_code == 404
    assert olive.get("/approvals/").status_code == 403
    assert list(olive.get("/requests/").context["page"].object_list) == []


def test_it_shows_requests_to_their_approvers_and_security(registry, requester, approver, security) -> None:
    req = _file(registry, requester)
    assert login(approver).get(f"/requests/{req.pk}/").status_code == 200
    assert login(security).get(f"/requests/{req.pk}/").status_code == 200


def test_it_rejects_get_on_decide(registry, requester, approver) -> None:
    req = _file(registry, requester)
    assert login(approver).get(f"/requests/{req.pk}/decide").status_code == 405


def test_it_notifies_the_approvers_when_filed(
    registry, requester, approver, second_approver, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        _file(registry, requester)
    assert sorted(mailoutbox[0].to) == ["bob@example.com", "carol@example.com"]
    assert "waits for your approval" in mailoutbox[0].subject


@pytest.mark.django_db(transaction=True)
def test_it_queues_one_provisioning_for_two_simultaneous_approvals(
    registry, requester, approver, second_approver, django_capture_on_commit_callbacks
) -> None:
    req = _file(registry, requester)  # read only: one approval is enough

    def decide(user) -> bool:
        return flow.approve(AccessRequest.objects.get(pk=req.pk), user, "", None)

    outcomes = race(lambda: decide(approver), lambda: decide(second_approver))
    assert sorted(map(type, outcomes), key=str) == sorted([bool, Conflict], key=str)
    assert outcomes.count(True) == 1
    assert AuditEvent.objects.filter(action="request.fully_approved").count() == 1
    assert AccessRequest.objects.get(pk=req.pk).approvals.count() == 1


def test_it_answers_a_status_poll_only_when_something_changed(registry, requester, approver) -> None:
    req = _file(registry, requester)
    alice = login(requester)
    first = alice.get(f"/requests/{req.pk}/status", HTTP_HX_REQUEST="true")
    assert first.status_code == 200 and first.context["state_key"] == "pending"
    assert alice.get(f"/requests/{req.pk}/status?seen=pending").status_code == 204
    login(approver).post(f"/requests/{req.pk}/decide", {"decision": "approve"})
    changed = alice.get(f"/requests/{req.pk}/status?seen=pending")
    assert changed.status_code == 200 and "Approved" in changed.content.decode()
