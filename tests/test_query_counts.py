"""Lists cost the same number of queries whatever the number of rows behind them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accessreq.models import AccessRequest, ApprovalRequirement

pytestmark = pytest.mark.django_db


def _make_requests(registry, requester, group, count: int) -> None:
    now = timezone.now()
    made = AccessRequest.objects.bulk_create(
        AccessRequest(
            registry=registry,
            requester=requester,
            owner=requester,
            team="Payments",
            purpose="Pull the base image in CI.",
            client_kind="ci",
            rules=[{"repository": f"myapp/svc{i}", "actions": ["content/read", "content/write"]}],
            password_days=30,
            retire_on=now.date() + timedelta(days=30),
            token_name=f"ci-payments-{i}",
            created_at=now - timedelta(minutes=i),
        )
        for i in range(count)
    )
    ApprovalRequirement.objects.bulk_create(
        ApprovalRequirement(request=r, group=group, count=2, repositories=[r.rules[0]["repository"]]) for r in made
    )


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


@pytest.mark.parametrize("url", ["/approvals/", "/requests/", "/requests/?status=pending", "/"])
def test_it_makes_the_same_queries_for_10_and_500_rows(registry, requester, approver, groups, url) -> None:
    client = Client()
    client.force_login(requester if url != "/approvals/" else approver)
    _make_requests(registry, requester, groups["owners"], 10)
    few = _queries(client, url)
    _make_requests(registry, requester, groups["owners"], 490)
    many = _queries(client, url)
    assert few == many, (few, many)
    assert AccessRequest.objects.count() == 500
