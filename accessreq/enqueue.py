"""The one seam where domain code hands work to the worker, through a transactional outbox.

Domain modules call these instead of importing `accessreq.tasks` (which imports them): tasks are sent by name, so no
import cycle needs a lazy import. Each call writes an OutboxMessage in the caller's transaction, so the change and
the intent to act on it commit together or not at all. Once the transaction commits the message is sent at once;
a broker that is down at that moment neither undoes the commit nor turns it into an error page: the message stays
unsent and `relay` (the `relay-outbox` job, every few seconds) sends it when the broker is back. A message may thus be
sent more than once; every task is idempotent.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta

from celery import current_app
from django.db import transaction
from django.utils import timezone

from accessreq.models import OutboxMessage

log = logging.getLogger(__name__)

PROVISION_REQUEST = "accessreq.tasks.provision_request"
GENERATE_PASSWORD = "accessreq.tasks.generate_password"
RECONCILE_REGISTRY = "accessreq.tasks.reconcile_registry"
DELIVER_WEBHOOK = "accessreq.tasks.deliver_webhook"
# The relay leaves messages this young to the sender that wrote them, so one message is not sent twice at once.
RELAY_AFTER = timedelta(seconds=2)
# Sent messages are kept this long, for whoever investigates.
KEEP_SENT = timedelta(days=1)
# After the broker refused a message, this process leaves new ones to the relay for this long instead of making each
# web request wait for a broker that is down (connecting to it can take seconds before it fails).
BREAKER_SECONDS = 10.0
_broker_down_until = 0.0


def _send(message: OutboxMessage) -> bool:
    """Publish one message; True when the broker took it. `retry=False`: a broker that is down fails at once."""
    global _broker_down_until
    try:
        current_app.send_task(message.task, args=message.args, retry=False)
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the message for the relay
        _broker_down_until = time.monotonic() + BREAKER_SECONDS
        log.warning("outbox %s: the broker did not take %s, the relay will send it: %s", message.pk, message.task, exc)
        OutboxMessage.objects.filter(pk=message.pk).update(
            send_attempts=message.send_attempts + 1, last_error=f"{type(exc).__name__}: {exc}"[:500]
        )
        return False
    _broker_down_until = 0.0
    OutboxMessage.objects.filter(pk=message.pk).update(sent_at=timezone.now(), send_attempts=message.send_attempts + 1)
    return True


def _send_after_commit(pk: int) -> None:
    if time.monotonic() < _broker_down_until:
        return  # the broker was down a moment ago: the relay sends it when it is back
    message = OutboxMessage.objects.filter(pk=pk, sent_at__isnull=True).first()
    if message is not None:
        _send(message)


def on_commit(name: str, *args: object) -> None:
    key = f"{name}:{json.dumps(list(args))}"[:200]
    with transaction.atomic():
        if OutboxMessage.objects.filter(key=key, sent_at__isnull=True).exists():
            return  # the same work is already waiting to be sent
        message = OutboxMessage.objects.create(task=name, args=list(args), key=key)
    # robust: whatever happens while sending is logged and does not reach the caller, whose change stands.
    transaction.on_commit(lambda: _send_after_commit(message.pk), robust=True)


def relay(limit: int = 500) -> int:
    """Send what was not sent at commit (the broker was down, or the process died before sending). Stops at the
    first refusal: the broker is still down, the next run tries again. Returns how many were sent."""
    now = timezone.now()
    sent = 0
    pending = OutboxMessage.objects.filter(sent_at__isnull=True, created_at__lt=now - RELAY_AFTER).order_by("id")
    for message in pending[:limit]:
        if not _send(message):
            break
        sent += 1
    OutboxMessage.objects.filter(sent_at__lt=now - KEEP_SENT).delete()
    return sent


def provision_request(request_id: int) -> None:
    on_commit(PROVISION_REQUEST, request_id)


def generate_password(slot_id: int) -> None:
    on_commit(GENERATE_PASSWORD, slot_id)


def reconcile_registry(registry_id: int, user_id: int | None) -> None:
    on_commit(RECONCILE_REGISTRY, registry_id, user_id)


def deliver_webhook(delivery_id: int) -> None:
    on_commit(DELIVER_WEBHOOK, delivery_id)
