"""Security's page of webhook deliveries: each one's event, target, status, attempts and next retry, filtered by
status, and "retry now" for a failed one (audited)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from accessreq import alerts
from accessreq.models import AuditEvent, DeliveryStatus, WebhookDelivery
from tests.conftest import login
from tests.test_webhooks import Receiver, endpoint, receiver  # noqa: F401

pytestmark = pytest.mark.django_db
SLACK_URL = "https://hooks.slack.example/services/T000/B000/very-secret-path"


def _delivery(hook, status=DeliveryStatus.FAILED, **extra) -> WebhookDelivery:
    return WebhookDelivery.objects.create(endpoint=hook, event="token.drift_found", payload={}, status=status, **extra)


def test_it_records_when_the_next_attempt_is_due(receiver: Receiver, settings) -> None:  # noqa: F811
    settings.WEBHOOK_RETRY_SECONDS = 30
    receiver.answers = [503]
    delivery = _delivery(endpoint(receiver.url), status=DeliveryStatus.PENDING)
    assert alerts.deliver(delivery.pk) == 30
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.last_status_code == 503
    assert delivery.next_attempt_at - delivery.last_attempt_at == timedelta(seconds=30)
    assert alerts.deliver(delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.next_attempt_at is None


def test_it_lists_and_filters_deliveries_without_showing_the_url_path(security) -> None:
    hook = endpoint(SLACK_URL, kind="slack")
    failed = _delivery(hook, last_status_code=410, last_error="the receiver answered 410", attempts=1)
    _delivery(hook, status=DeliveryStatus.DELIVERED, attempts=2)
    client = login(security)
    page = client.get("/security/webhooks").content.decode()
    assert page.count("token.drift_found") == 2 and "hooks.slack.example" in page
    assert "very-secret-path" not in page and "/services/" not in page
    only_failed = client.get("/security/webhooks?status=failed").content.decode()
    assert "HTTP 410" in only_failed and f"/security/webhooks/{failed.pk}/retry" in only_failed
    assert "Delivered" not in only_failed.split("<tbody>")[1]
    assert client.get("/security/webhooks?status=nonsense").status_code == 400


def test_it_pages_the_deliveries(security, settings) -> None:
    settings.PAGE_SIZE = 5
    hook = endpoint(SLACK_URL)
    for _ in range(12):
        _delivery(hook)
    client = login(security)
    first = client.get("/security/webhooks?status=failed").content.decode()
    assert "Page 1 of 3" in first and "status=failed&amp;page=2" in first
    assert "Page 3 of 3" in client.get("/security/webhooks?status=failed&page=3").content.decode()


def test_it_sends_a_failed_delivery_again_and_audits_it(
    receiver: Receiver, security, django_capture_on_commit_callbacks  # noqa: F811
) -> None:
    delivery = _delivery(endpoint(receiver.url), attempts=6, last_status_code=503)
    client = login(security)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(f"/security/webhooks/{delivery.pk}/retry")
    assert response.status_code == 302 and response["Location"] == "/security/webhooks?status=failed"
    assert len(queued) == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    event = AuditEvent.objects.get(action="webhook.retried")
    assert event.actor == security and event.details["attempts"] == 6
    # What the worker then does with it.
    assert alerts.deliver(delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 7 and len(receiver.received) == 1


def test_it_refuses_to_resend_what_did_not_fail(security, requester) -> None:
    delivery = _delivery(endpoint(SLACK_URL), status=DeliveryStatus.DELIVERED)
    response = login(security).post(f"/security/webhooks/{delivery.pk}/retry", follow=True)
    assert "Only a failed delivery can be sent again." in response.content.decode()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert not AuditEvent.objects.filter(action="webhook.retried").exists()
    assert login(requester).post(f"/security/webhooks/{delivery.pk}/retry").status_code == 403
    assert login(security).post("/security/webhooks/999999/retry").status_code == 404
    assert login(security).get(f"/security/webhooks/{delivery.pk}/retry").status_code == 405
