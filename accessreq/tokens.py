"""What owners and security do to a token after it is made: rotate its password, disable, enable, retire, hand it
over, and the periodic jobs that finish what those start (grace periods, retirement dates, orphans).

Pages, the API, beat and management commands call these same functions. Each checks who may act (access), makes
its change with a conditional update (so a second run or a second click changes nothing) and audits it. Registry
calls come before the database change they justify: when Azure refuses, the portal does not pretend.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accessreq import access, acr, audit, delivery, notify, slots
from accessreq.errors import Conflict, Invalid
from accessreq.models import (
    LIVE_TOKEN_STATUSES,
    SLOTS_IN_USE,
    KeyVaultDelivery,
    PasswordSlot,
    SlotStatus,
    Team,
    Token,
    TokenStatus,
)

log = logging.getLogger(__name__)


def _locked(token: Token) -> Token:
    return Token.objects.select_for_update(of=("self",)).select_related("registry", "owner").get(pk=token.pk)


# --- rotation ------------------------------------------------------------------------------------------------------


def rotate(
    token: Token, user: User, request: HttpRequest | None, password_days: int | None = None
) -> PasswordSlot:
    """Generate the free slot; the old one stays valid until the switch is confirmed or the grace period ends.
    No new approval: scope and dates stay as approved. `password_days` chooses the new password's lifetime within
    the registry's policy; without it, the token's own."""
    access.require(
        access.can_rotate(token, user),
        "Only the token's owner can rotate it: a new password of someone else's token is not yours to reveal. "
        "Disable or retire it, or hand it to a new owner.",
    )
    if password_days is not None:
        check_lifetime(token, password_days)
    if KeyVaultDelivery.objects.filter(token=token).exists():
        return delivery.rotate(token, user, request, "asked for", password_days)
    now = timezone.now()
    with transaction.atomic():
        token = _locked(token)
        if token.status != TokenStatus.ACTIVE:
            raise Conflict("Only an active token can be rotated.")
        current = {s.name: s for s in PasswordSlot.objects.select_for_update().filter(token=token)}
        in_use = [s for s in current.values() if s.status in SLOTS_IN_USE]
        if any(s.status != SlotStatus.REVEALED for s in in_use) or len(in_use) > 1:
            raise Conflict("A rotation is already under way: reveal the new password and confirm the switch first.")
        free = next(name for name in acr.SLOTS if name not in current or current[name].status not in SLOTS_IN_USE)
        grace_end = now + timedelta(days=settings.ROTATION_GRACE_DAYS)
        for old in in_use:
            PasswordSlot.objects.filter(pk=old.pk).update(retire_after=grace_end)
        new = slots.start_fresh(token, free, user, password_days)
        Token.objects.filter(pk=token.pk).update(last_rotated_at=now)
        audit.record(
            "token.rotated",
            actor=user,
            target=token,
            details={
                "new_slot": free,
                "old_slots": [s.name for s in in_use],
                "old_valid_until": grace_end,
                "password_days": password_days or token.password_days,
            },
            request=request,
        )
    return new


def check_lifetime(token: Token, password_days: int) -> None:
    """A rotated password lives from 1 day to the registry's maximum."""
    maximum = token.registry.max_password_days
    if not 1 <= password_days <= maximum:
        raise Invalid(
            f"Choose from 1 to {maximum} days: {token.registry} allows passwords of at most {maximum} days.",
            field="password_days",
        )


def confirm_switch(token: Token, user: User, request: HttpRequest | None) -> list[str]:
    """The clients use the new password: delete the old slot now rather than at the end of the grace period."""
    access.require(access.can_manage(token, user), "Only the token's owner or security can confirm the switch.")
    with transaction.atomic():
        token = _locked(token)
        current = list(PasswordSlot.objects.select_for_update().filter(token=token))
        old = [
            s for s in current if s.retire_after is not None and s.status in (SlotStatus.REVEALED, SlotStatus.EXPIRED)
        ]
        if not old:
            raise Conflict("There is no previous password waiting to be deleted.")
        if not any(s.retire_after is None and s.status == SlotStatus.REVEALED for s in current):
            raise Conflict("Reveal the new password before switching away from the old one.")
        for slot in old:
            slots.start_removal(slot, "switch confirmed", user, request)
    slots.remove_pending(token)
    return [s.name for s in old]


def finish_rotations() -> int:
    """Grace periods that ended: the old slot goes, whether or not the owner confirmed."""
    due = PasswordSlot.objects.filter(
        retire_after__lte=timezone.now(), status__in=[SlotStatus.REVEALED, SlotStatus.EXPIRED, SlotStatus.DELIVERED]
    )
    for slot in due:
        with transaction.atomic():
            slots.start_removal(slot, "rotation grace period ended", None, None)
    return slots.remove_pending()


# --- disable, enable, retire ---------------------------------------------------------------------------------------


def disable(token: Token, user: User | None, reason: str, request: HttpRequest | None) -> bool:
    if user is not None:
        access.require(
            access.can_switch(token, user),
            "Only the owner, an approver of its repositories or security can disable it.",
        )
    reason = reason.strip()
    if not reason:
        raise Invalid("Say why the token is disabled: its owner will read this.", field="reason")
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.DISABLED):
        raise Conflict(f"This token is {token.get_status_display().lower()}.")
    acr.set_token_status(token.registry, token.name, "disabled")
    with transaction.atomic():
        moved = Token.objects.filter(pk=token.pk, status=TokenStatus.ACTIVE).update(
            status=TokenStatus.DISABLED, status_reason=reason[:500]
        )
        if moved:
            audit.record("token.disabled", actor=user, target=token, details={"reason": reason}, request=request)
            transaction.on_commit(lambda: notify.token_changed(token, f"was disabled: {reason}"))
    return bool(moved)


