"""A request's way from filed to approved, rejected or cancelled.

`review` says what a request would be (its merged rules, who must approve, what is wrong, by field) from plain
values; the form's preview, the form and the API all ask it, so they give the same verdict. `submit` files a request
that `review` found valid. Every transition after that is a conditional update on the current status, so two clicks
or two approvers cannot both win, and every one is audited in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accessreq import access, audit, enqueue, keyvault, notify, routing, scopes
from accessreq.errors import Conflict, Invalid
from accessreq.models import (
    LIVE_TOKEN_STATUSES,
    OPEN_REQUEST_STATUSES,
    AccessRequest,
    Approval,
    ApprovalRequirement,
    ClientKind,
    Decision,
    KeyVaultDelivery,
    Registry,
    RequestStatus,
    Token,
)
from accessreq.scopes import Rule

MAX_RULES = 200
MAX_PURPOSE = 500
MAX_TEAM = 100
NO_RULES = "Add at least one repository with its actions."
TOO_MANY_RULES = (
    f"A request holds at most {MAX_RULES} repositories; use a wildcard such as myapp/* to cover many at once."
)


def token_name_for(client_kind: str, team: str, number: int | str) -> str:
    """`ci-payments-42`: readable in the registry, valid for ACR (letters, digits, hyphens, 5-50), and unique
    because it ends in the request's number."""
    slug = re.sub(r"[^a-z0-9]+", "-", team.lower()).strip("-") or "team"
    suffix = f"-{number}"
    head = f"{client_kind}-{slug}"[: 50 - len(suffix)].rstrip("-")
    return f"{head}{suffix}"


def find_registry(value: int | str) -> Registry:
    """An active registry by id or by name, for callers that name it in plain values."""
    found = Registry.objects.filter(active=True)
    if isinstance(value, int):
        registry = found.filter(pk=value).first()
    else:
        registry = found.filter(name=value).first() if "\x00" not in value else None
    if registry is None:
        raise Invalid(f"No active registry is called {value!r}.", field="registry")
    return registry


def tokens_in_use(registry: Registry) -> int:
    """Live tokens, unmanaged ones and those still on their way: what counts against the SKU's token limit."""
    live_tokens = registry.tokens.filter(status__in=LIVE_TOKEN_STATUSES).count()
    live_tokens += registry.unmanaged_tokens.count()
    in_flight = AccessRequest.objects.filter(registry=registry, status__in=OPEN_REQUEST_STATUSES).count()
    return live_tokens + in_flight


@dataclass
class KeyVaultTarget:
    """Deliver the password to a Key Vault secret instead of revealing it, and rotate it by this policy: every N
    days, or N days before the password expires (one of the two; neither means a default before expiry)."""

    vault_url: str
    secret_name: str
    rotate_every_days: int | None = None
    rotate_before_expiry_days: int | None = None


@dataclass
class Review:
    """What a request would be, and what is wrong with it, by field. Valid when `errors` is empty."""

    registry: Registry | None
    rules: list[dict]
    purpose: str
    client_kind: str
    owner: User | None
    team: str
    password_days: int | None
    retire_on: date | None
    renews: Token | None
    requirements: list[routing.Requirement] = field(default_factory=list)
    key_vault: KeyVaultTarget | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    @property
    def actions(self) -> list[str]:
        return scopes.scope_map_actions(self.rules)

    @property
    def risks(self) -> list[str]:
        return scopes.risks(self.rules, self.client_kind)


