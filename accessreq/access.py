"""Who may see and do what, decided here and nowhere else.

Pages, the API, management commands and tasks get requests, tokens and password slots through the `get_*` lookups
below, and ask the `can_*` rules before acting. A lookup answers 404 (Http404) for what the user may not see, as if
it did not exist; a rule that says no raises `errors.Forbidden` (403) for what they may see but not do.

Everyone signed in is a requester. Approvers are members of a group that owns repositories (an approval rule) or
administers a registry. Security staff are members of SECURITY_GROUP; admins are superusers and count as security.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group, User
from django.db.models import Model, Q, QuerySet
from django.http import Http404

from accessreq import routing
from accessreq.errors import Forbidden
from accessreq.models import (
    AccessRequest,
    AccessReview,
    ApprovalRequirement,
    PasswordSlot,
    Registry,
    RequestStatus,
    ReviewItem,
    SlotStatus,
    Token,
    TokenStatus,
    UnmanagedToken,
    WebhookDelivery,
)

SECURITY_GROUP = getattr(settings, "SECURITY_GROUP", "security")
M = TypeVar("M", bound=Model)
Prepare = Callable[[QuerySet[M]], QuerySet[M]]


class Roles:
    def __init__(self, user: User | AnonymousUser) -> None:
        self.user = user

    @cached_property
    def group_ids(self) -> frozenset[int]:
        if not self.user.is_authenticated:
            return frozenset()
        return frozenset(self.user.groups.values_list("id", flat=True))

    @property
    def is_admin(self) -> bool:
        return bool(self.user.is_authenticated and self.user.is_superuser)

    @cached_property
    def is_security(self) -> bool:
        if self.is_admin:
            return True
        return Group.objects.filter(id__in=self.group_ids, name=SECURITY_GROUP).exists() if self.group_ids else False

    @cached_property
    def is_approver(self) -> bool:
        if not self.group_ids:
            return False
        return Group.objects.filter(
            Q(approval_rules__isnull=False) | Q(administered_registries__isnull=False), id__in=self.group_ids
        ).exists()

    @cached_property
    def group_names(self) -> list[str]:
        if not self.user.is_authenticated:
            return []
        return list(Group.objects.filter(id__in=self.group_ids).values_list("name", flat=True))


def roles_for(user: User | AnonymousUser) -> Roles:
    # Cached on the user object, which lives for one HTTP request.
    cached: Roles | None = getattr(user, "_portal_roles", None)
    if cached is None:
        cached = Roles(user)
        user._portal_roles = cached  # type: ignore[union-attr]  # a per-request cache on the user object
    return cached


def require(allowed: bool, message: str) -> None:
    if not allowed:
        raise Forbidden(message)


def require_security(user: User, message: str = "This is for security staff.") -> None:
    require(roles_for(user).is_security, message)


def _first_or_404(qs: QuerySet[M], message: str) -> M:
    found = qs.first()
    if found is None:
        raise Http404(message)
    return found


def _same(qs: QuerySet[M]) -> QuerySet[M]:
    return qs


# --- requests ------------------------------------------------------------------------------------------------------


def visible_requests(user: User) -> QuerySet[AccessRequest]:
    """Their own, those they own, those routed to their groups; everything for security."""
    qs = AccessRequest.objects.all()
    roles = roles_for(user)
    if roles.is_security:
        return qs
    routed = AccessRequest.objects.filter(requirements__group__in=roles.group_ids).values("pk")
    return qs.filter(Q(requester=user) | Q(owner=user) | Q(pk__in=routed))


def my_requests(user: User) -> QuerySet[AccessRequest]:
    """The list a person calls theirs: filed by them or owned by them."""
    return AccessRequest.objects.filter(Q(requester=user) | Q(owner=user))


def approval_queue_for(user: User) -> QuerySet[AccessRequest]:
    """Pending requests where one of the user's groups still owes approvals, not filed by them, not yet decided."""
    # Only pending requests' requirements are counted: an approver's whole history stays out of the grouping.
    owed = (
        ApprovalRequirement.objects.filter(group__in=roles_for(user).group_ids, request__status=RequestStatus.PENDING)
        .unmet()
        .values("request")
    )
    return (
        AccessRequest.objects.filter(status=RequestStatus.PENDING, pk__in=owed)
        .exclude(requester=user)
        .exclude(approvals__approver=user)
    )


def get_request_for_user(user: User, pk: int, prepare: Prepare[AccessRequest] = _same) -> AccessRequest:
    qs = visible_requests(user).select_related("registry", "requester", "owner").filter(pk=pk)
    return _first_or_404(prepare(qs), "No such request.")


