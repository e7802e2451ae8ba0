"""Passwords no person sees: a token's new password written to its Key Vault secret, automatic rotation by the
token's policy, and, for tokens revealed once, where the requester says they stored it.

A rotation fills the free slot, proves it at the registry, writes it as the secret's new version and only then gives
the old slot a deadline (`KEY_VAULT_ROTATION_GRACE_HOURS`), after which `finish-rotations` deletes it. Until the new
version is in the vault nothing about the old password changes, so the vault's current version always works; a
failure leaves it in place and tells the token's owner and security.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from accessreq import access, acr, audit, keyvault, notify
from accessreq.errors import Conflict, Invalid
from accessreq.models import (
    SLOTS_IN_USE,
    KeyVaultDelivery,
    PasswordSlot,
    SlotStatus,
    StorageLocation,
    Token,
    TokenStatus,
)

log = logging.getLogger(__name__)
MAX_LOCATION = 500
RETRY_AFTER_FAILURE = timedelta(days=1)


def tags_for(token: Token) -> dict[str, str]:
    """What a reader of the secret needs to use it, and where to find the token."""
    return {
        "acr-token": token.name,
        "acr-username": token.name,
        "acr-registry": token.registry.name,
        "acr-login-server": token.registry.login_server,
        "acr-portal": f"{settings.SITE_URL}{token.get_absolute_url()}",
    }


def next_rotation(target: KeyVaultDelivery, created_at: datetime, expires_at: datetime | None) -> datetime | None:
    if target.rotate_every_days:
        return created_at + timedelta(days=target.rotate_every_days)
    if expires_at is not None and target.rotate_before_expiry_days:
        return expires_at - timedelta(days=target.rotate_before_expiry_days)
    return None


def deliver(slot: PasswordSlot, target: KeyVaultDelivery, password: str, expires_at: datetime,
            proof: dict[str, object] | None, claim: str, then: Callable[[], None] | None = None) -> bool:  # fmt: skip
    """The worker's last step for a delivered token's slot: write the password, never seal it. Vault errors come out
    as acr's (transient: retried; others: the request or the slot fails with the reason, for an admin to retry).
    `then` runs inside the transaction that records the delivery, after it."""
    token = slot.token
    others = PasswordSlot.objects.filter(token=token, status=SlotStatus.DELIVERED).exclude(pk=slot.pk)
    if proof is not None and not proof["ok"] and others.exists():
        why = proof.get("error") or "see the proof on the token page"
        raise acr.AcrError(
            f"The new password in {slot.name} did not work as approved at the registry ({why}); the previous "
            "password stays in the vault."
        )
    if not PasswordSlot.objects.filter(pk=slot.pk, status=SlotStatus.GENERATING, claim_token=claim).exists():
        return False  # taken over meanwhile: never write a version the registry may no longer accept
    try:
        written = keyvault.write_password(
            target.vault_url, target.secret_name, password, expires_on=expires_at, tags=tags_for(token)
        )
    except keyvault.TransientError as exc:
        raise acr.TransientError(f"Key Vault: {exc}") from exc
    except keyvault.KeyVaultError as exc:
        raise acr.AcrError(f"Key Vault: {exc}") from exc
    now = timezone.now()
    rotation = others.exists()
    with transaction.atomic():
        moved = PasswordSlot.objects.filter(pk=slot.pk, status=SlotStatus.GENERATING, claim_token=claim).update(
            claimed_at=None,
            claim_token="",
            status=SlotStatus.DELIVERED,
            created_at=now,
            expires_at=expires_at,
            reveal_by=None,
            revealed_at=None,
            revealed_by=None,
            retire_after=None,
            generation=F("generation") + 1,
            failure_reason="",
        )
        if moved != 1:
            # Taken over by another run (this worker was thought dead): the vault holds that run's version.
            return False
        grace_end = now + timedelta(hours=settings.KEY_VAULT_ROTATION_GRACE_HOURS)
        old = list(others.filter(retire_after__isnull=True).values_list("name", flat=True))
        others.filter(retire_after__isnull=True).update(retire_after=grace_end)
        KeyVaultDelivery.objects.filter(pk=target.pk).update(
            secret_id=written.id,
            secret_version=written.version,
            delivered_at=now,
            next_rotation_at=next_rotation(target, now, expires_at),
            rotation_started_at=None,
            rotations=F("rotations") + (1 if rotation else 0),
            last_failure="",
        )
        details: dict[str, object] = {
            "slot": slot.name,
            "vault": target.vault_url,
            "secret_name": target.secret_name,
            "version": written.version,
            "expires_at": expires_at.isoformat(),
        }
        if old:
            details["old_slots"] = old
            details["old_valid_until"] = grace_end.isoformat()
        if proof is not None:
            Token.objects.filter(pk=token.pk).update(verification=proof, verified_ok=proof["ok"])
            details["verified"] = proof["ok"]
        if rotation:
            Token.objects.filter(pk=token.pk).update(last_rotated_at=now)
        audit.record("password.delivered", actor=None, target=slot, details=details)
        if then is not None:
            then()
    return True


def failed(slot: PasswordSlot, reason: str) -> None:
    """A delivered token's new password could not be made or written: the old one stays; owner and security hear."""
    target = KeyVaultDelivery.objects.filter(token_id=slot.token_id).first()
    if target is None:
        return
    # The job tries again in a day (an admin can retry the slot sooner); the old password works meanwhile.
    KeyVaultDelivery.objects.filter(pk=target.pk).update(
        rotation_started_at=None, last_failure=reason[:2000], next_rotation_at=timezone.now() + RETRY_AFTER_FAILURE
    )
    token = slot.token
    security = access.security_emails()
    transaction.on_commit(lambda: notify.delivery_failed(token, target.destination, reason, security))


