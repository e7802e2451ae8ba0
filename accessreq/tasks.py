"""Celery tasks: each takes an id (or a job's name), re-reads the database and calls one domain function. No secret
ever passes through a task's arguments or result. Domain code queues these through `accessreq.enqueue`."""

from __future__ import annotations

from celery import shared_task
from celery.app.task import Task

from accessreq import alerts, jobs, provisioning, reconcile, slots
from accessreq.models import Registry


@shared_task(bind=True, max_retries=None)
def provision_request(self: Task, request_id: int) -> None:
    # Attempts are counted in the database, which gives up after PROVISIONING_MAX_ATTEMPTS: hence no max_retries.
    delay = provisioning.provision(request_id)
    if delay is not None:
        raise self.retry(countdown=delay)


@shared_task(bind=True, max_retries=None)
def generate_password(self: Task, slot_id: int) -> None:
    # Likewise: the slot counts its attempts and ends FAILED with the reason when they run out.
    delay = slots.generate(slot_id)
    if delay is not None:
        raise self.retry(countdown=delay)


@shared_task
def reconcile_registry(registry_id: int, user_id: int | None = None) -> None:
    registry = Registry.objects.filter(pk=registry_id, active=True).first()
    if registry is not None:
        reconcile.reconcile(registry, actor_id=user_id)


@shared_task
def run_job(name: str) -> int:
    """A periodic job by its name; beat sends these (see JOB_SCHEDULE in settings)."""
    return jobs.run(name)


@shared_task(bind=True, max_retries=None)
def deliver_webhook(self: Task, delivery_id: int) -> None:
    # The delivery counts its attempts and ends FAILED when they run out (WEBHOOK_MAX_ATTEMPTS).
    delay = alerts.deliver(delivery_id)
    if delay is not None:
        raise self.retry(countdown=delay)
