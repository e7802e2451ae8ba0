"""The only module that talks to Azure Container Registry.

It builds the management client from settings and turns the SDK's errors into a small set of our own, so the rest of
the portal decides what to do (retry, fail, report) without knowing azure-core.

Retries live in one layer, Celery's: the SDK's own retry policy is switched off, because it sleeps in-process on a
429's Retry-After (up to minutes), which would hold a worker hostage while the broker's visibility timeout runs.
The one exception is ARM's write budget: every write first takes a token from the bucket all workers share
(accessreq.armbudget), and a write throttled with a Retry-After that ends within ACR_TIMEOUT is sent again once it
has passed, rather than costing the request one of its attempts.

Each worker process keeps one SDK client per subscription (and endpoint and credential), so calls reuse its
connections. The reads before writes stay where they guard ownership: a scope map without the portal's marker, or a
token on another scope map, is someone else's and a PUT would take it over; they also save a write when the
resource is already as wanted (a retried request). Reads do not count against ARM's write budget.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Literal, Protocol, TypeVar

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from django.conf import settings

from accessreq import armbudget, emulatorauth

log = logging.getLogger(__name__)

# Exactly what the calls below need in Azure RBAC, for a least-privilege custom role (the README prints it):
# registry read, scope maps and tokens read/write/delete, generating token passwords, and reading the status of
# a token's long-running create, which the SDK polls.
REQUIRED_PERMISSIONS = (
    "Microsoft.ContainerRegistry/registries/read",
    "Microsoft.ContainerRegistry/registries/scopeMaps/read",
    "Microsoft.ContainerRegistry/registries/scopeMaps/write",
    "Microsoft.ContainerRegistry/registries/scopeMaps/delete",
    "Microsoft.ContainerRegistry/registries/tokens/read",
    "Microsoft.ContainerRegistry/registries/tokens/write",
    "Microsoft.ContainerRegistry/registries/tokens/delete",
    "Microsoft.ContainerRegistry/registries/tokens/operationStatuses/read",
    "Microsoft.ContainerRegistry/registries/generateCredentials/action",
)
SLOTS = ("password1", "password2")
Slot = Literal["password1", "password2"]
# Written into every scope map the portal makes, so it never takes over one that a person made by hand.
MANAGED_MARKER = "Managed by ACR Access Portal"


class AcrError(Exception):
    """Something the registry refused or could not do. The message is safe to show to admins."""


class TransientError(AcrError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Throttled(TransientError):
    """ARM's 429: too many requests for the principal's budget."""


class NotFound(AcrError):
    pass


class Conflict(AcrError):
    pass


class Invalid(AcrError):
    pass


class Denied(AcrError):
    pass


class RegistryRef(Protocol):
    subscription_id: str
    resource_group: str
    name: str


@dataclass(frozen=True)
class GeneratedPassword:
    username: str
    slot: str
    value: str
    created_at: datetime | None
    expires_at: datetime | None


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scope_map_name: str
    status: str
    slots: dict[str, datetime | None]  # slot name -> expiry
    provisioning_state: str | None


@dataclass(frozen=True)
class ScopeMapInfo:
    name: str
    actions: list[str]
    description: str
    type: str
    provisioning_state: str | None = "Succeeded"


# ARM's provisioningState of a resource that is done and usable. Anything else (Creating, Updating, Deleting, Failed,
# Canceled) is not: a token that is not Succeeded authenticates nothing, so a password generated for it is dead.
SUCCEEDED = "Succeeded"
# States of an operation still under way: waited for, never taken as done.
IN_FLIGHT = frozenset({"Creating", "Updating", "Deleting", "Accepted", "InProgress"})


@cache
def _credential() -> Any:
    if settings.ACR_CREDENTIAL == "emulator":
        return emulatorauth.StaticCredential(settings.ACR_EMULATOR_TOKEN)
    return DefaultAzureCredential()


_clients: dict[tuple[Any, ...], ContainerRegistryManagementClient] = {}
_clients_lock = threading.Lock()
WRITE_METHODS = frozenset({"PUT", "PATCH", "POST", "DELETE"})
T = TypeVar("T")


def client(subscription_id: str) -> ContainerRegistryManagementClient:
    """This process's client for the subscription: made once, then reused with its connection pool. Keyed by what
    it is built from, so changed settings (tests) get a new one, and by process, so a forked worker never shares its
    parent's sockets."""
    key = (
        os.getpid(),
        subscription_id,
        settings.ACR_ARM_ENDPOINT,
        settings.ACR_CREDENTIAL,
        settings.ACR_EMULATOR_TOKEN,
        settings.ACR_POLLING_INTERVAL,
        settings.ACR_TIMEOUT,
    )
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            found = _clients[key] = _new_client(subscription_id)
        return found


