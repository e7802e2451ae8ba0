"""Who can pull, push or delete in one repository of a registry, and, the other way round, what one token reaches.

The answer is read from what the portal knows of the registry: the tokens it manages (their approved rules, or the
actions reconcile last found when the scope map drifted, since those are what the registry enforces) and the
tokens reconcile found that the portal did not make (`UnmanagedToken.actions`, read from their scope maps, system
ones included). Rules are additive and wildcards cover repositories that do not exist yet (`scopes.covers`), so a
repository may be asked about before anyone has pushed to it.

What it cannot see, and says so on the page: Microsoft Entra identities with Azure roles on the registry (AcrPull,
AcrPush, ...), the registry's admin user, and anything changed in the registry since the last reconcile.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime

from django.db.models import Prefetch, Q

from accessreq import scopes
from accessreq.errors import Invalid
from accessreq.models import (
    LIVE_TOKEN_STATUSES,
    SLOTS_IN_USE,
    PasswordSlot,
    Registry,
    Token,
    TokenStatus,
    UnmanagedToken,
)

# The repository actions a person asks about, in the words of docker and ACR's documentation.
VERBS = {"content/read": "pull", "content/write": "push", "content/delete": "delete"}
VERB_ORDER = ("pull", "push", "delete")

# The scope maps every registry has, as ACR documents them. Their actions are `repositories/*/...`, so a token on one
# reaches every repository, present and future. Tokens on them are never made by the portal: reconcile lists them
# as unmanaged, with the actions it read from the registry; these are shown beside for reference.
SYSTEM_SCOPE_MAPS: dict[str, tuple[str, ...]] = {
    "_repositories_admin": ("content/read", "content/write", "content/delete", "metadata/read", "metadata/write"),
    "_repositories_pull": ("content/read",),
    "_repositories_pull_metadata_read": ("content/read", "metadata/read"),
    "_repositories_push": ("content/read", "content/write"),
    "_repositories_push_metadata_write": ("content/read", "content/write", "metadata/read", "metadata/write"),
}


@dataclass(frozen=True)
class ScopeAction:
    """One scope-map action, `repositories/<pattern>/<content|metadata>/<op>`, split."""

    pattern: str
    action: str

    @property
    def text(self) -> str:
        return f"repositories/{self.pattern}/{self.action}"

    @classmethod
    def parse(cls, text: str) -> ScopeAction | None:
        parts = text.split("/")
        if len(parts) < 4 or parts[0] != "repositories":
            return None
        return cls("/".join(parts[1:-2]), "/".join(parts[-2:]))


@dataclass
class Grant:
    """One token that reaches a repository: what it may do there, through which scope-map actions."""

    token: str
    kind: str  # "managed" or "unmanaged"
    status: str
    scope_map: str
    actions: list[str]  # pull, push, delete, in that order
    via: list[str]
    owner: str | None = None
    team: str = ""
    token_id: int | None = None
    unmanaged_id: int | None = None
    expires_at: datetime | None = None
    retire_on: date | None = None
    # Filled when the portal learns when a token was last used; None means "not known", never "never used".
    last_used_at: datetime | None = None
    drifted: bool = False
    system_scope_map: bool = False

    @property
    def exact(self) -> bool:
        """Reached through a rule naming the repository itself, rather than a wildcard only."""
        parsed = (ScopeAction.parse(v) for v in self.via)
        return any(p is not None and not scopes.is_wildcard(p.pattern) for p in parsed)

    @property
    def works_now(self) -> bool:
        return self.status in (TokenStatus.ACTIVE, "enabled")

    def as_json(self) -> dict[str, object]:
        return {
            "token": self.token,
            "owner": self.owner,
            "status": self.status,
            "actions": self.actions,
            "via": self.via,
            "managed": self.kind == "managed",
            "team": self.team,
            "scope_map": self.scope_map,
            "expires_at": self.expires_at,
            "retire_on": self.retire_on,
            "last_used_at": self.last_used_at,
        }


@dataclass
class Reach:
    """One pattern a token reaches and what it may do there."""

    pattern: str
    actions: list[str] = field(default_factory=list)  # scope-map actions, content/read ...
    via: list[str] = field(default_factory=list)

    @property
    def words(self) -> str:
        return describe(self.pattern, self.actions)

    def as_json(self) -> dict[str, object]:
        return {"repository": self.pattern, "actions": self.actions, "via": self.via}


def describe(pattern: str, actions: Iterable[str]) -> str:
    """A rule in plain words: "pull and push in every repository under myapp/, including ones created later"."""
    labels = [scopes.ACTION_LABELS.get(a, a) for a in actions]
    verbs = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1] if labels else "nothing"
    if pattern == "*":
        where = "every repository of the registry, including ones created later"
    elif scopes.is_wildcard(pattern):
        where = f"every repository under {pattern[:-1]}, including ones created later"
    else:
        where = f"the repository {pattern}"
    return f"{verbs} in {where}"


def validate_repository(repository: str) -> str:
    """One concrete repository name (not a pattern), or Invalid (400)."""
    repository = repository.strip()
    if not repository:
        raise Invalid("Name a repository, e.g. myapp/api.", field="repository")
    if "*" in repository:
        raise Invalid("Name one repository, not a pattern: myapp/api rather than myapp/*.", field="repository")
    error = scopes.validate_repository(repository)
    if error:
        raise Invalid(error, field="repository")
    return repository


def covering_patterns(repository: str) -> list[str]:
    """Every pattern that can cover `repository`: itself, each prefix wildcard above it, and `*`."""
    parts = repository.split("/")
    return [repository, "*", *("/".join(parts[:i]) + "/*" for i in range(1, len(parts)))]


def _granted(actions: Iterable[str], repository: str) -> tuple[list[str], list[str]]:
    """The verbs and the scope-map actions behind them that reach `repository`."""
    verbs: set[str] = set()
    via: list[str] = []
    for text in actions:
        parsed = ScopeAction.parse(text)
        if parsed is None or parsed.action not in VERBS or not scopes.covers(parsed.pattern, repository):
            continue
        verbs.add(VERBS[parsed.action])
        via.append(parsed.text)
    return [v for v in VERB_ORDER if v in verbs], sorted(set(via))


def enforced_actions(token: Token) -> list[str]:
    """What the registry holds for a managed token: the drifted actions when reconcile found any, else the
    approved ones."""
    return list(token.drift_actions) if token.drift_actions is not None else token.approved_actions


def _expiry(token: Token) -> datetime | None:
    expiries = [s.expires_at for s in token.slots.all() if s.status in SLOTS_IN_USE and s.expires_at is not None]
    return max(expiries) if expiries else None


def _managed_candidates(registry: Registry, repository: str) -> Iterator[Token]:
    """Live tokens whose rules name a pattern that could cover the repository, narrowed in SQL (a text match on the
    stored rules, then checked exactly in Python), plus every drifted one."""
    named = Q()
    for pattern in covering_patterns(repository):
        named |= Q(rules__icontains=f'"repository": "{pattern}"')
    qs = (
        Token.objects.filter(registry=registry, status__in=LIVE_TOKEN_STATUSES)
        .filter(named | Q(drift_actions__isnull=False))
        .select_related("owner")
        .prefetch_related(Prefetch("slots", queryset=PasswordSlot.objects.only("token_id", "status", "expires_at")))
        .order_by("name")
    )
    return qs.iterator(chunk_size=2000)


def who_can(registry: Registry, repository: str) -> list[Grant]:
    """Every token that can pull, push or delete in `repository` (existing or not yet), managed ones first."""
    repository = validate_repository(repository)
    grants: list[Grant] = []
    for token in _managed_candidates(registry, repository):
        verbs, via = _granted(enforced_actions(token), repository)
        if not verbs:
            continue
        grants.append(
            Grant(
                token=token.name,
                kind="managed",
                status=token.status,
                scope_map=token.scope_map_name,
                actions=verbs,
                via=via,
                owner=token.owner.get_username(),
                team=token.team,
                token_id=token.pk,
                expires_at=_expiry(token),
                retire_on=token.retire_on,
                last_used_at=getattr(token, "last_used_at", None),
                drifted=token.drift_actions is not None,
            )
        )
    for unmanaged in UnmanagedToken.objects.filter(registry=registry).order_by("name").iterator(chunk_size=2000):
        verbs, via = _granted(unmanaged.actions or _system_actions(unmanaged.scope_map_name), repository)
        if not verbs:
            continue
        grants.append(
            Grant(
                token=unmanaged.name,
                kind="unmanaged",
                status=unmanaged.status,
                scope_map=unmanaged.scope_map_name,
                actions=verbs,
                via=via,
                unmanaged_id=unmanaged.pk,
                last_used_at=getattr(unmanaged, "last_used_at", None),
                system_scope_map=unmanaged.scope_map_name in SYSTEM_SCOPE_MAPS,
            )
        )
    return grants


def _system_actions(scope_map_name: str) -> list[str]:
    return [f"repositories/*/{a}" for a in SYSTEM_SCOPE_MAPS.get(scope_map_name, ())]


def system_scope_maps(registry: Registry) -> list[dict[str, object]]:
    """The registry's system scope maps, what they allow, and the tokens reconcile found on each."""
    users: dict[str, list[str]] = {}
    for name, scope_map in UnmanagedToken.objects.filter(
        registry=registry, scope_map_name__in=list(SYSTEM_SCOPE_MAPS)
    ).values_list("name", "scope_map_name"):
        users.setdefault(scope_map, []).append(name)
    return [
        {"name": name, "words": describe("*", actions), "tokens": sorted(users.get(name, []))}
        for name, actions in SYSTEM_SCOPE_MAPS.items()
    ]