def refused_reveal_message(slot: PasswordSlot) -> str | None:
    target = KeyVaultDelivery.objects.filter(token_id=slot.token_id).first()
    if target is None:
        return None
    return (
        f"This password was delivered to Key Vault {target.vault_url}, secret {target.secret_name}; "
        "nobody can reveal it. Read it from the vault."
    )


# --- automatic rotation --------------------------------------------------------------------------------------------


def rotate(
    token: Token, user: User | None, request: HttpRequest | None, reason: str, password_days: int | None = None
) -> PasswordSlot:
    """Fill the free slot for a delivered token; the worker proves it, writes the new version, and only then does
    the old slot get its grace period. Raises Conflict when a rotation is already under way. `password_days` is the
    new password's lifetime when its owner asked for one; without it, the token's own."""
    from accessreq import slots  # slots imports this module

    now = timezone.now()
    with transaction.atomic():
        token = Token.objects.select_for_update().select_related("registry").get(pk=token.pk)
        if token.status != TokenStatus.ACTIVE:
            raise Conflict("Only an active token can be rotated.")
        current = {s.name: s for s in PasswordSlot.objects.select_for_update().filter(token=token)}
        in_use = [s for s in current.values() if s.status in SLOTS_IN_USE]
        if any(s.status != SlotStatus.DELIVERED for s in in_use) or len(in_use) > 1:
            raise Conflict("A rotation is already under way: the previous password is still within its grace period.")
        free = next(name for name in acr.SLOTS if name not in current or current[name].status not in SLOTS_IN_USE)
        new = slots.start_fresh(token, free, user, password_days)
        KeyVaultDelivery.objects.filter(token=token).update(rotation_started_at=now)
        audit.record(
            "token.rotation_started",
            actor=user,
            target=token,
            details={
                "new_slot": free,
                "old_slots": [s.name for s in in_use],
                "reason": reason,
                "password_days": password_days or token.password_days,
            },
            request=request,
        )
    return new


def rotate_due() -> int:
    """The job: start the rotation of every delivered token whose policy says it is time."""
    now = timezone.now()
    due = KeyVaultDelivery.objects.filter(
        token__status=TokenStatus.ACTIVE, next_rotation_at__lte=now, rotation_started_at__isnull=True
    ).select_related("token")
    started = 0
    for target in due:
        if target.token is None:  # the filter on token__status keeps this from happening
            continue
        try:
            rotate(target.token, None, None, f"due by policy ({target.policy})")
        except Conflict as exc:
            log.info("token %s: rotation not started: %s", target.token_id, exc)
            continue
        started += 1
    return started


# --- where a revealed password went ----------------------------------------------------------------------------------


def record_storage(token: Token, user: User, location: str, request: HttpRequest | None) -> None:
    """The requester says where they stored the password they revealed: a vault, a variable group, a URL."""
    access.require(
        access.can_record_storage(token, user), "Only the person who revealed the password can say where it is stored."
    )
    if KeyVaultDelivery.objects.filter(token=token).exists():
        raise Conflict("This token's password is delivered to Key Vault; its location is known.")
    location = " ".join((location or "").split())
    if not location:
        raise Invalid("Say where you stored the password: a vault, a CI variable group, a URL.", field="location")
    if len(location) > MAX_LOCATION:
        raise Invalid(f"Keep it to {MAX_LOCATION} characters.", field="location")
    with transaction.atomic():
        StorageLocation.objects.update_or_create(
            token=token, defaults={"location": location, "recorded_by": user, "recorded_at": timezone.now()}
        )
        audit.record("token.storage_recorded", actor=user, target=token, details={"location": location},
                     request=request)  # fmt: skip

