"""Who may do what, decided in one place. Everyone signed in is a requester."""

from __future__ import annotations

from functools import cached_property

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db.models import Q

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
