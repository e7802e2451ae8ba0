"""Making approved access real in the registry, and handing its password over exactly once.

`provision` is safe to run any number of times: names come from the request, every registry call converges to the
approved state, and a password already generated is never generated again. It returns how long to wait before the
next attempt, or None when there is nothing more to do, so the Celery task around it stays a few lines long.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F, Q
from django.http import HttpRequest
from django.utils import timezone

from accessreq import acr, audit, notify, vault
from accessreq.models import (
    AccessRequest,
    PasswordSlot,
    RequestStatus,
    SealedPassword,
    SlotStatus,
    Token,
    TokenStatus,
)

log = logging.getLogger(__name__)
IN_PROGRESS = [RequestStatus.APPROVED, RequestStatus.PROVISIONING]
# Longer than one generateCredentials call with its polling can take; a claim older than this was abandoned.
GENERATION_LEASE_SECONDS = 300


def retry_delay(attempt: int, retry_after: float | None) -> float:
    backoff = min(settings.CELERY_RETRY_MAX_DELAY, settings.PROVISIONING_RETRY_SECONDS * 2 ** (attempt - 1))
    # Jitter spreads a burst of throttled tasks out instead of sending them back together.
    backoff *= random.uniform(0.75, 1.0)
    return min(settings.CELERY_RETRY_MAX_DELAY, max(backoff, retry_after or 0))


def provision(request_id: int) -> float | None:
    now = timezone.now()
    with transaction.atomic():
        started = AccessRequest.objects.filter(pk=request_id, status__in=IN_PROGRESS).update(
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
                generate_slot(slot.pk)
    except acr.TransientError as exc:
        if req.provision_attempts >= settings.PROVISIONING_MAX_ATTEMPTS:
            fail(req, f"Gave up after {req.provision_attempts} attempts. Last error: {exc}")
            return None
        log.warning("request %s: attempt %s failed, will retry: %s", req.pk, req.provision_attempts, exc)
        return retry_delay(req.provision_attempts, exc.retry_after)
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
        slot, _ = PasswordSlot.objects.get_or_create(
            token=token, name="password1", defaults={"requested_by": req.requester}
        )
    return slot


def _apply_change(req: AccessRequest) -> None:
    """An approved change to an existing token: its scope map is rewritten in place, its passwords stay."""
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
        Token.objects.filter(pk=token.pk).update(**after, drift_actions=None, drift_seen_at=None)
        audit.record("token.changed", actor=None, target=token, details={"request": req.pk, "before": before,
                                                                          "after": after})


def generate_slot(slot_id: int) -> None:
    """Generate a slot's password and seal it for its one reveal. Only a slot marked GENERATING is touched."""
    now = timezone.now()
    lease_expired = now - timedelta(seconds=GENERATION_LEASE_SECONDS)
    claimed = (
        PasswordSlot.objects.filter(pk=slot_id, status=SlotStatus.GENERATING)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=lease_expired))
        .update(claimed_at=now)
    )
    if not claimed:
        return  # generated already, or another worker is generating it right now
    slot = PasswordSlot.objects.select_related("token__registry").get(pk=slot_id)
    token = slot.token
    expires_at = now + timedelta(days=token.password_days)
    try:
        generated = acr.generate_password(token.registry, token.name, slot.name, expires_at)
    except Exception:
        PasswordSlot.objects.filter(pk=slot.pk, claimed_at=now).update(claimed_at=None)  # let a retry claim it
        raise
    now = timezone.now()
    with transaction.atomic():
        moved = PasswordSlot.objects.filter(pk=slot.pk, status=SlotStatus.GENERATING).update(
            claimed_at=None,
            status=SlotStatus.AWAITING_REVEAL,
            created_at=now,
            expires_at=generated.expires_at or expires_at,
            reveal_by=now + timedelta(hours=settings.REVEAL_TTL_HOURS),
            revealed_at=None,
            revealed_by=None,
            generation=F("generation") + 1,
        )
        if moved != 1:
            return
        SealedPassword.objects.update_or_create(slot=slot, defaults={"ciphertext": vault.seal(generated.value)})
        audit.record(
            "password.generated",
            actor=None,
            target=slot,
            details={"slot": slot.name, "expires_at": (generated.expires_at or expires_at).isoformat()},
        )


def fail(req: AccessRequest, reason: str) -> None:
    with transaction.atomic():
        moved = AccessRequest.objects.filter(pk=req.pk, status__in=IN_PROGRESS).update(
            status=RequestStatus.FAILED, failure_reason=reason[:2000], updated_at=timezone.now()
        )
        if moved == 1:
            audit.record("request.failed", actor=None, target=req, details={"reason": reason[:2000]})
            transaction.on_commit(lambda: notify.failed(req, reason))


@dataclass(frozen=True)
class Revealed:
    username: str
    password: str
    login_server: str
    expires_at: datetime | None
    slot: str


class RevealRefused(Exception):
    def __init__(self, message: str, revealed_at: datetime | None = None) -> None:
        super().__init__(message)
        self.revealed_at = revealed_at


