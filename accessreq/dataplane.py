"""The only module that talks to a registry's data plane: does a token's password open exactly what was approved?

`verify` asks the registry's token endpoint, as `docker login` would, for a JWT covering every approved rule and
action and a few things outside them, and reads the JWT's `access` claim: what the registry granted. Nothing is
pushed or pulled. The endpoint is found the way Docker clients find it: `GET <scheme>://<login server>/v2/` answers
401 with `WWW-Authenticate: Bearer realm=...,service=...` (on Azure, `https://<login server>/oauth2/token`).

Settings: ACR_DATA_PLANE_SCHEME ("https" on Azure; "http" for the local emulator's registry) and ACR_TIMEOUT.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from django.conf import settings

from accessreq.scopes import ACTIONS, covers

log = logging.getLogger(__name__)

# Scope-map actions as the token endpoint names them (docs: ACR's own clients ask for metadata_read to list tags).
DATA_PLANE_ACTIONS = {
    "content/read": "pull",
    "content/write": "push",
    "content/delete": "delete",
    "metadata/read": "metadata_read",
    "metadata/write": "metadata_write",
}
CATALOG = "_catalog"  # the Check.repository of the registry-wide catalog scope, which no token may hold
# Scopes per token request: many short requests rather than one URL too long for a proxy.
SCOPES_PER_REQUEST = 40
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 8.0


@dataclass(frozen=True)
class Check:
    repository: str
    action: str  # a scope-map action ("content/read"), or "registry:catalog:*" for CATALOG
    expected: bool  # should the token hold it?
    result: bool  # does the registry grant it?

    @property
    def ok(self) -> bool:
        return self.expected == self.result


@dataclass(frozen=True)
class Verification:
    checked_at: datetime
    ok: bool
    checks: list[Check] = field(default_factory=list)
    error: str | None = None

    @property
    def mismatches(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


class _Refused(Exception):
    """The token endpoint said 401/403: the password is wrong, or new and not yet everywhere."""


class _Failed(Exception):
    """Something that retrying will not fix."""


class _Transient(Exception):
    """Connection trouble, 429 or 5xx: worth another try."""


def _probe_repositories(rules: list[dict[str, Any]]) -> list[str]:
    """A repository per rule (a made-up one under a wildcard's prefix), and one outside every rule's prefix."""
    marker = f"portal-verify-{secrets.token_hex(4)}"
    probes: list[str] = []
    for rule in rules:
        pattern = rule["repository"]
        if pattern == "*":
            probe = marker
        elif pattern.endswith("/*"):
            probe = f"{pattern[:-2]}/{marker}"
        else:
            probe = pattern
        if probe not in probes:
            probes.append(probe)
    outside = f"{marker}-outside/elsewhere"
    if outside not in probes:
        probes.append(outside)
    return probes


def _expected(rules: list[dict[str, Any]], repository: str) -> set[str]:
    return {a for rule in rules if covers(rule["repository"], repository) for a in rule["actions"]}


def _challenge(login_server: str, timeout: float) -> tuple[str, str]:
    """(realm, service) from the registry's Bearer challenge."""
    scheme = settings.ACR_DATA_PLANE_SCHEME
    url = f"{scheme}://{login_server}/v2/"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a configured http(s) URL
            raise _Failed(f"{url} answered {response.status} without asking for a token")
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            if exc.code == 429 or exc.code >= 500:
                raise _Transient(f"{url} answered {exc.code}") from exc
            raise _Failed(f"{url} answered {exc.code}") from exc
        header = exc.headers.get("WWW-Authenticate", "")
    except (urllib.error.URLError, OSError) as exc:
        raise _Transient(f"{url}: {type(getattr(exc, 'reason', exc)).__name__}") from exc
    kind, _, params = header.partition(" ")
    try:
        fields = dict(urllib.request.parse_keqv_list(urllib.request.parse_http_list(params)))
    except ValueError:
        fields = {}
    realm, service = fields.get("realm", ""), fields.get("service", login_server)
    if kind.lower() != "bearer" or not realm:
        raise _Failed(f"{url} does not use token authentication (WWW-Authenticate: {header!r})")
    realm_url = urllib.parse.urlsplit(realm)
    # The password goes where the realm says: never in clear over the internet, nor to a host other than the
    # registry's own when the registry is reached over https (Azure's realm is https://<login server>/oauth2/token).
    if scheme == "https" and (realm_url.scheme != "https" or realm_url.hostname != login_server.split(":")[0].lower()):
        raise _Failed(f"{url} names a token realm off the registry's own host: {realm}")
    return realm, service


def _granted(realm: str, service: str, scopes: list[str], basic: str, timeout: float) -> dict[str, set[str]]:
    """repository -> data-plane actions the JWT grants, for one token request."""
    query = urllib.parse.urlencode([("service", service), *(("scope", s) for s in scopes)])
    request = urllib.request.Request(f"{realm}?{query}", headers={"Authorization": f"Basic {basic}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the registry's realm
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise _Refused(f"the token endpoint answered {exc.code}") from exc
        if exc.code == 429 or exc.code >= 500:
            raise _Transient(f"the token endpoint answered {exc.code}") from exc
        raise _Failed(f"the token endpoint answered {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise _Transient(f"token endpoint: {type(getattr(exc, 'reason', exc)).__name__}") from exc
    try:
        answer = json.loads(body)
        token = answer.get("access_token") or answer.get("token")
        # Read, not trusted: the registry tells us what it granted; its signature guards the registry, not us.
        claims = jwt.decode(token, options={"verify_signature": False})
    except (ValueError, AttributeError, jwt.PyJWTError) as exc:
        raise _Failed(f"the token endpoint's answer is not a JWT: {type(exc).__name__}") from exc
    granted: dict[str, set[str]] = {}
    for entry in claims.get("access") or []:
        if isinstance(entry, dict) and isinstance(entry.get("actions"), list):
            kind, name = entry.get("type"), entry.get("name", "")
            key = name if kind == "repository" else f"{kind}:{name}"
            granted.setdefault(key, set()).update(str(a) for a in entry["actions"])
    return granted


def _word(granted: bool) -> str:
    return "granted" if granted else "refused"


def verify(
    login_server: str, username: str, password: str, rules: list[dict[str, Any]], *, deadline_seconds: float
) -> Verification:
    """Do `username`/`password` open exactly what `rules` approve on `login_server`?

    For every rule and every action (approved or not) one scope on the rule's repository, or on a made-up
    repository under a wildcard's prefix; the same on a repository outside every rule; and the registry catalog,
    which no repository-scoped token may hold. Each becomes a Check of what the rules expect against what the
    registry's JWT grants. A 401 is retried with backoff until the deadline, since a new password takes up to a
    minute to reach every ACR replica. `ok=False` with `error` set when the answer never came.
    """
    checked_at = datetime.now(UTC)
    deadline = time.monotonic() + deadline_seconds
    probes = [(repo, action) for repo in _probe_repositories(rules) for action in ACTIONS]
    scopes = [f"repository:{repo}:{DATA_PLANE_ACTIONS[action]}" for repo, action in probes]
    scopes.append("registry:catalog:*")
    basic = base64.b64encode(f"{username}:{password}".encode()).decode()

    delay = FIRST_RETRY_SECONDS
    attempts = 0
    last_error = "no attempt made"
    while True:
        attempts += 1
        timeout = max(0.5, min(float(settings.ACR_TIMEOUT), deadline - time.monotonic()))
        try:
            realm, service = _challenge(login_server, timeout)
            granted: dict[str, set[str]] = {}
            for start in range(0, len(scopes), SCOPES_PER_REQUEST):
                batch = scopes[start : start + SCOPES_PER_REQUEST]
                for name, actions in _granted(realm, service, batch, basic, timeout).items():
                    granted.setdefault(name, set()).update(actions)
            break
        except _Failed as exc:
            log.warning("data-plane check of %s as %s failed: %s", login_server, username, exc)
            return Verification(checked_at, False, [], str(exc))
        except _Refused as exc:
            last_error = f"{exc}: the password is wrong, or not yet replicated"
        except _Transient as exc:
            last_error = str(exc)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            message = f"{last_error} (gave up after {attempts} attempts in {deadline_seconds:g}s)"
            log.warning("data-plane check of %s as %s: %s", login_server, username, message)
            return Verification(checked_at, False, [], message)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_RETRY_SECONDS)

    checks = [
        Check(repo, action, action in _expected(rules, repo), DATA_PLANE_ACTIONS[action] in granted.get(repo, set()))
        for repo, action in probes
    ]
    checks.append(Check(CATALOG, "registry:catalog:*", False, bool(granted.get("registry:catalog"))))
    wrong = [c for c in checks if not c.ok]
    log.info("data-plane check of %s as %s: %d checks, %d mismatched", login_server, username, len(checks), len(wrong))
    if not wrong:
        return Verification(checked_at, True, checks, None)
    described = "; ".join(
        f"{c.action} on {c.repository} {_word(c.result)}, expected {_word(c.expected)}" for c in wrong[:3]
    )
    more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
    return Verification(checked_at, False, checks, f"the registry grants other than the rules say: {described}{more}")