def approvable_requirements(access_request: AccessRequest, user: User) -> list[ApprovalRequirement]:
    """The owner groups this user may approve for. Never any for the requester, whatever their groups."""
    if user.pk == access_request.requester_id:
        return []
    group_ids = roles_for(user).group_ids
    return [r for r in access_request.requirements.all() if r.group_id in group_ids]


def can_decide(access_request: AccessRequest, user: User) -> bool:
    """Approve or reject: a member of an owner group the request is routed to, other than its requester."""
    return bool(approvable_requirements(access_request, user))


def can_cancel(access_request: AccessRequest, user: User) -> bool:
    return user.pk == access_request.requester_id


def can_retry(user: User) -> bool:
    """Send failed provisioning (a request or a password) back to the worker: admins."""
    return roles_for(user).is_admin


def sees_failure_reasons(user: User) -> bool:
    roles = roles_for(user)
    return roles.is_admin or roles.is_security


# --- tokens --------------------------------------------------------------------------------------------------------


def tokens_for(user: User) -> QuerySet[Token]:
    """Owned, requested, owned by a team whose group they are in, or approved by one of their groups (whose members
    may need to disable them); all of them for security."""
    qs = Token.objects.all()
    roles = roles_for(user)
    if roles.is_security:
        return qs
    # One indexed lookup per reason, combined with UNION: an OR across them (and across the tables a routed token is
    # found through) would make the database read every token.
    ids = Token.objects.order_by().filter(owner=user).values("pk")
    parts: list[QuerySet[Any, Any]] = [Token.objects.order_by().filter(requester=user).values("pk")]
    groups = roles.group_ids
    if groups:
        routed = ApprovalRequirement.objects.order_by().filter(group__in=groups)
        parts += [
            Token.objects.order_by().filter(team__in=roles.group_names).values("pk"),
            Token.objects.order_by().filter(request__in=routed.values("request")).values("pk"),
            AccessRequest.objects.order_by()
            .filter(renews__isnull=False, pk__in=routed.values("request"))
            .values("renews"),
        ]
    return qs.filter(pk__in=ids.union(*parts))


def get_token_for_user(user: User, pk: int, prepare: Prepare[Token] = _same) -> Token:
    qs = tokens_for(user).select_related("registry", "owner", "requester").filter(pk=pk)
    return _first_or_404(prepare(qs), "No such token.")


def can_manage(token: Token, user: User) -> bool:
    """Retire, transfer, renew, change reminders: the owner, security and admins. (Rotating is `can_rotate`.)"""
    return user.pk == token.owner_id or roles_for(user).is_security


def can_record_storage(token: Token, user: User) -> bool:
    """Say where a revealed password is stored: the person who asked for it (and revealed it)."""
    return user.pk == token.requester_id


def can_see_storage(token: Token, user: User) -> bool:
    """Where a revealed password is stored, or which vault holds it: its requester, owner and security."""
    return can_record_storage(token, user) or can_manage(token, user)


def can_rotate(token: Token, user: User) -> bool:
    """Minting a new password is the owner's alone. Security and admins may stop a token at once (disable, retire)
    and hand it to someone else, but a password for a token they do not own is not theirs to mint and reveal: the
    one who reveals it holds the token's access, unseen by its owner."""
    return user.pk == token.owner_id


def can_transfer_to(token: Token, user: User, new_owner: User) -> bool:
    """The owner hands a token to anyone; security hands it to someone other than themselves (else a transfer to
    oneself, then a rotation, would mint a password of someone else's token). Both owners are told."""
    if not can_manage(token, user):
        return False
    return user.pk == token.owner_id or new_owner.pk != user.pk


def can_switch(token: Token, user: User) -> bool:
    """Disable and enable: also an approver of the token's repositories, who may need to stop it at once."""
    if can_manage(token, user):
        return True
    owners = {r.group.pk for r in routing.requirements(token.registry, token.rules, None)}
    return bool(owners & roles_for(user).group_ids)


def token_to_change(user: User, pk: int) -> Token:
    """A renewal or change starts from a live token the user manages."""
    token = get_token_for_user(user, pk)
    require(can_manage(token, user), "Only the token's owner or security can ask to change it.")
    require(token.status in (TokenStatus.ACTIVE, TokenStatus.DISABLED), "A retired token cannot change.")
    return token


# --- password slots ------------------------------------------------------------------------------------------------


