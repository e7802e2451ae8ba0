"""A request's way from filed to approved, rejected or cancelled.

Every transition is a conditional update on the current status, so two clicks or two approvers cannot both win, and
every one is audited in the same transaction.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accessreq import audit, notify
from accessreq.models import (
    AccessRequest,
    Approval,
    ApprovalRequirement,
    Decision,
    RequestStatus,
)
from accessreq.roles import roles_for


class TransitionError(Exception):
    """The request is no longer in a state where this applies (HTTP 409)."""


def token_name_for(client_kind: str, team: str, number: int | str) -> str:
    """`ci-payments-42`: readable in the registry, valid for ACR (letters, digits, hyphens, 5-50), and unique
    because it ends in the request's number."""
    slug = re.sub(r"[^a-z0-9]+", "-", team.lower()).strip("-") or "team"
    suffix = f"-{number}"
    head = f"{client_kind}-{slug}"[: 50 - len(suffix)].rstrip("-")
    return f"{head}{suffix}"


@transaction.atomic
def submit(cleaned: dict[str, Any], requirements: list, requester: AbstractBaseUser, request: HttpRequest | None):
    now = timezone.now()
    access_request = AccessRequest.objects.create(
        registry=cleaned["registry"],
        requester=requester,
        owner=cleaned["owner"],
        team=cleaned["team"],
        purpose=cleaned["purpose"],
        client_kind=cleaned["client_kind"],
        rules=cleaned["rules"],
        password_days=cleaned["password_days"],
        retire_on=cleaned["retire_on"],
        renews=cleaned.get("renews"),
        created_at=now,
        updated_at=now,
    )
    renews = access_request.renews
    # A change keeps the token's name: on approval its scope map is updated in place.
    access_request.token_name = (
        renews.name if renews else token_name_for(access_request.client_kind, access_request.team, access_request.pk)
    )
    access_request.save(update_fields=["token_name"])
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
            "registry": access_request.registry.name,
            "rules": access_request.rules,
            "owner": access_request.owner.get_username(),
            "approvals": {r.group.name: r.count for r in requirements},
            "renews": renews.name if renews else None,
        },
        request=request,
    )
    approvers = {u.pk: u for r in requirements for u in r.eligible}
    transaction.on_commit(lambda: notify.waiting_for_approval(access_request, list(approvers.values())))
    return access_request


def approvable_requirements(access_request: AccessRequest, user: AbstractBaseUser) -> list[ApprovalRequirement]:
    """The owner groups this user may approve for. Never any for the requester, whatever their groups."""
    if user.pk == access_request.requester_id:
        return []
    group_ids = roles_for(user).group_ids
    return [r for r in access_request.requirements.all() if r.group_id in group_ids]


def _locked(access_request: AccessRequest) -> AccessRequest:
    return AccessRequest.objects.select_for_update().select_related("registry", "requester").get(pk=access_request.pk)


def approve(access_request: AccessRequest, user: AbstractBaseUser, comment: str, request: HttpRequest | None) -> bool:
    """Record one approval. True when it was the last one needed and provisioning was queued."""
    from accessreq import tasks

    with transaction.atomic():
        locked = _locked(access_request)
        if user.pk == locked.requester_id:
            raise PermissionDenied("You cannot approve your own request.")
        mine = approvable_requirements(locked, user)
        if not mine:
            raise PermissionDenied("You are not an approver for this request.")
        if locked.status != RequestStatus.PENDING:
            raise TransitionError(f"This request is {locked.get_status_display().lower()}, not waiting for approval.")
        if Approval.objects.filter(request=locked, approver=user).exists():
            raise TransitionError("You have already decided on this request.")
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
        tasks.provision_request.delay_on_commit(locked.pk)
        transaction.on_commit(lambda: notify.approved(locked))
    return True


def reject(access_request: AccessRequest, user: AbstractBaseUser, comment: str, request: HttpRequest | None) -> None:
    with transaction.atomic():
        locked = _locked(access_request)
        if not approvable_requirements(locked, user):
            raise PermissionDenied("You are not an approver for this request.")
        comment = comment.strip()
        if not comment:
            raise ValueError("Say why you reject it: the requester will read this.")
        now = timezone.now()
        moved = AccessRequest.objects.filter(pk=locked.pk, status=RequestStatus.PENDING).update(
            status=RequestStatus.REJECTED, decided_at=now, updated_at=now
        )
        if moved != 1:
            raise TransitionError(f"This request is {locked.get_status_display().lower()}, not waiting for approval.")
        Approval.objects.create(request=locked, approver=user, decision=Decision.REJECT, comment=comment)
        audit.record("request.rejected", actor=user, target=locked, details={"comment": comment}, request=request)
        transaction.on_commit(lambda: notify.rejected(locked, user, comment))


def cancel(access_request: AccessRequest, user: AbstractBaseUser, request: HttpRequest | None) -> None:
    if user.pk != access_request.requester_id:
        raise PermissionDenied("Only the requester can cancel a request.")
    with transaction.atomic():
        now = timezone.now()
        moved = AccessRequest.objects.filter(pk=access_request.pk, status=RequestStatus.PENDING).update(
            status=RequestStatus.CANCELLED, decided_at=now, updated_at=now
        )
        if moved != 1:
            raise TransitionError("Only a request still waiting for approval can be cancelled.")
        audit.record("request.cancelled", actor=user, target=access_request, request=request)


def retry(access_request: AccessRequest, user: AbstractBaseUser, request: HttpRequest | None) -> None:
    """An admin sends a failed request back to provisioning, with a fresh count of attempts."""
    from accessreq import tasks

    if not roles_for(user).is_admin:
        raise PermissionDenied("Only an admin can retry provisioning.")
    with transaction.atomic():
        moved = AccessRequest.objects.filter(pk=access_request.pk, status=RequestStatus.FAILED).update(
            status=RequestStatus.APPROVED, provision_attempts=0, failure_reason="", updated_at=timezone.now()
        )
        if moved != 1:
            raise TransitionError("Only a failed request can be retried.")
        audit.record(
            "request.retried",
            actor=user,
            target=access_request,
            details={"previous_failure": access_request.failure_reason},
            request=request,
        )
        tasks.provision_request.delay_on_commit(access_request.pk)

