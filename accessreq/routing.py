"""Who must approve a request: the owners of the repositories it asks for, like CODEOWNERS.

For each requested pattern, the most specific approval rule covering it names the owner group. A wildcard also
reaches every repository below it, so the owners of rules inside the wildcard must approve too. A pattern no rule
covers goes to the registry's admin group. Each group must give as many distinct approvals as the registry asks for
the actions routed to it (more for write, delete or metadata/write). The requester never counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User

from accessreq import scopes
from accessreq.models import ApprovalRule, Registry


@dataclass
class Requirement:
    group: Group
    count: int = 0
    repositories: list[str] = field(default_factory=list)
    actions: set[str] = field(default_factory=set)
    via_admin_group: bool = False
    eligible: list[User] = field(default_factory=list)

    @property
    def short_of_approvers(self) -> bool:
        return len(self.eligible) < self.count


def _specificity(pattern: str) -> tuple[int, bool]:
    # Longer prefixes win; at equal length an exact repository beats a wildcard.
    return (len(pattern.rstrip("*")), not scopes.is_wildcard(pattern))


def owners_of(pattern: str, rules: list[ApprovalRule]) -> list[ApprovalRule]:
    covering = [r for r in rules if scopes.covers(r.pattern, pattern)]
    owners = [max(covering, key=lambda r: _specificity(r.pattern))] if covering else []
    if scopes.is_wildcard(pattern):
        owners += [r for r in rules if r not in owners and scopes.covers(pattern, r.pattern)]
    return owners


def requirements(registry: Registry, rules: list[dict], requester: User | None) -> list[Requirement]:
    approval_rules = list(registry.approval_rules.select_related("group"))
    by_group: dict[int, Requirement] = {}
    for rule in rules:
        owners = owners_of(rule["repository"], approval_rules)
        groups = [(o.group, False) for o in owners] or [(registry.admin_group, True)]
        for group, via_admin in groups:
            req = by_group.setdefault(group.pk, Requirement(group=group, via_admin_group=via_admin))
            if rule["repository"] not in req.repositories:
                req.repositories.append(rule["repository"])
            req.actions.update(rule["actions"])
    found = sorted(by_group.values(), key=lambda r: r.group.name)
    members = _eligible_members([r.group.pk for r in found], requester)
    for req in found:
        req.count = registry.approvals_needed(req.actions)
        req.eligible = members.get(req.group.pk, [])
    return found


def _eligible_members(group_ids: list[int], requester: User | None) -> dict[int, list]:
    members: dict[int, list] = {}
    users = (
        get_user_model()
        .objects.filter(groups__in=group_ids, is_active=True)
        .exclude(pk__in=[requester.pk] if requester is not None else [])
        .prefetch_related("groups")
        .order_by("username")
        .distinct()
    )
    for user in users:
        for group in user.groups.all():
            if group.pk in group_ids:
                members.setdefault(group.pk, []).append(user)
    return members
