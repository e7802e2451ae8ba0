"""Comparing a registry with what the portal knows: unmanaged tokens, drifted scope maps, tokens deleted behind the
portal's back; and what security does about them (restore, adopt, disable)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeVar

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from accessreq import access, acr, alerts, audit, scopes, slots
from accessreq.errors import Conflict, Invalid
from accessreq.models import (
    IN_PROGRESS_REQUEST_STATUSES,
    LIVE_TOKEN_STATUSES,
    ClientKind,
    PasswordSlot,
    Registry,
    SlotStatus,
    Token,
    TokenStatus,
    UnmanagedToken,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ReconcileReport:
    seen: int = 0
    unmanaged: int = 0
    drifted: int = 0
    gone: int = 0
    broken: int = 0  # managed tokens whose registry provisioningState is not Succeeded


def reconcile(registry: Registry, actor_id: int | None = None) -> ReconcileReport:
    """Compare the registry with what the portal knows, page by page: unmanaged tokens, drifted scope maps, and
    tokens deleted behind the portal's back. `actor_id` names who asked for it, when someone did.

    Memory stays flat as a registry grows: the portal's tokens are read a page at a time, for the names the
    registry just listed, and what is remembered across pages is the ids of the tokens found."""
    user = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    report = ReconcileReport()
    now = timezone.now()
    scope_maps = {m.name: m.actions for m in acr.list_scope_maps(registry)}
    found_ids: set[int] = set()
    for page in _pages(acr.list_tokens(registry), PAGE):
        listed = registry.tokens.filter(status__in=LIVE_TOKEN_STATUSES, name__in=[f.name for f in page]).annotate(
            request_status=F("request__status")
        )
        known = {t.name: t for t in listed}
        for found in page:
            report.seen += 1
            token = known.get(found.name)
            actual = scope_maps.get(found.scope_map_name, [])
            if token is None:
                _note_unmanaged(registry, found, actual, now, report)
                continue
            found_ids.add(token.pk)
            if token.request_status in IN_PROGRESS_REQUEST_STATUSES:
                continue  # still being made (ARM may say Creating): its provisioning settles it, or says why not
            _note_registry_state(token, found, report)
            _note_drift(token, actual, now, report)
    # Only tokens made before the listing began: one provisioned meanwhile may have been listed on a page already read.
    live = registry.tokens.filter(status__in=LIVE_TOKEN_STATUSES, created_at__lt=now)
    for pk in live.values_list("pk", flat=True).iterator(chunk_size=PAGE):
        if pk not in found_ids:
            _note_gone(pk, report)
    # Every unmanaged token still in the registry was stamped with `now` above.
    UnmanagedToken.objects.filter(registry=registry, last_seen_at__lt=now).delete()
    with transaction.atomic():
        audit.record("registry.reconciled", actor=user, target=registry, details=report.__dict__)
    return report


PAGE = 100


def _pages(items: Iterable[T], size: int) -> Iterator[list[T]]:
    page: list[T] = []
    for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def _note_unmanaged(
    registry: Registry, found: acr.TokenInfo, actual: list[str], now: datetime, report: ReconcileReport
) -> None:
    unmanaged, created = UnmanagedToken.objects.update_or_create(
        registry=registry,
        name=found.name,
        defaults={
            "scope_map_name": found.scope_map_name, "actions": actual, "status": found.status, "last_seen_at": now
        },
    )
    report.unmanaged += 1
    if created:
        alerts.raise_(
            "unmanaged_token.found",
            f"A token the portal did not make was found in {registry}: {found.name}",
            target=unmanaged,
            details={"registry": registry.name, "token": found.name, "scope_map": found.scope_map_name,
                     "actions": actual[:20]},
        )


def _note_drift(token: Token, actual: list[str], now: datetime, report: ReconcileReport) -> None:
    if sorted(actual) == sorted(token.approved_actions):
        if token.drift_actions is not None:
            Token.objects.filter(pk=token.pk).update(drift_actions=None, drift_seen_at=None)
        return
    report.drifted += 1
    if token.drift_actions == actual:
        return
    with transaction.atomic():
        Token.objects.filter(pk=token.pk).update(drift_actions=actual, drift_seen_at=now)
        details = {"approved": token.approved_actions, "found": actual}
        audit.record("token.drift_found", actor=None, target=token, details=details)
        alerts.raise_(
            "token.drift_found", f"The scope map of {token} differs from what was approved", target=token,
            details=details,
        )


def _note_gone(pk: int, report: ReconcileReport) -> None:
    with transaction.atomic():
        if Token.objects.filter(pk=pk, status__in=LIVE_TOKEN_STATUSES).update(status=TokenStatus.GONE):
            token = Token.objects.select_related("registry").get(pk=pk)
            slots.revoke_all(token)
            audit.record("token.gone", actor=None, target=token)
            report.gone += 1


def _note_registry_state(token: Token, found: acr.TokenInfo, report: ReconcileReport) -> None:
    """Flag a managed token the registry has as Failed (or stuck in an operation): it authenticates nothing, so its
    owner's password does not work. Audited once when it turns so, cleared when it is Succeeded again."""
    state = "" if found.provisioning_state in (acr.SUCCEEDED, None) else str(found.provisioning_state)[:16]
    if state:
        report.broken += 1
    if state == token.registry_state:
        return
    with transaction.atomic():
        Token.objects.filter(pk=token.pk).update(registry_state=state)
        audit.record(
            "token.registry_failed" if state else "token.registry_recovered",
            actor=None,
            target=token,
            details={"provisioning_state": found.provisioning_state},
        )