def _new_client(subscription_id: str) -> ContainerRegistryManagementClient:
    kwargs: dict[str, Any] = {
        "base_url": settings.ACR_ARM_ENDPOINT,
        # Only when ARM's answer has no Retry-After: one that has sets the pace of the polls.
        "polling_interval": settings.ACR_POLLING_INTERVAL,
        "retry_total": 0,
        "connection_timeout": settings.ACR_TIMEOUT,
        "read_timeout": settings.ACR_TIMEOUT,
        "raw_response_hook": _budget_hook(subscription_id),
        **_connection_settings(),
    }
    if settings.ACR_CREDENTIAL == "emulator":
        kwargs["authentication_policy"] = emulatorauth.StaticBearerPolicy(settings.ACR_EMULATOR_TOKEN)
    return ContainerRegistryManagementClient(_credential(), subscription_id, **kwargs)


def _connection_settings() -> dict[str, Any]:
    """How the client connects, as the environment says, read once when the client is made. Left to itself, requests
    reads the whole environment twice on every call for a proxy and a CA bundle (a millisecond a call, more in a
    container with many variables), and would take credentials from a .netrc over the bearer token. Only a proxy
    needs that reading, to match NO_PROXY against each call's address; a CA bundle is handed over as it is."""
    if urllib.request.getproxies():
        return {"use_env_settings": True}
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return {"use_env_settings": False, **({"connection_verify": bundle} if bundle else {})}


def _budget_hook(subscription_id: str) -> Callable[[Any], None]:
    """Tell the shared bucket what ARM says of its own: a 429's Retry-After, and the writes it has left."""

    def hook(pipeline_response: Any) -> None:
        response = pipeline_response.http_response
        if response.status_code == 429:
            armbudget.throttled(subscription_id, _seconds(response.headers.get("Retry-After")) or 1.0)
            return
        if pipeline_response.http_request.method not in WRITE_METHODS:
            return
        remaining = response.headers.get("x-ms-ratelimit-remaining-subscription-writes")
        if remaining is not None and remaining.strip().isdigit():
            armbudget.observed(subscription_id, int(remaining))

    return hook


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# Writes taken from the budget ahead of time on this thread (`writes_ahead`), by subscription.
_ahead = threading.local()


@contextmanager
def writes_ahead(registry: RegistryRef, writes: int) -> Iterator[None]:
    """Take the budget for the `writes` ARM writes this block is about to make on this thread in one step rather
    than one step each. Writes the block does not make are not given back: the budget only ever errs towards
    fewer writes. A write sent again after a 429 takes from the budget anew."""
    writes = max(1, min(writes, settings.ARM_WRITE_BURST))  # the bucket never holds more than a burst
    deadline = time.monotonic() + settings.ACR_TIMEOUT
    try:
        armbudget.acquire(registry.subscription_id, deadline, writes)
    except armbudget.Exhausted as exc:
        raise Throttled(str(exc), exc.wait) from exc
    taken: dict[str, int] = getattr(_ahead, "writes", None) or {}
    _ahead.writes = taken
    taken[registry.subscription_id] = taken.get(registry.subscription_id, 0) + writes
    try:
        yield
    finally:
        taken.pop(registry.subscription_id, None)


def _taken_ahead(subscription_id: str) -> bool:
    taken: dict[str, int] | None = getattr(_ahead, "writes", None)
    if not taken or taken.get(subscription_id, 0) < 1:
        return False
    taken[subscription_id] -= 1
    return True


def _write(registry: RegistryRef, call: Callable[[], T]) -> T:
    """Make one ARM write within the write budget: take a token first (waiting, up to ACR_TIMEOUT), unless one was
    taken for it ahead (`writes_ahead`), and if ARM still says 429, wait out its Retry-After and send the write
    again (every write here is a PUT of the whole resource, a PATCH of a field or a generateCredentials that did
    not happen, so sending it again is safe)."""
    deadline = time.monotonic() + settings.ACR_TIMEOUT
    ahead = _taken_ahead(registry.subscription_id)
    while True:
        try:
            if not ahead:
                armbudget.acquire(registry.subscription_id, deadline)
        except armbudget.Exhausted as exc:
            raise Throttled(str(exc), exc.wait) from exc
        ahead = False
        try:
            with _translated():
                return call()
        except Throttled as exc:
            wait = exc.retry_after if exc.retry_after is not None else 1.0
            if time.monotonic() + wait > deadline:
                raise
            if not armbudget.enabled():
                # With the shared bucket, acquire() waits for the "not before" the 429 set; without it, here.
                time.sleep(wait)