def can_reveal(slot: PasswordSlot, user: User) -> bool:
    """A password is revealed to the one person who asked for it: the requester, or whoever rotated."""
    return slot.requested_by_id == user.pk


def passwords_to_reveal(user: User) -> QuerySet[PasswordSlot]:
    """Passwords generated for this person and not yet revealed: first passwords and rotated ones alike."""
    return PasswordSlot.objects.filter(requested_by=user, status=SlotStatus.AWAITING_REVEAL)


def first_slot_for_requester(user: User, request_pk: int) -> PasswordSlot:
    """A request's first password. Who may see the request but did not ask for it gets a 403; others a 404."""
    access_request = get_request_for_user(user, request_pk)
    slot = (
        PasswordSlot.objects.select_related("token__registry", "token__request")
        .filter(token__request=access_request, name="password1")
        .first()
    )
    if slot is None:
        require(user.pk == access_request.requester_id, "Only the requester can reveal this password.")
        raise Http404("This request has no password yet.")
    require(can_reveal(slot, user), "Only the person who asked for this password can reveal it.")
    return slot


def slot_for_revealer(user: User, token_pk: int, name: str) -> PasswordSlot:
    """A token's password slot, for the one person who may reveal it (403 for others who see the token)."""
    token = get_token_for_user(user, token_pk)
    slot = _first_or_404(
        PasswordSlot.objects.select_related("token__registry", "token__request").filter(token=token, name=name),
        "No such password.",
    )
    require(can_reveal(slot, user), "Only the person who asked for this password can reveal it.")
    return slot


def slot_for_admin(user: User, token_pk: int, name: str) -> PasswordSlot:
    """A password slot whose generation failed, for an admin to send back to the worker."""
    token = get_token_for_user(user, token_pk)
    slot = _first_or_404(PasswordSlot.objects.filter(token=token, name=name), "No such password.")
    require(can_retry(user), "Only an admin can retry generating a password.")
    return slot


# --- security's objects --------------------------------------------------------------------------------------------


def get_unmanaged_for_security(user: User, pk: int) -> UnmanagedToken:
    require_security(user)
    return _first_or_404(UnmanagedToken.objects.select_related("registry").filter(pk=pk), "No such token.")


def get_delivery_for_security(user: User, pk: int) -> WebhookDelivery:
    require_security(user)
    return _first_or_404(WebhookDelivery.objects.select_related("endpoint").filter(pk=pk), "No such delivery.")


def get_registry_for_security(user: User, pk: int) -> Registry:
    require_security(user)
    return _first_or_404(Registry.objects.filter(pk=pk, active=True), "No such registry.")


def security_emails() -> list[str]:
    """Where security is told about events that need a person."""
    return list(
        get_user_model()
        .objects.filter(Q(groups__name=SECURITY_GROUP) | Q(is_superuser=True), is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
        .distinct()
    )



# --- security's tools ----------------------------------------------------------------------------------------------


def registry_named_for_security(user: User, name: str) -> Registry:
    """A registry by its name, for security's questions about it (who can, exports): 403 for others, then 404."""
    require_security(user)
    return _first_or_404(Registry.objects.filter(name__iexact=name.strip()), "No such registry.")


def get_any_token_for_security(user: User, pk: int) -> Token:
    require_security(user)
    return _first_or_404(Token.objects.select_related("registry", "owner").filter(pk=pk), "No such token.")


def get_review_for_security(user: User, pk: int) -> AccessReview:
    require_security(user)
    return _first_or_404(AccessReview.objects.select_related("registry", "created_by").filter(pk=pk), "No such review.")


def review_items_for(user: User) -> QuerySet[ReviewItem]:
    """The review items a person answers: those of the tokens they own or their team owns."""
    teams = roles_for(user).group_names
    return ReviewItem.objects.filter(Q(owner=user) | Q(token__owner=user) | Q(token__team__in=teams))


def can_answer(item: ReviewItem, user: User) -> bool:
    """Keep, change or retire: the token's owner (or its team), and security."""
    return (
        user.pk in (item.owner_id, item.token.owner_id)
        or item.token.team in roles_for(user).group_names
        or roles_for(user).is_security
    )


def get_review_item_for_user(user: User, pk: int) -> ReviewItem:
    """An item its owner, their team or security may see; 404 for anyone else."""
    qs = ReviewItem.objects.all() if roles_for(user).is_security else review_items_for(user)
    item = _first_or_404(
        qs.select_related("review", "token__registry", "token__owner", "owner").filter(pk=pk), "No such review item."
    )
    require(can_answer(item, user), "Only the token's owner can answer for it.")
    return item