def restore(token: Token, user: User, request: HttpRequest | None) -> None:
    """Write the approved actions back over a drifted scope map."""
    access.require(access.roles_for(user).is_security, "Only security can restore a scope map.")
    if token.drift_actions is None:
        raise Conflict("This token's scope map matches what was approved.")
    description = f"{acr.MANAGED_MARKER} (request {token.request_id})"
    acr.set_scope_map_actions(token.registry, token.scope_map_name, token.approved_actions, description)
    with transaction.atomic():
        Token.objects.filter(pk=token.pk).update(drift_actions=None, drift_seen_at=None)
        audit.record(
            "token.drift_restored",
            actor=user,
            target=token,
            details={"was": token.drift_actions, "now": token.approved_actions},
            request=request,
        )


def _rules_from_actions(actions: list[str]) -> list[dict]:
    pairs = []
    for action in actions:
        parts = action.split("/")
        if len(parts) >= 4 and parts[0] == "repositories":
            pairs.append(("/".join(parts[1:-2]), ["/".join(parts[-2:])]))
    return scopes.merge_rules(pairs)


def adopt(
    unmanaged: UnmanagedToken,
    user: User,
    owner: User,
    team: str,
    retire_on: date,
    request: HttpRequest | None,
) -> Token:
    """Give a token found in the registry an owner, a team and a retirement date, so the portal tracks it."""
    access.require(access.roles_for(user).is_security, "Only security can adopt a token.")
    info = acr.get_token(unmanaged.registry, unmanaged.name)
    if info is None:
        raise Conflict("The token is no longer in the registry.")
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


def disable_unmanaged(unmanaged: UnmanagedToken, user: User, reason: str, request: HttpRequest | None):
    access.require(access.roles_for(user).is_security, "Only security can disable a token the portal does not manage.")
    if not reason.strip():
        raise Invalid("Say why the token is disabled.", field="reason")
    acr.set_token_status(unmanaged.registry, unmanaged.name, "disabled")
    with transaction.atomic():
        UnmanagedToken.objects.filter(pk=unmanaged.pk).update(status="disabled")
        audit.record(
            "unmanaged_token.disabled",
            actor=user,
            target=unmanaged,
            details={"reason": reason.strip()},
            request=request,
        )


def reconcile_all() -> int:
    """Every active registry. One registry's failure does not stop the others; each is read again next run."""
    done = 0
    for registry in Registry.objects.filter(active=True):
        try:
            reconcile(registry)
            done += 1
        except acr.AcrError as exc:
            log.warning("registry %s: reconcile failed, will retry next run: %s", registry.pk, exc)
    return done
