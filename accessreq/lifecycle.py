"""A token's life after its request: rotation, disabling, retirement, ownership, expiry, reminders, reconcile.

Pages, beat and management commands call these same functions. Each one checks who may act, makes its change with
a conditional update (so a second run or a second click changes nothing), and audits it. Registry calls come before
the database change they justify: when Azure refuses, the portal does not pretend.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from accessreq import acr, audit, notify, provisioning, routing
from accessreq.models import (
    LIVE_TOKEN_STATUSES,
    SLOTS_IN_USE,
    ClientKind,
    Digest,
    PasswordSlot,
    Registry,
    Reminder,
    SealedPassword,
    SlotStatus,
    Team,
    Token,
    TokenStatus,
    UnmanagedToken,
)
from accessreq.roles import SECURITY_GROUP, roles_for

log = logging.getLogger(__name__)


class LifecycleError(Exception):
    """The action does not apply to the token as it is now (HTTP 409). The message is for the user."""


# --- who may act ---------------------------------------------------------------------------------------------------


def can_manage(token: Token, user: AbstractBaseUser) -> bool:
    """Rotate, retire, transfer, renew: the owner, security and admins."""
    roles = roles_for(user)
    return user.pk == token.owner_id or roles.is_security


def can_switch(token: Token, user: AbstractBaseUser) -> bool:
    """Disable and enable: also an approver of the token's repositories, who may need to stop it at once."""
    if can_manage(token, user):
        return True
    owners = {r.group.pk for r in routing.requirements(token.registry, token.rules, None)}
    return bool(owners & roles_for(user).group_ids)


def tokens_for(user: AbstractBaseUser) -> QuerySet[Token]:
    """The tokens a user may see: owned, requested, owned by a team whose group they are in, or approved by one of
    their groups (whose members may need to disable them); all of them for security."""
    qs = Token.objects.all()
    roles = roles_for(user)
    if roles.is_security:
        return qs
    groups = roles.group_ids
    teams = list(get_user_model().objects.get(pk=user.pk).groups.values_list("name", flat=True))
    routed = Token.objects.filter(
        Q(request__requirements__group__in=groups) | Q(renewals__requirements__group__in=groups)
    ).values("pk")
    return qs.filter(Q(owner=user) | Q(requester=user) | Q(team__in=teams) | Q(pk__in=routed))


def _require(allowed: bool, message: str) -> None:
    if not allowed:
        raise PermissionDenied(message)


def _locked(token: Token) -> Token:
    return Token.objects.select_for_update().select_related("registry", "owner").get(pk=token.pk)


# --- rotation ------------------------------------------------------------------------------------------------------


def rotate(token: Token, user: AbstractBaseUser, request: HttpRequest | None) -> PasswordSlot:
    """Generate the free slot; the old one stays valid until the switch is confirmed or the grace period ends.
    No new approval: scope and dates stay as approved."""
    from accessreq import tasks

    _require(can_manage(token, user), "Only the token's owner or security can rotate it.")
    now = timezone.now()
    with transaction.atomic():
        token = _locked(token)
        if token.status != TokenStatus.ACTIVE:
            raise LifecycleError("Only an active token can be rotated.")
        slots = {s.name: s for s in PasswordSlot.objects.select_for_update().filter(token=token)}
        in_use = [s for s in slots.values() if s.status in SLOTS_IN_USE]
        if any(s.status != SlotStatus.REVEALED for s in in_use) or len(in_use) > 1:
            raise LifecycleError(
                "A rotation is already under way: reveal the new password and confirm the switch first."
            )
        free = next(name for name in acr.SLOTS if name not in slots or slots[name].status not in SLOTS_IN_USE)
        grace_end = now + timedelta(days=settings.ROTATION_GRACE_DAYS)
        for old in in_use:
            PasswordSlot.objects.filter(pk=old.pk).update(retire_after=grace_end)
        new, _ = PasswordSlot.objects.update_or_create(
            token=token,
            name=free,
            defaults={
                "status": SlotStatus.GENERATING,
                "claimed_at": None,
                "requested_by": user,
                "retire_after": None,
                "expires_at": None,
                "reveal_by": None,
                "revealed_at": None,
                "revealed_by": None,
            },
        )
        SealedPassword.objects.filter(slot=new).delete()
        Token.objects.filter(pk=token.pk).update(last_rotated_at=now)
        audit.record(
            "token.rotated",
            actor=user,
            target=token,
            details={"new_slot": free, "old_slots": [s.name for s in in_use], "old_valid_until": grace_end},
            request=request,
        )
        tasks.generate_password.delay_on_commit(new.pk)
    return new


