"""Celery tasks: each takes an id, re-reads the database and calls one domain function. No secret ever passes
through a task's arguments or result."""

from __future__ import annotations

from celery import shared_task
from celery.app.task import Task

from accessreq import acr, lifecycle, provisioning
from accessreq.models import Registry


@shared_task(bind=True, max_retries=None)
def provision_request(self: Task, request_id: int) -> None:
    # Attempts are counted in the database, which gives up after PROVISIONING_MAX_ATTEMPTS: hence no max_retries.
    delay = provisioning.provision(request_id)
    if delay is not None:
        raise self.retry(countdown=delay)


@shared_task(bind=True, max_retries=8)
def generate_password(self: Task, slot_id: int) -> None:
    try:
        provisioning.generate_slot(slot_id)
    except acr.TransientError as exc:
        raise self.retry(countdown=provisioning.retry_delay(self.request.retries + 1, exc.retry_after)) from exc


@shared_task
def sweep_stuck() -> int:
    return provisioning.sweep_stuck()


@shared_task
def expire_unrevealed() -> int:
    return provisioning.expire_unrevealed()


@shared_task
def mark_expired() -> int:
    return lifecycle.mark_expired()


@shared_task
def send_reminders() -> int:
    return lifecycle.send_reminders()


@shared_task
def finish_rotations() -> int:
    return lifecycle.finish_rotations()


@shared_task
def retire_due() -> int:
    return lifecycle.retire_due()


@shared_task
def delete_retired() -> int:
    return lifecycle.delete_retired()


@shared_task
def flag_orphans() -> int:
    return lifecycle.flag_orphans()


@shared_task
def reconcile_registry(registry_id: int, user_id: int | None = None) -> None:
    registry = Registry.objects.filter(pk=registry_id, active=True).first()
    if registry is not None:
        lifecycle.reconcile(registry, actor_id=user_id)


@shared_task
def reconcile_registries() -> int:
    # One registry's failure must not stop the others; each is read again on the next run.
    done = 0
    for registry in Registry.objects.filter(active=True):
        try:
            lifecycle.reconcile(registry)
            done += 1
        except acr.AcrError:
            continue
    return done
