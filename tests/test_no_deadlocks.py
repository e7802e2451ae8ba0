"""No deadlocks: two approvers approve many requests in parallel, in opposite orders, while a worker provisions them.

PostgreSQL only: SQLite serializes every writing transaction, so it cannot deadlock and the test would prove nothing.
The lock order every transaction keeps is written beside the audit lock (`accessreq.audit._lock_chain`).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accessreq import flow
from accessreq.models import AccessRequest, RequestStatus
from accessreq.scopes import Rule
from tests.conftest import race, wait_until

REQUESTS = 30


@pytest.mark.django_db(transaction=True)
def test_parallel_approvals_against_a_provisioning_worker_see_no_error(
    registry, requester, approver, second_approver, celery_worker, settings
) -> None:
    if connection.vendor != "postgresql":
        reason = f"deadlocks need PostgreSQL; DATABASE_URL is {connection.vendor}"
        print(reason)
        pytest.skip(reason)
    settings.PROVISIONING_RETRY_SECONDS = 0.05
    filed = [
        flow.submit(
            requester,
            registry=registry,
            rules=[Rule("myapp/api", ("content/read", "content/write"))],  # a write: both approvers must agree
            purpose=f"Parallel approval number {i} of the deadlock test.",
            client_kind="ci",
            owner=requester.username,
            team="Payments",
            password_days=30,
            retire_on=timezone.localdate() + timedelta(days=30),
        )
        for i in range(REQUESTS)
    ]

    def approve_all(user: object, order: list[AccessRequest]) -> list[Exception]:
        errors = []
        for req in order:
            try:
                flow.approve(req, user, "", None)
            except Exception as exc:  # noqa: BLE001 - every error is the finding
                errors.append(exc)
        return errors

    outcomes = race(lambda: approve_all(approver, filed), lambda: approve_all(second_approver, filed[::-1]))
    assert outcomes == [[], []]
    ids = [r.pk for r in filed]

    def all_ready() -> bool:
        return AccessRequest.objects.filter(pk__in=ids, status=RequestStatus.READY).count() == REQUESTS

    wait_until(all_ready, timeout=180)
    # A deadlock victim in the worker would have cost its request an attempt.
    attempts = set(AccessRequest.objects.filter(pk__in=ids).values_list("provision_attempts", flat=True))
    assert attempts == {1}