def confirm_switch(token: Token, user: AbstractBaseUser, request: HttpRequest | None) -> list[str]:
    """The clients use the new password: delete the old slot now rather than at the end of the grace period."""
    _require(can_manage(token, user), "Only the token's owner or security can confirm the switch.")
    with transaction.atomic():
        token = _locked(token)
        slots = list(PasswordSlot.objects.select_for_update().filter(token=token))
        old = [s for s in slots if s.retire_after is not None and s.status in (SlotStatus.REVEALED, SlotStatus.EXPIRED)]
        if not old:
            raise LifecycleError("There is no previous password waiting to be deleted.")
        if not any(s.retire_after is None and s.status == SlotStatus.REVEALED for s in slots):
            raise LifecycleError("Reveal the new password before switching away from the old one.")
        for slot in old:
            _start_removal(slot, "switch confirmed", user, request)
    provisioning.remove_pending_slots(token)
    return [s.name for s in old]


def _start_removal(slot: PasswordSlot, reason: str, user: AbstractBaseUser | None, request: HttpRequest | None) -> bool:
    moved = PasswordSlot.objects.filter(pk=slot.pk).exclude(status__in=[SlotStatus.REVOKING, SlotStatus.REVOKED])
    if not moved.update(status=SlotStatus.REVOKING):
        return False
    SealedPassword.objects.filter(slot=slot).delete()
    audit.record("password.removing", actor=user, target=slot, details={"slot": slot.name, "reason": reason},
                 request=request)
    return True


def finish_rotations(now: datetime | None = None) -> int:
    """Grace periods that ended: the old slot goes, whether or not the owner confirmed."""
    now = now or timezone.now()
    due = PasswordSlot.objects.filter(retire_after__lte=now, status__in=[SlotStatus.REVEALED, SlotStatus.EXPIRED])
    for slot in due:
        with transaction.atomic():
            _start_removal(slot, "rotation grace period ended", None, None)
    return provisioning.remove_pending_slots()


# --- disable, enable, retire ---------------------------------------------------------------------------------------


def disable(token: Token, user: AbstractBaseUser | None, reason: str, request: HttpRequest | None) -> bool:
    if user is not None:
        _require(can_switch(token, user), "Only the owner, an approver of its repositories or security can disable it.")
    reason = reason.strip()
    if not reason:
        raise ValueError("Say why the token is disabled: its owner will read this.")
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.DISABLED):
        raise LifecycleError(f"This token is {token.get_status_display().lower()}.")
    acr.set_token_status(token.registry, token.name, "disabled")
    with transaction.atomic():
        moved = Token.objects.filter(pk=token.pk, status=TokenStatus.ACTIVE).update(
            status=TokenStatus.DISABLED, status_reason=reason[:500]
        )
        if moved:
            audit.record("token.disabled", actor=user, target=token, details={"reason": reason}, request=request)
            transaction.on_commit(lambda: notify.token_changed(token, f"was disabled: {reason}"))
    return bool(moved)


def enable(token: Token, user: AbstractBaseUser, request: HttpRequest | None) -> bool:
    _require(can_switch(token, user), "Only the owner, an approver of its repositories or security can enable it.")
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.DISABLED):
        raise LifecycleError(f"This token is {token.get_status_display().lower()}.")
    acr.set_token_status(token.registry, token.name, "enabled")
    with transaction.atomic():
        moved = Token.objects.filter(pk=token.pk, status=TokenStatus.DISABLED).update(
            status=TokenStatus.ACTIVE, status_reason=""
        )
        if moved:
            audit.record("token.enabled", actor=user, target=token, request=request)
    return bool(moved)


def retire(token: Token, user: AbstractBaseUser | None, reason: str, request: HttpRequest | None) -> bool:
    """Disable now; delete the token and its scope map when the retirement grace period ends."""
    if user is not None:
        _require(can_manage(token, user), "Only the token's owner or security can retire it.")
    if token.status not in (TokenStatus.ACTIVE, TokenStatus.DISABLED):
        if token.status in (TokenStatus.RETIRING, TokenStatus.RETIRED):
            return False
        raise LifecycleError(f"This token is {token.get_status_display().lower()}.")
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