def review(
    requester: User,
    *,
    registry: Registry | None,
    rules: Sequence[Rule],
    purpose: str = "",
    client_kind: str = "",
    owner: str = "",
    team: str = "",
    password_days: int | None = None,
    retire_on: date | None = None,
    renews: Token | None = None,
    key_vault: KeyVaultTarget | None = None,
) -> Review:
    """Every policy a request must meet. A value that is None or empty was missing or already refused upstream."""
    today = timezone.localdate()
    found = Review(
        registry=registry,
        rules=[],
        purpose=" ".join(purpose.split()),
        client_kind=client_kind,
        owner=None,
        team=team.strip(),
        password_days=password_days,
        retire_on=retire_on,
        renews=renews,
    )
    if registry is None:
        found.add("registry", "Choose a registry.")
    if len(found.purpose) < 10:
        found.add("purpose", "Say in a sentence what will use this token.")
    elif len(found.purpose) > MAX_PURPOSE:
        found.add("purpose", f"Keep it to {MAX_PURPOSE} characters.")
    if client_kind not in ClientKind.values:
        found.add("client_kind", f"Select a valid choice. {client_kind} is not one of the available choices.")
    if not found.team:
        found.add("team", "Name the team that owns this token.")
    elif len(found.team) > MAX_TEAM:
        found.add("team", f"Keep it to {MAX_TEAM} characters.")
    username = owner.strip()
    found.owner = get_user_model().objects.filter(username=username, is_active=True).first() if username else None
    if found.owner is None:
        found.add("owner", f"No active user is called {username!r}." if username else "Name the owner.")
    if password_days is None:
        found.add("password_days", "Say how many days each password lives.")
    elif password_days < 1:
        found.add("password_days", "A password lives at least 1 day.")
    elif registry is not None and password_days > registry.max_password_days:
        found.add("password_days", f"{registry} allows passwords of at most {registry.max_password_days} days.")
    if retire_on is None:
        found.add("retire_on", "Choose a retirement date.")
    elif retire_on <= today:
        found.add("retire_on", "Choose a date after today.")
    elif registry is not None and retire_on > today + timedelta(days=registry.max_retirement_days):
        latest = today + timedelta(days=registry.max_retirement_days)
        found.add("retire_on", f"{registry} allows retirement dates up to {latest:%Y-%m-%d}.")
    if registry is not None and renews is not None and registry.pk != renews.registry_id:
        found.add("registry", f"A change to {renews.name} stays in {renews.registry}.")
    if registry is not None and renews is None and tokens_in_use(registry) >= registry.token_limit:
        found.add("registry", f"{registry} has reached its {registry.sku} limit of {registry.token_limit} tokens.")
    _review_rules(found, requester, rules)
    if key_vault is not None:
        _review_key_vault(found, key_vault)
    return found


