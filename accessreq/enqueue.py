"""The one seam where domain code hands work to the worker.

Domain modules call these instead of importing `accessreq.tasks` (which imports them): tasks are sent by name, so no
import cycle needs a lazy import. Each is sent when the surrounding transaction commits, never before, so the worker
never reads a row that is not there yet. A broker that is down at that moment does not undo the commit nor turn it
into an error page: the failure is logged and the periodic sweeps send the work again.
"""

from __future__ import annotations

import logging
from functools import partial

from celery import current_app
from django.db import transaction

log = logging.getLogger(__name__)

PROVISION_REQUEST = "accessreq.tasks.provision_request"
GENERATE_PASSWORD = "accessreq.tasks.generate_password"
RECONCILE_REGISTRY = "accessreq.tasks.reconcile_registry"
DELIVER_WEBHOOK = "accessreq.tasks.deliver_webhook"


def _send(name: str, *args: object) -> None:
    current_app.send_task(name, args=args)


def on_commit(name: str, *args: object) -> None:
    # robust: an exception while sending is logged by Django and does not reach the caller, whose change stands.
    transaction.on_commit(partial(_send, name, *args), robust=True)


def provision_request(request_id: int) -> None:
    on_commit(PROVISION_REQUEST, request_id)


def generate_password(slot_id: int) -> None:
    on_commit(GENERATE_PASSWORD, slot_id)


def reconcile_registry(registry_id: int, user_id: int | None) -> None:
    on_commit(RECONCILE_REGISTRY, registry_id, user_id)


def deliver_webhook(delivery_id: int) -> None:
    on_commit(DELIVER_WEBHOOK, delivery_id)