def retire_due(today: datetime | None = None) -> int:
    """Tokens whose retirement date has come."""
    today_date = (today or timezone.now()).date() if today else timezone.localdate()
    retired = 0
    for token in Token.objects.filter(
        status__in=[TokenStatus.ACTIVE, TokenStatus.DISABLED], retire_on__lte=today_date
    ).select_related("registry"):
        try:
            retired += retire(token, None, "retirement date reached", None)
        except acr.AcrError as exc:
            log.warning("token %s: retiring failed, will retry: %s", token.pk, exc)
    return retired


def delete_retired(now: datetime | None = None) -> int:
    """After the grace period: the token, then its scope map (one in use cannot be deleted). History stays."""
    now = now or timezone.now()
    deleted = 0
    for token in Token.objects.filter(status=TokenStatus.RETIRING, delete_after__lte=now).select_related("registry"):
        try:
            acr.delete_token(token.registry, token.name)
            if token.request_id is not None:  # an adopted token's scope map was never the portal's
                acr.delete_scope_map(token.registry, token.scope_map_name)
        except acr.AcrError as exc:
            log.warning("token %s: deletion failed, will retry: %s", token.pk, exc)
            continue
        with transaction.atomic():
            if Token.objects.filter(pk=token.pk, status=TokenStatus.RETIRING).update(status=TokenStatus.RETIRED):
                PasswordSlot.objects.filter(token=token).update(status=SlotStatus.REVOKED, retire_after=None)
                SealedPassword.objects.filter(slot__token=token).delete()
                audit.record("token.retired", actor=None, target=token, details={"deleted_from_registry": True})
                deleted += 1
    return deleted


# --- ownership -----------------------------------------------------------------------------------------------------


def transfer(token: Token, user: AbstractBaseUser, new_owner_username: str, request: HttpRequest | None) -> None:
    _require(can_manage(token, user), "Only the token's owner or security can hand it over.")
    new_owner = get_user_model().objects.filter(username=new_owner_username.strip(), is_active=True).first()
    if new_owner is None:
        raise ValueError(f"No active user is called {new_owner_username.strip()!r}.")
    if new_owner.pk == token.owner_id:
        raise ValueError("That person already owns this token.")
    previous = token.owner
    with transaction.atomic():
        moved = Token.objects.filter(pk=token.pk, owner=previous).update(owner=new_owner, orphaned_at=None)
        if not moved:
            raise LifecycleError("The owner changed meanwhile; reload the page.")
        audit.record(
            "token.transferred",
            actor=user,
            target=token,
            details={"from": previous.get_username(), "to": new_owner.get_username()},
            request=request,
        )
        transaction.on_commit(lambda: notify.transferred(token, previous, new_owner, user))


def set_let_expire(token: Token, user: AbstractBaseUser, value: bool, request: HttpRequest | None) -> None:
    _require(can_manage(token, user), "Only the token's owner or security can change its reminders.")
    with transaction.atomic():
        if Token.objects.filter(pk=token.pk, let_expire=not value).update(let_expire=value):
            audit.record("token.let_expire" if value else "token.remind_again", actor=user, target=token,
                         request=request)


def flag_orphans() -> int:
    """Tokens whose owner's account was deactivated: flagged, and their team and security told."""
    flagged = 0
    for token in Token.objects.filter(
        status__in=LIVE_TOKEN_STATUSES, owner__is_active=False, orphaned_at__isnull=True
    ).select_related("owner", "registry"):
        with transaction.atomic():
            if Token.objects.filter(pk=token.pk, orphaned_at__isnull=True).update(orphaned_at=timezone.now()):
                audit.record("token.orphaned", actor=None, target=token,
                             details={"owner": token.owner.get_username()})
                flagged += 1
                transaction.on_commit(lambda t=token: notify.orphaned(t, _team_email(t.team), _security_emails()))
    return flagged


def _team_email(team: str) -> str:
    return Team.objects.filter(name=team).values_list("email", flat=True).first() or ""


