"""Making an approved request real in the registry: its scope map, its token and its first password.

`provision` is safe to run any number of times: names come from the request, every registry call converges to the
approved state, and a password already generated is never generated again. It returns how long to wait before the
next attempt, or None when there is nothing more to do, so the Celery task around it stays a few lines long.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accessreq import acr, audit, enqueue, notify, scopes, slots
from accessreq.models import (
    IN_PROGRESS_REQUEST_STATUSES,
    AccessRequest,
    KeyVaultDelivery,
    PasswordSlot,
    RequestStatus,
    SlotStatus,
    Token,
    TokenStatus,
)

log = logging.getLogger(__name__)


def provision(request_id: int) -> float | None:
    now = timezone.now()
    with transaction.atomic():
        started = AccessRequest.objects.filter(pk=request_id, status__in=IN_PROGRESS_REQUEST_STATUSES).update(
            status=RequestStatus.PROVISIONING, provision_attempts=F("provision_attempts") + 1, updated_at=now
        )
        if started != 1:
            return None  # ready, failed, cancelled or unknown: nothing to do
        req = AccessRequest.objects.select_related("registry", "owner", "requester").get(pk=request_id)
        if req.provision_attempts == 1:
            audit.record("request.provisioning", actor=None, target=req, details={"token": req.token_name})
    try:
        if req.renews_id is not None:
            _apply_change(req)
        else:
            slot = _ensure_in_registry(req)
            if slot.status == SlotStatus.GENERATING:
                slots.generate_slot(slot.pk)
    except acr.TransientError as exc:
        if req.provision_attempts >= settings.PROVISIONING_MAX_ATTEMPTS:
            fail(req, f"Gave up after {req.provision_attempts} attempts. Last error: {exc}")
            return None
        log.warning("request %s: attempt %s failed, will retry: %s", req.pk, req.provision_attempts, exc)
        return acr.retry_delay(req.provision_attempts, exc.retry_after)
    except acr.AcrError as exc:
        fail(req, str(exc))
        return None
    with transaction.atomic():
        ready = AccessRequest.objects.filter(pk=req.pk, status=RequestStatus.PROVISIONING).update(
            status=RequestStatus.READY, failure_reason="", updated_at=timezone.now()
        )
        if ready == 1:
            audit.record("request.ready", actor=None, target=req, details={"attempts": req.provision_attempts})
            transaction.on_commit(lambda: notify.ready(req))
    return None


def _ensure_in_registry(req: AccessRequest) -> PasswordSlot:
    registry = req.registry
    acr.ensure_scope_map(
        registry, req.token_name, req.scope_map_actions, f"{acr.MANAGED_MARKER} (request {req.pk})"
    )
    acr.ensure_token(registry, req.token_name, req.token_name)
    with transaction.atomic():
        token, created = Token.objects.get_or_create(
            request=req,
            defaults={
                "registry": registry,
                "name": req.token_name,
                "scope_map_name": req.token_name,
                "owner": req.owner,
                "team": req.team,
                "requester": req.requester,
                "purpose": req.purpose,
                "client_kind": req.client_kind,
                "rules": req.rules,
                "retire_on": req.retire_on,
                "password_days": req.password_days,
            },
        )
        if created:
            audit.record(
                "token.created",
                actor=None,
                target=token,
                details={"scope_map_actions": req.scope_map_actions, "owner": req.owner.get_username()},
            )
        # A request delivered to Key Vault hands its delivery to the token, which rotates by it from now on.
        KeyVaultDelivery.objects.filter(request=req, token__isnull=True).update(token=token)
        slot, _ = PasswordSlot.objects.get_or_create(
            token=token, name="password1", defaults={"requested_by": req.requester, "queued_at": timezone.now()}
        )
    return slot


def _apply_change(req: AccessRequest) -> None:
    """An approved change to an existing token: its scope map is rewritten in place, its passwords stay."""
    assert req.renews_id is not None  # only a change reaches here
    token = Token.objects.select_related("registry").get(pk=req.renews_id)
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.DISABLED):
        raise acr.Invalid(f"token {token.name} is {token.get_status_display().lower()}; it can no longer change")
    acr.ensure_scope_map(
        token.registry,
        token.scope_map_name,
        req.scope_map_actions,
        f"{acr.MANAGED_MARKER} (request {token.request_id or req.pk})",
    )
    before = {"rules": token.rules, "retire_on": token.retire_on, "password_days": token.password_days}
    after = {"rules": req.rules, "retire_on": req.retire_on, "password_days": req.password_days}
    if before == after and token.drift_actions is None:
        return  # applied by an earlier run of this task
    with transaction.atomic():
        Token.objects.filter(pk=token.pk).update(
            **after, risky=scopes.is_risky(req.rules, token.client_kind), drift_actions=None, drift_seen_at=None
        )
        audit.record(
            "token.changed", actor=None, target=token, details={"request": req.pk, "before": before, "after": after}
        )


def fail(req: AccessRequest, reason: str) -> None:
    with transaction.atomic():
        moved = AccessRequest.objects.filter(pk=req.pk, status__in=IN_PROGRESS_REQUEST_STATUSES).update(
            status=RequestStatus.FAILED, failure_reason=reason[:2000], updated_at=timezone.now()
        )
        if moved == 1:
            audit.record("request.failed", actor=None, target=req, details={"reason": reason[:2000]})
            transaction.on_commit(lambda: notify.failed(req, reason))


def sweep_stuck() -> int:
    """Re-queue requests whose message was lost (a broker restart, a crash between commit and publish)."""
    cutoff = timezone.now() - timedelta(minutes=settings.PROVISIONING_STUCK_MINUTES)
    requeued = 0
    stuck = AccessRequest.objects.filter(status__in=IN_PROGRESS_REQUEST_STATUSES, updated_at__lt=cutoff)
    for pk in stuck.values_list("pk", flat=True):
        with transaction.atomic():
            # Touch first, so the next sweep leaves it alone while this message waits in the queue.
            if AccessRequest.objects.filter(
                pk=pk, status__in=IN_PROGRESS_REQUEST_STATUSES, updated_at__lt=cutoff
            ).update(updated_at=timezone.now()):
                enqueue.provision_request(pk)
                requeued += 1
    return requeued