def _retry_after(exc: HttpResponseError) -> float | None:
    response = getattr(exc, "response", None)
    return _seconds(response.headers.get("Retry-After")) if response is not None else None


def _describe(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or exc.message or str(exc)
    status = exc.status_code
    return f"{status} {code}: {message}" if code else f"{status}: {message}"


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except ClientAuthenticationError as exc:
        raise Denied(_describe(exc)) from exc
    except ResourceNotFoundError as exc:
        raise NotFound(_describe(exc)) from exc
    except ResourceExistsError as exc:
        raise Conflict(_describe(exc)) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(f"connection: {type(exc).__name__}") from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        if status == 429:
            raise Throttled(_describe(exc), _retry_after(exc)) from exc
        if status == 408 or status >= 500:
            raise TransientError(_describe(exc), _retry_after(exc)) from exc
        if status == 403:
            raise Denied(_describe(exc)) from exc
        if status == 409:
            raise Conflict(_describe(exc)) from exc
        if status == 400:
            raise Invalid(_describe(exc)) from exc
        # A long-running operation that ended Failed surfaces with the status of its last poll (200): Azure's
        # own failures of this kind are usually passing, so it is retried, within the attempt limit.
        raise TransientError(_describe(exc)) from exc


def retry_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds before attempt `attempt + 1`: doubling from PROVISIONING_RETRY_SECONDS, never less than Azure's own
    Retry-After, never more than CELERY_RETRY_MAX_DELAY (a longer countdown would be redelivered while it waits)."""
    backoff = min(settings.CELERY_RETRY_MAX_DELAY, settings.PROVISIONING_RETRY_SECONDS * 2 ** (attempt - 1))
    # Jitter spreads a burst of throttled tasks out instead of sending them back together.
    backoff *= random.uniform(0.75, 1.0)
    return float(min(settings.CELERY_RETRY_MAX_DELAY, max(backoff, retry_after or 0)))


def _registry_id(registry: RegistryRef) -> str:
    return (
        f"/subscriptions/{registry.subscription_id}/resourceGroups/{registry.resource_group}"
        f"/providers/Microsoft.ContainerRegistry/registries/{registry.name}"
    )


def _token_info(token: Any) -> TokenInfo:
    credentials = token.credentials
    passwords = (credentials.passwords if credentials else None) or []
    return TokenInfo(
        name=token.name,
        scope_map_name=(token.scope_map_id or "").rsplit("/", 1)[-1],
        status=token.status or "enabled",
        slots={p.name: p.expiry for p in passwords},
        provisioning_state=_state_name(token.provisioning_state),
    )


def _state_name(state: Any) -> str | None:
    """The SDK hands back an enum (a str subclass); keep the plain name ARM sent."""
    return None if state is None else str(getattr(state, "value", state))


def ping(timeout: float) -> tuple[bool, str]:
    """Is the management endpoint reachable? Any HTTP answer says yes; only the network can say no."""
    url = settings.ACR_ARM_ENDPOINT
    if settings.ACR_CREDENTIAL == "emulator":
        url += "/_emulator/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a configured https/http URL
            return True, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return True, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, type(getattr(exc, "reason", exc)).__name__


def get_scope_map(registry: RegistryRef, name: str) -> ScopeMapInfo | None:
    try:
        with _translated():
            found = client(registry.subscription_id).scope_maps.get(registry.resource_group, registry.name, name)
    except NotFound:
        return None
    return _scope_map_info(found)


def _scope_map_info(found: Any) -> ScopeMapInfo:
    return ScopeMapInfo(
        found.name or "",
        list(found.actions or []),
        found.description or "",
        found.type or "",
        _state_name(found.provisioning_state),
    )


def ensure_scope_map(registry: RegistryRef, name: str, actions: list[str], description: str) -> None:
    """Make the scope map hold exactly these actions, provisioned. PUT replaces, so running it twice is harmless; a
    scope map whose last operation failed or is still under way is written again, as ARM's repair is a new PUT."""
    _converge_scope_map(registry, name, actions, description, get_scope_map(registry, name))


def _converge_scope_map(
    registry: RegistryRef, name: str, actions: list[str], description: str, existing: ScopeMapInfo | None
) -> None:
    if existing and not existing.description.startswith(MANAGED_MARKER):
        raise Conflict(f"scope map {name} exists in the registry and is not managed by the portal")
    if (
        existing
        and existing.provisioning_state == SUCCEEDED
        and sorted(existing.actions) == sorted(actions)
        and existing.description == description
    ):
        return
    set_scope_map_actions(registry, name, actions, description)


def get_token(registry: RegistryRef, name: str) -> TokenInfo | None:
    try:
        with _translated():
            found = client(registry.subscription_id).tokens.get(registry.resource_group, registry.name, name)
    except NotFound:
        return None
    return _token_info(found)


def _settled_token(registry: RegistryRef, name: str) -> TokenInfo | None:
    """The token as ARM has it once no operation is under way on it: a token left Creating (or Updating) by an
    interrupted run is watched until it ends, within ACR_TIMEOUT; one still under way then is a transient error."""
    deadline = time.monotonic() + settings.ACR_TIMEOUT
    while True:
        found = get_token(registry, name)
        if found is None or found.provisioning_state not in IN_FLIGHT:
            return found
        if time.monotonic() >= deadline:
            raise TransientError(f"token {name} is still {found.provisioning_state} in the registry", 5.0)
        time.sleep(max(0.2, min(settings.ACR_POLLING_INTERVAL, 2.0)))


def _confirmed(kind: str, name: str, state: str | None) -> None:
    if state != SUCCEEDED:
        # ARM answered, but the resource is not usable yet (or its operation failed): the next attempt repairs it.
        raise TransientError(f"{kind} {name} is {state or 'in an unknown state'} in the registry, not Succeeded")


def ensure_token(
    registry: RegistryRef, name: str, scope_map_name: str, while_creating: Callable[[], None] | None = None
) -> TokenInfo:
    """Make the token exist, enabled, on this scope map, and provisioned (Succeeded): only then can a password for it
    work. A token of that name on another scope map is not ours. A token whose creation failed is written again (a
    new PUT is how ARM repairs a Failed resource); one still Creating is waited for.

    `while_creating` runs once ARM has accepted the token's PUT, while the SDK polls its long-running create on a
    thread of its own (mostly waiting out ARM's Retry-After), so the caller's own work there costs no time. It runs
    at most once, only when the token is written, and must not claim what needs the token to be ready."""
    return _ensure_token(registry, name, scope_map_name, _settled_token(registry, name), while_creating)


def ensure_scope_map_and_token(
    registry: RegistryRef,
    name: str,
    actions: list[str],
    description: str,
    while_creating: Callable[[], None] | None = None,
) -> TokenInfo:
    """`ensure_scope_map`, then `ensure_token` on it (both named `name`), with both read before either is written:
    a token of that name on another scope map stops the work before the scope map is touched."""
    # One read after the other, on this thread. Against a near endpoint the SDK's calls are all CPU, and a second
    # thread only takes turns with this one (measured: 3 ms later to the first write); on Azure the second read costs
    # a round trip, a small part of the token's create.
    existing_scope_map = get_scope_map(registry, name)
    existing_token = _settled_token(registry, name)
    _check_token_scope_map(existing_token, name)
    _converge_scope_map(registry, name, actions, description, existing_scope_map)
    return _ensure_token(registry, name, name, existing_token, while_creating)


def _check_token_scope_map(existing: TokenInfo | None, scope_map_name: str) -> None:
    if existing is not None and existing.scope_map_name != scope_map_name:
        raise Conflict(f"token {existing.name} exists in the registry on scope map {existing.scope_map_name}")


def _ensure_token(
    registry: RegistryRef,
    name: str,
    scope_map_name: str,
    existing: TokenInfo | None,
    while_creating: Callable[[], None] | None,
) -> TokenInfo:
    _check_token_scope_map(existing, scope_map_name)
    if existing is not None:
        if existing.provisioning_state == SUCCEEDED:
            if existing.status != "enabled":
                set_token_status(registry, name, "enabled")
            return existing
        log.warning("token %s is %s in the registry: writing it again", name, existing.provisioning_state)
    body = {"properties": {"scopeMapId": f"{_registry_id(registry)}/scopeMaps/{scope_map_name}", "status": "enabled"}}
    pending = [while_creating] if while_creating is not None else []

    def create() -> Any:
        looked = threading.Event()
        budget_hook = _budget_hook(registry.subscription_id)

        def hook(pipeline_response: Any) -> None:  # this call's, in place of the client's
            budget_hook(pipeline_response)
            if pipeline_response.http_request.method == "GET":
                looked.set()

        poller = client(registry.subscription_id).tokens.begin_create(
            registry.resource_group, registry.name, name, body, raw_response_hook=hook
        )
        if pending:
            # The SDK's poller looks at the operation once at once, on its own thread, and only then waits out ARM's
            # Retry-After: the caller's work waits for that look rather than hold the interpreter while it is made.
            while not (looked.wait(0.01) or poller.done()):
                pass
        while pending:  # once, even when a throttled PUT is sent again
            pending.pop()()
        return poller.result()

    created = _write(registry, create)
    info = _token_info(created)
    _confirmed("token", name, info.provisioning_state)
    return info


def set_token_status(registry: RegistryRef, name: str, status: str) -> None:
    _write(
        registry,
        lambda: client(registry.subscription_id).tokens.begin_update(
            registry.resource_group, registry.name, name, {"properties": {"status": status}}
        ).result(),
    )


def generate_password(registry: RegistryRef, token_name: str, slot: str, expires_at: datetime) -> GeneratedPassword:
    """Generate one slot's password. The value lives only in the returned object: callers encrypt it at once."""
    assert slot in SLOTS
    body = {"tokenId": f"{_registry_id(registry)}/tokens/{token_name}", "name": slot, "expiry": expires_at.isoformat()}
    result = _write(
        registry,
        lambda: client(registry.subscription_id).registries.begin_generate_credentials(
            registry.resource_group, registry.name, body
        ).result(),
    )
    # A client once handed back the admin user's passwords instead of the token's: refuse anything but ours.
    if result.username != token_name:
        raise Invalid(f"generateCredentials answered for {result.username!r}, not for token {token_name!r}")
    matching = [p for p in result.passwords or [] if p.name == slot]
    if len(matching) != 1 or not matching[0].value:
        raise Invalid(f"generateCredentials returned no value for {slot}")
    password = matching[0]
    value = password.value
    assert value is not None  # checked just above
    return GeneratedPassword(token_name, slot, value, password.creation_time, password.expiry)


def delete_password(registry: RegistryRef, token_name: str, slot: str) -> None:
    """Delete one slot by writing back the slots that remain, as `az acr token credential delete` does."""
    token = get_token(registry, token_name)
    if token is None or slot not in token.slots:
        return
    keep = [{"name": name} for name in token.slots if name != slot]
    _write(
        registry,
        lambda: client(registry.subscription_id).tokens.begin_update(
            registry.resource_group,
            registry.name,
            token_name,
            {"properties": {"credentials": {"passwords": keep}}},
        ).result(),
    )


def ensure_registry(registry: RegistryRef, location: str, sku: str) -> str:
    """Create the registry if it is missing and return its login server. For the demo and tests: the portal
    manages tokens in registries that exist, it never creates registries in Azure."""
    body = {"location": location, "sku": {"name": sku}, "properties": {"adminUserEnabled": False}}
    ops = client(registry.subscription_id).registries
    try:
        with _translated():
            found = ops.get(registry.resource_group, registry.name)
    except NotFound:
        found = _write(registry, lambda: ops.begin_create(registry.resource_group, registry.name, body).result())
    return found.login_server


def list_tokens(registry: RegistryRef) -> Iterator[TokenInfo]:
    """Every token in the registry, page by page as ARM hands them out (nextLink), never all in memory at once."""
    with _translated():
        for token in client(registry.subscription_id).tokens.list(registry.resource_group, registry.name):
            yield _token_info(token)


def list_scope_maps(registry: RegistryRef) -> Iterator[ScopeMapInfo]:
    with _translated():
        for found in client(registry.subscription_id).scope_maps.list(registry.resource_group, registry.name):
            yield _scope_map_info(found)


def delete_token(registry: RegistryRef, name: str) -> None:
    """Delete a token; one already gone is fine."""
    try:
        _write(
            registry,
            lambda: client(registry.subscription_id).tokens.begin_delete(
                registry.resource_group, registry.name, name
            ).result(),
        )
    except NotFound:
        return


def delete_scope_map(registry: RegistryRef, name: str) -> None:
    try:
        _write(
            registry,
            lambda: client(registry.subscription_id).scope_maps.begin_delete(
                registry.resource_group, registry.name, name
            ).result(),
        )
    except NotFound:
        return


def set_scope_map_actions(registry: RegistryRef, name: str, actions: list[str], description: str) -> None:
    """Write the approved actions back over a scope map that drifted."""
    body = {"properties": {"description": description, "actions": actions}}
    written = _write(
        registry,
        lambda: client(registry.subscription_id).scope_maps.begin_create(
            registry.resource_group, registry.name, name, body
        ).result(),
    )
    _confirmed("scope map", name, _state_name(getattr(written, "provisioning_state", SUCCEEDED)))