def reveal(slot: PasswordSlot, user: AbstractBaseUser, request: HttpRequest | None) -> Revealed:
    """Hand the password over once. The claim is a conditional update: of two simultaneous reveals, one wins."""
    token = slot.token
    if user.pk != slot.requested_by_id:
        raise PermissionDenied("Only the person who asked for this password can reveal it.")
    now = timezone.now()
    with transaction.atomic():
        claimed = PasswordSlot.objects.filter(
            pk=slot.pk, status=SlotStatus.AWAITING_REVEAL, revealed_at__isnull=True, reveal_by__gt=now
        ).update(status=SlotStatus.REVEALED, revealed_at=now, revealed_by=user)
        if claimed == 1:
            sealed = SealedPassword.objects.get(slot_id=slot.pk)
            password = vault.unseal(sealed.ciphertext)
            sealed.delete()
            audit.record("password.revealed", actor=user, target=slot, details={"slot": slot.name}, request=request)
            return Revealed(token.name, password, token.registry.login_server, slot.expires_at, slot.name)
    # A second attempt is a signal worth keeping: someone else may have had the password.
    slot.refresh_from_db()
    with transaction.atomic():
        audit.record(
            "password.reveal_refused",
            actor=user,
            target=slot,
            details={"slot": slot.name, "status": slot.status, "revealed_at": slot.revealed_at},
            request=request,
        )
    if slot.status == SlotStatus.REVEALED:
        raise RevealRefused("This password has already been revealed.", slot.revealed_at)
    if slot.status in (SlotStatus.REVOKING, SlotStatus.REVOKED) or (slot.reveal_by and slot.reveal_by <= now):
        raise RevealRefused("This password was not revealed in time and has been revoked. Ask for a new one.")
    raise RevealRefused("This password is not ready yet.")


def request_new_password(slot: PasswordSlot, user: AbstractBaseUser, request: HttpRequest | None) -> None:
    """After a revoked slot, the requester asks for a fresh password: same approval, new value."""
    from accessreq import tasks

    if user.pk != slot.requested_by_id:
        raise PermissionDenied("Only the person who asked for this password can ask for a new one.")
    with transaction.atomic():
        moved = PasswordSlot.objects.filter(pk=slot.pk, status=SlotStatus.REVOKED).update(
            status=SlotStatus.GENERATING, claimed_at=None
        )
        if moved != 1:
            raise RevealRefused("A new password can be asked for only after the old one was revoked.")
        audit.record("password.requested_again", actor=user, target=slot, details={"slot": slot.name}, request=request)
        tasks.generate_password.delay_on_commit(slot.pk)


def expire_unrevealed() -> int:
    """Revoke passwords nobody revealed in time: first make them unrevealable, then delete the slot in Azure."""
    now = timezone.now()
    for slot_id in PasswordSlot.objects.filter(
        status=SlotStatus.AWAITING_REVEAL, reveal_by__lte=now
    ).values_list("pk", flat=True):
        with transaction.atomic():
            moved = PasswordSlot.objects.filter(pk=slot_id, status=SlotStatus.AWAITING_REVEAL).update(
                status=SlotStatus.REVOKING
            )
            if moved == 1:
                SealedPassword.objects.filter(slot_id=slot_id).delete()
                slot = PasswordSlot.objects.get(pk=slot_id)
                audit.record("password.reveal_expired", actor=None, target=slot, details={"slot": slot.name})
    return remove_pending_slots()


def remove_pending_slots(token: Token | None = None) -> int:
    """Delete in the registry every slot marked for removal. What Azure refuses now is tried again next run."""
    pending = PasswordSlot.objects.filter(status=SlotStatus.REVOKING).select_related("token__registry")
    if token is not None:
        pending = pending.filter(token=token)
    removed = 0
    for slot in pending:
        try:
            acr.delete_password(slot.token.registry, slot.token.name, slot.name)
        except acr.AcrError as exc:
            log.warning("slot %s: deleting it in the registry failed, will retry: %s", slot.pk, exc)
            continue
        with transaction.atomic():
            if PasswordSlot.objects.filter(pk=slot.pk, status=SlotStatus.REVOKING).update(
                status=SlotStatus.REVOKED, retire_after=None
            ):
                audit.record("password.deleted", actor=None, target=slot, details={"slot": slot.name})
                removed += 1
    return removed


def sweep_stuck() -> int:
    """Re-queue work whose message was lost (a broker restart, a crash between commit and publish)."""
    from accessreq import tasks

    cutoff = timezone.now() - timedelta(minutes=settings.PROVISIONING_STUCK_MINUTES)
    requeued = 0
    for pk in AccessRequest.objects.filter(status__in=IN_PROGRESS, updated_at__lt=cutoff).values_list("pk", flat=True):
        # Touch first, so the next sweep leaves it alone while this message waits in the queue.
        if AccessRequest.objects.filter(pk=pk, status__in=IN_PROGRESS, updated_at__lt=cutoff).update(
            updated_at=timezone.now()
        ):
            tasks.provision_request.delay(pk)
            requeued += 1
    return requeued
