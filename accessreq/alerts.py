"""Security events beyond e-mail: `raise_(...)` after the audit record queues one signed webhook delivery per
endpoint that wants the event; `deliver` sends it from the worker, with retries and backoff, and logs each attempt.

Events: `password.reveal_refused` (a second reveal attempt), `token.drift_found`, `unmanaged_token.found`,
`review.overdue`, `token.failed_login_burst` (someone holds an old or wrong password).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.utils import timezone

from accessreq import access, audit, enqueue, webhooks
from accessreq.errors import Conflict
from accessreq.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.http import HttpRequest

log = logging.getLogger(__name__)



def _max_attempts() -> int:
    return int(getattr(settings, "WEBHOOK_MAX_ATTEMPTS", 6))


def _first_retry_seconds() -> float:
    return float(getattr(settings, "WEBHOOK_RETRY_SECONDS", 10))


def raise_(
    event: str, summary: str, *, target: models.Model | None = None, details: dict[str, Any] | None = None
) -> int:
    """Queue the event for every active endpoint that wants it, when the surrounding transaction commits.
    Returns how many deliveries were queued; the rows are written in the caller's transaction, so an event that is
    rolled back sends nothing."""
    payload = {
        "event": event,
        "summary": summary,
        "at": timezone.now().isoformat(),
        "target": str(target) if target is not None else "",
        "details": details or {},
    }
    if target is not None and hasattr(target, "get_absolute_url"):
        payload["link"] = f"{settings.SITE_URL}{target.get_absolute_url()}"
    payload = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))  # dates as ISO strings, as audit keeps them
    queued = 0
    for endpoint in WebhookEndpoint.objects.filter(active=True):
        if endpoint.wants(event):
            delivery = WebhookDelivery.objects.create(endpoint=endpoint, event=event, payload=payload)
            enqueue.deliver_webhook(delivery.pk)
            queued += 1
    return queued


def deliver(delivery_id: int) -> float | None:
    """One attempt. Returns the delay before the next attempt when it should be retried, else None."""
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return None
    attempts = delivery.attempts + 1
    started = timezone.now()
    try:
        code = webhooks.post(delivery.endpoint, delivery.pk, delivery.event, delivery.payload)
    except webhooks.Transient as exc:
        last = attempts >= _max_attempts()
        delay = None if last else _first_retry_seconds() * 2 ** (attempts - 1)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            attempts=attempts,
            last_status_code=exc.status,
            last_error=str(exc)[:500],
            status=DeliveryStatus.FAILED if last else DeliveryStatus.PENDING,
            last_attempt_at=started,
            next_attempt_at=None if delay is None else started + timedelta(seconds=delay),
        )
        log.warning("webhook delivery %s attempt %s failed: %s", delivery.pk, attempts, exc)
        return delay
    except webhooks.Permanent as exc:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            attempts=attempts, last_status_code=exc.status, last_error=str(exc)[:500], status=DeliveryStatus.FAILED,
            last_attempt_at=started, next_attempt_at=None,
        )
        log.warning("webhook delivery %s refused: %s", delivery.pk, exc)
        return None
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            attempts=attempts,
            last_status_code=code,
            last_error="",
            status=DeliveryStatus.DELIVERED,
            delivered_at=timezone.now(),
            last_attempt_at=started,
            next_attempt_at=None,
        )
    return None


def retry_now(delivery: WebhookDelivery, user: User, request: HttpRequest | None) -> None:
    """Send a failed delivery once more, now: security's answer to a receiver that was down longer than the
    backoff. One attempt; a transient failure is retried with backoff only while attempts remain."""
    access.require_security(user, "Only security can send a webhook again.")
    with transaction.atomic():
        moved = WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.FAILED).update(
            status=DeliveryStatus.PENDING, next_attempt_at=timezone.now()
        )
        if not moved:
            raise Conflict("Only a failed delivery can be sent again.")
        audit.record(
            "webhook.retried",
            actor=user,
            target=delivery,
            details={"event": delivery.event, "endpoint": delivery.endpoint.name, "attempts": delivery.attempts},
            request=request,
        )
        enqueue.deliver_webhook(delivery.pk)
