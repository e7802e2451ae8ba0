"""What a token may do to a repository, and which registry a data plane serves.

The rules the token server (`tokenserver.py`) applies at `docker login` / push / pull, kept apart from HTTP so tests
can also ask them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from acr_emulator import names
from acr_emulator.state import Registry, State, Token, utcnow

# Scope-map actions as the registry's token endpoint names them in a JWT's `access` claim. The metadata ones are
# what ACR's own clients ask for (`repository:<repo>:metadata_read` before listing tags through /acr/v1/).
DATA_PLANE_ACTIONS = {
    "content/read": "pull",
    "content/write": "push",
    "content/delete": "delete",
    "metadata/read": "metadata_read",
    "metadata/write": "metadata_write",
}


@dataclass
class DataPlaneConfig:
    """Where the emulator's data plane (a Distribution registry beside it) answers, and for which registry.

    A data plane serves one registry, as a login server does: registries created while `address` is set are marked
    with it (the first one only, while no other registry holds the mark); `registry` names one registry, existing or
    yet to come, that takes the mark instead. A marked registry reports `address` as its login server only while the
    emulator runs with that same address, so an emulator started without a data plane reports `<name>.azurecr.io`
    again.
    """

    address: str | None = None
    registry: str | None = None

    def login_server(self, registry: Registry) -> str:
        if self.address is not None and registry.data_plane == self.address:
            return self.address
        return f"{registry.name.lower()}.azurecr.io"

    def claim(self, state: State, registry: Registry) -> bool:
        """Mark a newly created registry, if this data plane is for it. Call with state.lock held."""
        if self.address is None:
            return False
        if self.registry is not None:
            if registry.name.lower() != self.registry.lower():
                return False
        elif any(r is not registry and r.data_plane == self.address for r in state.registries.values()):
            return False
        self._take(state, registry)
        return True

    def apply(self, state: State) -> bool:
        """At start-up or after a config change: mark the named registry if it already exists."""
        if self.address is None or self.registry is None:
            return False
        with state.lock:
            registry = state.registries.get(self.registry.lower())
            if registry is None or registry.data_plane == self.address:
                return False
            self._take(state, registry)
            return True

    def _take(self, state: State, registry: Registry) -> None:
        for other in state.registries.values():
            if other is not registry and other.data_plane == self.address:
                other.data_plane = None
        registry.data_plane = self.address

    def registry_for(self, state: State, service: str) -> Registry | None:
        """The registry whose login server is `service` (the `service` a token request names)."""
        service = service.strip().lower()
        with state.lock:
            for registry in state.registries.values():
                if self.login_server(registry).lower() == service:
                    return registry
        return None


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


@dataclass(frozen=True)
class Authentication:
    """The outcome of checking a token name and password: the token and its scope-map actions, or why not."""

    token: Token | None
    actions: tuple[str, ...]
    failure: str | None  # None when authenticated; else a short reason for the login log, never for the client

    @property
    def ok(self) -> bool:
        return self.failure is None


def authenticate(
    state: State, registry: Registry, token_name: str, password: str, now: datetime | None = None
) -> Authentication:
    """Check `token_name` / `password` against the registry's tokens and their salted password hashes."""
    now = now or utcnow()
    with state.lock:
        token = registry.tokens.get(token_name.lower())
        if token is None:
            return Authentication(None, (), "unknown token")
        if token.provisioning_state == "Failed":
            return Authentication(token, (), "token creation failed")
        if token.status != "enabled":
            return Authentication(token, (), "token disabled")
        slot = next((s for s in token.passwords.values() if s.matches(password)), None)
        if slot is None:
            return Authentication(token, (), "wrong password")
        if slot.expired(now):
            return Authentication(token, (), f"{slot.name} expired")
        scope_map = registry.scope_maps.get(token.scope_map)
        if scope_map is None:
            return Authentication(token, (), "scope map missing")
        return Authentication(token, tuple(scope_map.actions), None)


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
    with state.lock:
        registry = state.registries.get(registry_name.lower())
        if registry is None:
            return frozenset()
        result = authenticate(state, registry, token_name, password, now)
        return effective_actions(list(result.actions), repository) if result.ok else frozenset()
