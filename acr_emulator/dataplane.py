"""What a token may do to a repository: the check a registry's token server makes at `docker login`/push/pull.

Used by tests to prove that what the portal provisioned grants exactly the intended access.
"""

from __future__ import annotations

from datetime import datetime

from acr_emulator import names
from acr_emulator.state import State, utcnow


def effective_actions(actions: list[str], repository: str) -> frozenset[str]:
    """The actions ("content/read", ...) that scope-map `actions` grant on `repository`.

    Rules are additive: every rule whose repository or wildcard matches contributes. Raises ValueError on
    a malformed action, since a scope map holding one could never have been saved.
    """
    if not names.is_valid_repository(repository):
        return frozenset()
    granted = set()
    for action in actions:
        parsed = names.parse_action(action)
        if names.pattern_matches(parsed.pattern, repository):
            granted.add(parsed.name)
    return frozenset(granted)


def allowed_actions(
    state: State,
    registry_name: str,
    token_name: str,
    password: str,
    repository: str,
    now: datetime | None = None,
) -> frozenset[str]:
    """The actions `token_name` authenticating with `password` has on `repository`, at `now`.

    Empty when the registry or token is unknown, the token is disabled or its creation failed, the password
    matches no slot, or the slot it matches has expired.
    """
    now = now or utcnow()
    with state.lock:
        registry = state.registries.get(registry_name.lower())
        token = registry.tokens.get(token_name.lower()) if registry else None
        if registry is None or token is None or token.status != "enabled" or token.provisioning_state == "Failed":
            return frozenset()
        slot = next((s for s in token.passwords.values() if s.matches(password)), None)
        if slot is None or slot.expired(now):
            return frozenset()
        scope_map = registry.scope_maps.get(token.scope_map)
        if scope_map is None:
            return frozenset()
        return effective_actions(scope_map.actions, repository)