def _review_key_vault(found: Review, target: KeyVaultTarget) -> None:
    """A vault the registry's admins allow, a valid secret name no other live token writes, a rotation policy that
    renews the password before it expires."""
    if found.renews is not None:
        found.add("delivery", "A change keeps the token's delivery; ask for a new token to deliver elsewhere.")
        return
    vault_url = ""
    try:
        vault_url = keyvault.normalize_vault_url(target.vault_url or "")
    except ValueError as exc:
        found.add("key_vault", str(exc))
    registry = found.registry
    if vault_url and registry is not None and not registry.allowed_vaults.filter(url=vault_url).exists():
        allowed = ", ".join(registry.allowed_vaults.values_list("url", flat=True)) or "none yet; ask an admin"
        found.add("key_vault", f"{registry} may not deliver to {vault_url}. Allowed vaults: {allowed}.")
    name = (target.secret_name or "").strip()
    if not keyvault.valid_secret_name(name):
        found.add("secret_name", "A secret name is 1 to 127 letters, digits and dashes.")
    elif vault_url and _secret_taken(vault_url, name):
        found.add("secret_name", f"Another token already delivers to {name} in {vault_url}; choose another name.")
    every, before = target.rotate_every_days, target.rotate_before_expiry_days
    days = found.password_days
    if every is not None and before is not None:
        found.add("rotate_every_days", "Rotate every N days, or N days before expiry, not both.")
    elif every is not None and (every < 1 or (days is not None and every >= days)):
        found.add("rotate_every_days", "Rotate at least every day, and more often than the password's lifetime.")
    elif before is not None and (before < 1 or (days is not None and before >= days)):
        found.add(
            "rotate_before_expiry_days", "Rotate at least 1 day before expiry, and less than the password's lifetime."
        )
    if every is None and before is None:
        before = max(1, min(7, (days or 2) // 3))
    found.key_vault = KeyVaultTarget(vault_url, name, every, before if every is None else None)


def _secret_taken(vault_url: str, name: str) -> bool:
    """Two tokens writing one secret would overwrite each other's password. Names compare as Key Vault does."""
    others = KeyVaultDelivery.objects.filter(vault_url=vault_url, secret_name__iexact=name)
    return (
        others.filter(request__status__in=[*OPEN_REQUEST_STATUSES, RequestStatus.FAILED]).exists()
        or others.filter(token__status__in=LIVE_TOKEN_STATUSES).exists()
    )


def _review_rules(found: Review, requester: User, rules: Sequence[Rule]) -> None:
    if len(rules) > MAX_RULES:
        found.add("rules", TOO_MANY_RULES)
        return
    valid = []
    for i, rule in enumerate(rules):
        errors = scopes.rule_errors(rule.repository, rule.actions)
        for name, messages in errors.items():
            for message in messages:
                found.add(f"rules[{i}].{name}", message)
        if not errors:
            valid.append((rule.repository, rule.actions))
    # Every valid rule counts for the preview, even while another still has an error.
    found.rules = scopes.merge_rules(valid)
    if not rules:
        found.add("rules", NO_RULES)
    count = len(found.actions)
    if count > scopes.MAX_ACTIONS_PER_SCOPE_MAP:
        found.add(
            "rules",
            f"These rules make {count} scope-map actions; a scope map holds at most "
            f"{scopes.MAX_ACTIONS_PER_SCOPE_MAP}. Use a wildcard such as myapp/* instead of many repositories.",
        )
    if found.registry is None or not found.rules:
        return
    found.requirements = routing.requirements(found.registry, found.rules, requester)
    for req in found.requirements:
        if req.short_of_approvers:
            found.add(
                "rules",
                f"{req.group.name} must give {req.count} {_plural(req.count, 'approval')} for "
                f"{', '.join(req.repositories)}, but has only {len(req.eligible)} "
                f"{_plural(len(req.eligible), 'member')} other than you who can approve. "
                "Ask an admin to add approvers.",
            )


def _plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def submit(
    requester: User,
    *,
    registry: Registry | None,
    rules: Sequence[Rule],
    purpose: str,
    client_kind: str,
    owner: str,
    team: str,
    password_days: int | None,
    retire_on: date | None,
    renews: Token | None = None,
    key_vault: KeyVaultTarget | None = None,
    request: HttpRequest | None = None,
) -> AccessRequest:
    """File a request, or raise Invalid with every error by field and save nothing."""
    found = review(
        requester,
        registry=registry,
        rules=rules,
        purpose=purpose,
        client_kind=client_kind,
        owner=owner,
        team=team,
        password_days=password_days,
        retire_on=retire_on,
        renews=renews,
        key_vault=key_vault,
    )
    return file(requester, found, request)


@transaction.atomic
def file(requester: User, found: Review, request: HttpRequest | None) -> AccessRequest:
    """File a request that `review` found valid (or raise Invalid with what it found wrong)."""
    if found.errors:
        raise Invalid(found.errors)
    assert found.registry is not None and found.owner is not None
    assert found.password_days is not None and found.retire_on is not None
    now = timezone.now()
    access_request = AccessRequest.objects.create(
        registry=found.registry,
        requester=requester,
        owner=found.owner,
        team=found.team,
        purpose=found.purpose,
        client_kind=found.client_kind,
        rules=found.rules,
        password_days=found.password_days,
        retire_on=found.retire_on,
        renews=found.renews,
        created_at=now,
        updated_at=now,
    )
    renews = found.renews
    # A change keeps the token's name: on approval its scope map is updated in place.
    access_request.token_name = (
        renews.name if renews else token_name_for(access_request.client_kind, access_request.team, access_request.pk)
    )
    access_request.save(update_fields=["token_name"])
    target = found.key_vault
    if target is not None:
        KeyVaultDelivery.objects.create(
            request=access_request,
            vault_url=target.vault_url,
            secret_name=target.secret_name,
            rotate_every_days=target.rotate_every_days,
            rotate_before_expiry_days=target.rotate_before_expiry_days,
        )
    requirements = found.requirements
    ApprovalRequirement.objects.bulk_create(
        ApprovalRequirement(
            request=access_request,
            group=r.group,
            count=r.count,
            repositories=r.repositories,
            via_admin_group=r.via_admin_group,
        )
        for r in requirements
    )
    audit.record(
        "request.submitted",
        actor=requester,
        target=access_request,
        details={
            "registry": found.registry.name,
            "rules": access_request.rules,
            "owner": found.owner.get_username(),
            "approvals": {r.group.name: r.count for r in requirements},
            "renews": renews.name if renews else None,
            "delivery": f"{target.vault_url}/secrets/{target.secret_name}" if target else "reveal",
        },
        request=request,
    )
    approvers = {u.pk: u for r in requirements for u in r.eligible}
    transaction.on_commit(lambda: notify.waiting_for_approval(access_request, list(approvers.values())))
    return access_request


def _locked(access_request: AccessRequest) -> AccessRequest:
    # Only the request's row: see the lock order beside `audit._lock_chain`.
    locked = AccessRequest.objects.select_for_update(of=("self",)).select_related("registry", "requester")
    return locked.get(pk=access_request.pk)


def _not_waiting(access_request: AccessRequest) -> Conflict:
    return Conflict(f"This request is {access_request.get_status_display().lower()}, not waiting for approval.")


def approve(access_request: AccessRequest, user: User, comment: str, request: HttpRequest | None) -> bool:
    """Record one approval. True when it was the last one needed and provisioning was queued."""
    with transaction.atomic():
        locked = _locked(access_request)
        access.require(user.pk != locked.requester_id, "You cannot approve your own request.")
        mine = access.approvable_requirements(locked, user)
        access.require(bool(mine), "You are not an approver for this request.")
        if locked.status != RequestStatus.PENDING:
            raise _not_waiting(locked)
        if Approval.objects.filter(request=locked, approver=user).exists():
            raise Conflict("You have already decided on this request.")
        approval = Approval.objects.create(
            request=locked, approver=user, decision=Decision.APPROVE, comment=comment.strip()
        )
        approval.requirements.set(mine)
        audit.record(
            "request.approved",
            actor=user,
            target=locked,
            details={"comment": approval.comment, "groups": [r.group.name for r in mine]},
            request=request,
        )
        if ApprovalRequirement.objects.filter(request=locked).unmet().exists():
            return False
        now = timezone.now()
        moved = AccessRequest.objects.filter(pk=locked.pk, status=RequestStatus.PENDING).update(
            status=RequestStatus.APPROVED, decided_at=now, updated_at=now
        )
        if moved != 1:
            return False
        audit.record("request.fully_approved", actor=user, target=locked, request=request)
        enqueue.provision_request(locked.pk)
        transaction.on_commit(lambda: notify.approved(locked))
    return True


def reject(access_request: AccessRequest, user: User, comment: str, request: HttpRequest | None) -> None:
    comment = comment.strip()
    with transaction.atomic():
        locked = _locked(access_request)
        access.require(access.can_decide(locked, user), "You are not an approver for this request.")
        if not comment:
            raise Invalid("Say why you reject it: the requester will read this.", field="comment")
        now = timezone.now()
        moved = AccessRequest.objects.filter(pk=locked.pk, status=RequestStatus.PENDING).update(
            status=RequestStatus.REJECTED, decided_at=now, updated_at=now
        )
        if moved != 1:
            raise _not_waiting(locked)
        Approval.objects.create(request=locked, approver=user, decision=Decision.REJECT, comment=comment)
        audit.record("request.rejected", actor=user, target=locked, details={"comment": comment}, request=request)
        transaction.on_commit(lambda: notify.rejected(locked, user, comment))


def cancel(access_request: AccessRequest, user: User, request: HttpRequest | None) -> None:
    access.require(access.can_cancel(access_request, user), "Only the requester can cancel a request.")
    with transaction.atomic():
        now = timezone.now()
        moved = AccessRequest.objects.filter(pk=access_request.pk, status=RequestStatus.PENDING).update(
            status=RequestStatus.CANCELLED, decided_at=now, updated_at=now
        )
        if moved != 1:
            raise Conflict("Only a request still waiting for approval can be cancelled.")
        audit.record("request.cancelled", actor=user, target=access_request, request=request)


def retry(access_request: AccessRequest, user: User, request: HttpRequest | None) -> None:
    """An admin sends a failed request back to provisioning, with a fresh count of attempts."""
    access.require(access.can_retry(user), "Only an admin can retry provisioning.")
    with transaction.atomic():
        moved = AccessRequest.objects.filter(pk=access_request.pk, status=RequestStatus.FAILED).update(
            status=RequestStatus.APPROVED, provision_attempts=0, failure_reason="", updated_at=timezone.now()
        )
        if moved != 1:
            raise Conflict("Only a failed request can be retried.")
        audit.record(
            "request.retried",
            actor=user,
            target=access_request,
            details={"previous_failure": access_request.failure_reason},
            request=request,
        )
        enqueue.provision_request(access_request.pk)