def enable(token: Token, user: User, request: HttpRequest | None) -> bool:
    access.require(
        access.can_switch(token, user), "Only the owner, an approver of its repositories or security can enable it."
    )
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.DISABLED):
        raise Conflict(f"This token is {token.get_status_display().lower()}.")
    acr.set_token_status(token.registry, token.name, "enabled")
    with transaction.atomic():
        moved = Token.objects.filter(pk=token.pk, status=TokenStatus.DISABLED).update(
            status=TokenStatus.ACTIVE, status_reason=""
        )
        if moved:
            audit.record("token.enabled", actor=user, target=token, request=request)
    return bool(moved)


def retire(token: Token, user: User | None, reason: str, request: HttpRequest | None) -> bool:
    """Disable now; delete the token and its scope map when the retirement grace period ends."""
    if user is not None:
        access.require(access.can_manage(token, user), "Only the token's owner or security can retire it.")
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.DISABLED):
        if token.status in (TokenStatus.RETIRING, TokenStatus.RETIRED):
            return False
        raise Conflict(f"This token is {token.get_status_display().lower()}.")
    acr.set_token_status(token.registry, token.name, "disabled")
    delete_after = timezone.now() + timedelta(days=settings.RETIREMENT_GRACE_DAYS)
    with transaction.atomic():
        moved = Token.objects.filter(pk=token.pk, status__in=[TokenStatus.ACTIVE, TokenStatus.DISABLED]).update(
            status=TokenStatus.RETIRING, status_reason=reason[:500], delete_after=delete_after
        )
        if moved:
            audit.record(
                "token.retiring",
                actor=user,
                target=token,
                details={"reason": reason, "delete_after": delete_after},
                request=request,
            )
            transaction.on_commit(lambda: notify.token_changed(token, f"is retired ({reason})"))
    return bool(moved)


def retire_due() -> int:
    """Tokens whose retirement date has come."""
    retired = 0
    for token in Token.objects.filter(
        status__in=[TokenStatus.ACTIVE, TokenStatus.DISABLED], retire_on__lte=timezone.localdate()
    ).select_related("registry"):
        try:
            retired += retire(token, None, "retirement date reached", None)
        except acr.AcrError as exc:
            log.warning("token %s: retiring failed, will retry: %s", token.pk, exc)
    return retired


def delete_retired() -> int:
    """After the grace period: the token, then its scope map (one in use cannot be deleted). History stays."""
    deleted = 0
    for token in Token.objects.filter(status=TokenStatus.RETIRING, delete_after__lte=timezone.now()).select_related(
        "registry"
    ):
        try:
            acr.delete_token(token.registry, token.name)
            if token.request_id is not None:  # an adopted token's scope map was never the portal's
                acr.delete_scope_map(token.registry, token.scope_map_name)
        except acr.AcrError as exc:
            log.warning("token %s: deletion failed, will retry: %s", token.pk, exc)
            continue
        with transaction.atomic():
            if Token.objects.filter(pk=token.pk, status=TokenStatus.RETIRING).update(status=TokenStatus.RETIRED):
                slots.revoke_all(token)
                audit.record("token.retired", actor=None, target=token, details={"deleted_from_registry": True})
                deleted += 1
    return deleted


# --- ownership -----------------------------------------------------------------------------------------------------


def transfer(token: Token, user: User, new_owner_username: str, request: HttpRequest | None) -> None:
    access.require(access.can_manage(token, user), "Only the token's owner or security can hand it over.")
    new_owner = get_user_model().objects.filter(username=new_owner_username.strip(), is_active=True).first()
    if new_owner is None:
        raise Invalid(f"No active user is called {new_owner_username.strip()!r}.", field="to")
    if new_owner.pk == token.owner_id:
        raise Invalid("That person already owns this token.", field="to")
    access.require(
        access.can_transfer_to(token, user, new_owner),
        "Security hands a token to someone else, not to themselves.",
    )
    previous = token.owner
    with transaction.atomic():
        moved = Token.objects.filter(pk=token.pk, owner=previous).update(owner=new_owner, orphaned_at=None)
        if not moved:
            raise Conflict("The owner changed meanwhile; reload the page.")
        audit.record(
            "token.transferred",
            actor=user,
            target=token,
            details={"from": previous.get_username(), "to": new_owner.get_username()},
            request=request,
        )
        transaction.on_commit(lambda: notify.transferred(token, previous, new_owner, user))


def set_let_expire(token: Token, user: User, value: bool, request: HttpRequest | None) -> None:
    access.require(access.can_manage(token, user), "Only the token's owner or security can change its reminders.")
    with transaction.atomic():
        if Token.objects.filter(pk=token.pk, let_expire=not value).update(let_expire=value):
            audit.record(
                "token.let_expire" if value else "token.remind_again", actor=user, target=token, request=request
            )


def flag_orphans() -> int:
    """Tokens whose owner's account was deactivated: flagged, and their team and security told."""
    flagged = 0
    for token in Token.objects.filter(
        status__in=LIVE_TOKEN_STATUSES, owner__is_active=False, orphaned_at__isnull=True
    ).select_related("owner", "registry"):
        with transaction.atomic():
            if Token.objects.filter(pk=token.pk, orphaned_at__isnull=True).update(orphaned_at=timezone.now()):
                audit.record("token.orphaned", actor=None, target=token, details={"owner": token.owner.get_username()})
                flagged += 1
                transaction.on_commit(
                    partial(notify.orphaned, token, team_email(token.team), access.security_emails())
                )
    return flagged


def team_email(team: str) -> str:
    return Team.objects.filter(name=team).values_list("email", flat=True).first() or ""
