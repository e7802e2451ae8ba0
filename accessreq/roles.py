"""Who may do what, decided in one place. Everyone signed in is a requester."""

from __future__ import annotations

from functools import cached_property

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db.models import Q, QuerySet

SECURITY_GROUP = getattr(settings, "SECURITY_GROUP", "security")


class Roles:
    def __init__(self, user: AbstractBaseUser | AnonymousUser) -> None:
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


def roles_for(user: AbstractBaseUser | AnonymousUser) -> Roles:
    # Cached on the user object, which lives for one HTTP request.
    cached = getattr(user, "_portal_roles", None)
    if cached is None:
        cached = Roles(user)
        user._portal_roles = cached  # type: ignore[union-attr]
    return cached


def visible_requests(user: AbstractBaseUser) -> QuerySet:
    """What a user may see: their own, those they own, those routed to their groups; everything for security.
    Everything else is answered with a 404, as if it did not exist."""
    from accessreq.models import AccessRequest

    qs = AccessRequest.objects.all()
    roles = roles_for(user)
    if roles.is_security:
        return qs
    routed = AccessRequest.objects.filter(requirements__group__in=roles.group_ids).values("pk")
    return qs.filter(Q(requester=user) | Q(owner=user) | Q(pk__in=routed))


def approval_queue_for(user: AbstractBaseUser) -> QuerySet:
    """Pending requests where one of the user's groups still owes approvals, not filed by them, not yet decided."""
    from accessreq.models import AccessRequest, ApprovalRequirement, RequestStatus

    owed = ApprovalRequirement.objects.unmet().filter(group__in=roles_for(user).group_ids).values("request")
    return (
        AccessRequest.objects.filter(status=RequestStatus.PENDING, pk__in=owed)
        .exclude(requester=user)
        .exclude(approvals__approver=user)
    )
