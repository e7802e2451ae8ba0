"""A token's history from the audit log: its requests and their approvals, its passwords' generation, reveals,
rotations and deletions, and every disable, enable, transfer and retirement, newest first.

Found by target (the token, its password slots, the request that made it and the requests that changed it) through
the audit log's (target_type, target_id) index, plus events that name the token in their details; always bounded.
"""

from __future__ import annotations

from django.db.models import Model, Q, QuerySet

from accessreq.models import AccessRequest, AuditEvent, PasswordSlot, Token

LIMIT = 100
LABELS = {
    "request.submitted": "asked for it",
    "request.approved": "approved",
    "request.fully_approved": "fully approved",
    "request.rejected": "rejected",
    "request.cancelled": "cancelled the request",
    "request.provisioning": "provisioning started",
    "request.ready": "ready",
    "request.failed": "provisioning failed",
    "request.retried": "provisioning retried",
    "token.created": "created in the registry",
    "token.changed": "access changed",
    "password.generated": "password generated",
    "password.revealed": "password revealed",
    "password.reveal_refused": "second reveal refused",
    "password.reveal_expired": "not revealed in time",
    "password.expired": "password expired",
    "password.deleted": "password deleted",
    "password.requested_again": "new password asked for",
    "token.rotated": "rotation started",
    "token.disabled": "disabled",
    "token.enabled": "enabled",
    "token.retiring": "retired early",
    "token.retired": "retired",
    "token.transferred": "handed over",
    "token.let_expire": "reminders switched off",
    "token.remind_again": "reminders back on",
    "token.orphaned": "owner deactivated",
    "token.drift_found": "scope map changed outside the portal",
    "token.drift_restored": "scope map restored",
    "token.gone": "deleted outside the portal",
    "token.adopted": "adopted",
}


def _label(model: type[Model]) -> str:
    return model._meta.label_lower


def for_token(token: Token, limit: int = LIMIT) -> QuerySet[AuditEvent]:
    slot_ids = [str(pk) for pk in PasswordSlot.objects.filter(token=token).values_list("pk", flat=True)[:50]]
    request_ids = [str(pk) for pk in AccessRequest.objects.filter(renews=token).values_list("pk", flat=True)[:50]]
    if token.request_id:
        request_ids.append(str(token.request_id))
    match = Q(target_type=_label(Token), target_id=str(token.pk))
    if slot_ids:
        match |= Q(target_type=_label(PasswordSlot), target_id__in=slot_ids)
    if request_ids:
        match |= Q(target_type=_label(AccessRequest), target_id__in=request_ids)
    # Every request event that names the token in its details targets its own request or a renewal, both matched
    # above by id; matching the name inside the JSON would read the whole audit log and catch a namesake in
    # another registry.
    return AuditEvent.objects.filter(match).order_by("-id")[:limit]


def label(action: str) -> str:
    return LABELS.get(action, action.replace("_", " ").replace(".", ": "))