def reach_of(actions: Iterable[str]) -> list[Reach]:
    """Everything a set of scope-map actions reaches, one line per pattern, widest first."""
    by_pattern: dict[str, Reach] = {}
    for text in actions:
        parsed = ScopeAction.parse(text)
        if parsed is None:
            continue
        reach = by_pattern.setdefault(parsed.pattern, Reach(parsed.pattern))
        reach.actions.append(parsed.action)
        reach.via.append(parsed.text)
    for reach in by_pattern.values():
        reach.actions = [a for a in scopes.ACTIONS if a in reach.actions]
        reach.via = sorted(set(reach.via))

    def width(r: Reach) -> tuple[int, str]:
        return (0 if r.pattern == "*" else 1 if scopes.is_wildcard(r.pattern) else 2, r.pattern)

    return sorted(by_pattern.values(), key=width)


def token_reach(token: Token) -> list[Reach]:
    return reach_of(enforced_actions(token))


def reach_now(token: Token) -> list[Reach]:
    """What the token reaches in its registry today: nothing once it is deleted there (retired or gone); otherwise
    its scope map as the registry holds it, drift included. A disabled token keeps its reach for when it is enabled."""
    if not token.is_live:
        return []
    return token_reach(token)


def unmanaged_reach(unmanaged: UnmanagedToken) -> list[Reach]:
    return reach_of(unmanaged.actions or _system_actions(unmanaged.scope_map_name))