def _security_emails() -> list[str]:
    return list(
        get_user_model()
        .objects.filter(Q(groups__name=SECURITY_GROUP) | Q(is_superuser=True), is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
        .distinct()
    )


# --- expiry and reminders ------------------------------------------------------------------------------------------


def mark_expired(now: datetime | None = None) -> int:
    now = now or timezone.now()
    expired = 0
    for slot in PasswordSlot.objects.filter(
        status__in=[SlotStatus.REVEALED, SlotStatus.AWAITING_REVEAL], expires_at__lte=now
    ):
        with transaction.atomic():
            if PasswordSlot.objects.filter(pk=slot.pk, status=slot.status).update(status=SlotStatus.EXPIRED):
                SealedPassword.objects.filter(slot=slot).delete()
                audit.record("password.expired", actor=None, target=slot, details={"slot": slot.name})
                expired += 1
    return expired


@dataclass(frozen=True)
class Due:
    token: Token
    subject: str  # "retirement" or a slot name
    due: datetime
    days_before: int


def _threshold(due: datetime, now: datetime) -> int | None:
    """The tightest reminder threshold already crossed: 13 days left gives 14, 3 gives 7, 0.5 gives 1."""
    days_left = (due - now).total_seconds() / 86400
    if days_left <= 0:
        return None
    crossed = [d for d in settings.REMINDER_DAYS if days_left <= d]
    return min(crossed) if crossed else None


def due_reminders(now: datetime) -> list[Due]:
    found = []
    tokens = (
        Token.objects.filter(status__in=[TokenStatus.ACTIVE, TokenStatus.DISABLED], let_expire=False)
        .select_related("owner", "registry")
        .prefetch_related("slots")
    )
    for token in tokens:
        retire_at = timezone.make_aware(datetime.combine(token.retire_on, time.min))
        if (days := _threshold(retire_at, now)) is not None:
            found.append(Due(token, "retirement", retire_at, days))
        for slot in token.slots.all():
            if slot.status in (SlotStatus.REVEALED, SlotStatus.AWAITING_REVEAL) and slot.expires_at:
                if slot.retire_after is not None:
                    continue  # being rotated out: its expiry no longer matters
                if (days := _threshold(slot.expires_at, now)) is not None:
                    found.append(Due(token, slot.name, slot.expires_at, days))
    return found


def send_reminders(now: datetime | None = None) -> int:
    """Reminders due, each once per address, gathered into one digest per address per day. Returns e-mails sent."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    teams = dict(Team.objects.exclude(email="").values_list("name", "email"))
    by_address: dict[str, list[Due]] = defaultdict(list)
    for item in due_reminders(now):
        for address in {item.token.owner.email, teams.get(item.token.team, "")} - {""}:
            by_address[address].append(item)
    sent = 0
    for address, items in by_address.items():
        already = set(
            Reminder.objects.filter(email=address, token__in=[i.token for i in items]).values_list(
                "token_id", "subject", "due", "days_before"
            )
        )
        fresh = [i for i in items if (i.token.pk, i.subject, i.due, i.days_before) not in already]
        if not fresh:
            continue
        try:
            with transaction.atomic():
                # One digest a day: a second run today leaves what is new for tomorrow's digest.
                Digest.objects.create(email=address, day=today)
                Reminder.objects.bulk_create(
                    Reminder(token=i.token, subject=i.subject, due=i.due, days_before=i.days_before, email=address)
                    for i in fresh
                )
                for token in {i.token for i in fresh}:
                    audit.record(
                        "token.reminded",
                        actor=None,
                        target=token,
                        details={"to": address, "about": sorted({i.subject for i in fresh if i.token == token})},
                    )
                transaction.on_commit(lambda a=address, f=fresh: notify.reminder_digest(a, f))
        except IntegrityError:
            continue
        sent += 1
    return sent


# --- reconcile -----------------------------------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    seen: int = 0
    unmanaged: int = 0
    drifted: int = 0
    gone: int = 0


def reconcile(registry: Registry, actor_id: int | None = None) -> ReconcileReport:
    """Compare the registry with what the portal knows, page by page: unmanaged tokens, drifted scope maps, and
    tokens deleted behind the portal's back. `actor_id` names who asked for it, when someone did."""
    user = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    report = ReconcileReport()
    now = timezone.now()
    known = {t.name: t for t in registry.tokens.filter(status__in=LIVE_TOKEN_STATUSES)}
    scope_maps = {m.name: m.actions for m in acr.list_scope_maps(registry)}
    seen: set[str] = set()
    for found in acr.list_tokens(registry):
        report.seen += 1
        seen.add(found.name)
        token = known.get(found.name)
        actual = scope_maps.get(found.scope_map_name, [])
        if token is None:
            UnmanagedToken.objects.update_or_create(
                registry=registry,
                name=found.name,
                defaults={
                    "scope_map_name": found.scope_map_name,
                    "actions": actual,
                    "status": found.status,
                    "last_seen_at": now,
                },
            )
            report.unmanaged += 1
        elif sorted(actual) != sorted(token.approved_actions):
            report.drifted += 1
            if token.drift_actions != actual:
                with transaction.atomic():
                    Token.objects.filter(pk=token.pk).update(drift_actions=actual, drift_seen_at=now)
                    audit.record("token.drift_found", actor=None, target=token,
                                 details={"approved": token.approved_actions, "found": actual})
        elif token.drift_actions is not None:
            Token.objects.filter(pk=token.pk).update(drift_actions=None, drift_seen_at=None)
    for name, token in known.items():
        if name not in seen:
            with transaction.atomic():
                if Token.objects.filter(pk=token.pk, status__in=LIVE_TOKEN_STATUSES).update(status=TokenStatus.GONE):
                    PasswordSlot.objects.filter(token=token).update(status=SlotStatus.REVOKED, retire_after=None)
                    SealedPassword.objects.filter(slot__token=token).delete()
                    audit.record("token.gone", actor=None, target=token)
                    report.gone += 1
    UnmanagedToken.objects.filter(registry=registry).exclude(name__in=seen).delete()
    with transaction.atomic():
        audit.record("registry.reconciled", actor=user, target=registry, details=report.__dict__)
    return report


def restore(token: Token, user: AbstractBaseUser, request: HttpRequest | None) -> None:
    """Write the approved actions back over a drifted scope map."""
    _require(roles_for(user).is_security, "Only security can restore a scope map.")
    if token.drift_actions is None:
        raise LifecycleError("This token's scope map matches what was approved.")
    description = f"{acr.MANAGED_MARKER} (request {token.request_id})"
    acr.set_scope_map_actions(token.registry, token.scope_map_name, token.approved_actions, description)
    with transaction.atomic():
        Token.objects.filter(pk=token.pk).update(drift_actions=None, drift_seen_at=None)
        audit.record("token.drift_restored", actor=user, target=token,
                     details={"was": token.drift_actions, "now": token.approved_actions}, request=request)


def _rules_from_actions(actions: list[str]) -> list[dict]:
    from accessreq import scopes

    pairs = []
    for action in actions:
        parts = action.split("/")
        if len(parts) >= 4 and parts[0] == "repositories":
            pairs.append(("/".join(parts[1:-2]), ["/".join(parts[-2:])]))
    return scopes.merge_rules(pairs)


def adopt(
    unmanaged: UnmanagedToken,
    user: AbstractBaseUser,
    owner: AbstractBaseUser,
    team: str,
    retire_on: datetime,
    request: HttpRequest | None,
) -> Token:
    """Give a token found in the registry an owner, a team and a retirement date, so the portal tracks it."""
    _require(roles_for(user).is_security, "Only security can adopt a token.")
    info = acr.get_token(unmanaged.registry, unmanaged.name)
    if info is None:
        raise LifecycleError("The token is no longer in the registry.")
    with transaction.atomic():
        token = Token.objects.create(
            registry=unmanaged.registry,
            name=unmanaged.name,
            scope_map_name=info.scope_map_name,
            request=None,
            owner=owner,
            team=team,
            requester=user,
            purpose="Adopted from the registry",
            client_kind=ClientKind.OTHER,
            rules=_rules_from_actions(unmanaged.actions),
            retire_on=retire_on,
            password_days=unmanaged.registry.max_password_days,
            status=TokenStatus.ACTIVE if info.status == "enabled" else TokenStatus.DISABLED,
        )
        for slot_name, expiry in info.slots.items():
            PasswordSlot.objects.create(token=token, name=slot_name, status=SlotStatus.REVEALED, expires_at=expiry)
        unmanaged.delete()
        audit.record(
            "token.adopted",
            actor=user,
            target=token,
            details={"owner": owner.get_username(), "team": team, "retire_on": retire_on},
            request=request,
        )
    return token


def disable_unmanaged(unmanaged: UnmanagedToken, user: AbstractBaseUser, reason: str, request: HttpRequest | None):
    _require(roles_for(user).is_security, "Only security can disable a token the portal does not manage.")
    if not reason.strip():
        raise ValueError("Say why the token is disabled.")
    acr.set_token_status(unmanaged.registry, unmanaged.name, "disabled")
    with transaction.atomic():
        UnmanagedToken.objects.filter(pk=unmanaged.pk).update(status="disabled")
        audit.record("unmanaged_token.disabled", actor=user, target=unmanaged, details={"reason": reason.strip()},
                     request=request)
