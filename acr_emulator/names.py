"""Name, repository and scope-map action rules, shared by the ARM API and the data-plane check.

Keeping them in one module means the server can never accept an action that the data-plane check would
read differently.
"""

from __future__ import annotations

import re
from typing import NamedTuple

REGISTRY_NAME = re.compile(r"^[a-zA-Z0-9]{5,50}$")
TOKEN_NAME = re.compile(r"^[a-zA-Z0-9-]{5,50}$")
SCOPE_MAP_NAME = re.compile(r"^[a-zA-Z0-9-_]{5,50}$")

# One OCI distribution-spec path component; a repository is one or more joined by "/".
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
# The distribution spec caps a repository name at 255 characters (including the registry host);
# we apply it to the repository alone, which is the stricter reading that still accepts every real name.
MAX_REPOSITORY_LENGTH = 255

# Greedy repository group: "repositories/a/content/content/read" is repository "a/content".
_ACTION = re.compile(r"^repositories/(?P<repo>.+)/(?P<kind>content|metadata)/(?P<perm>read|write|delete)$")

MAX_ACTIONS_PER_SCOPE_MAP = 500
PASSWORD_SLOTS = ("password1", "password2")


class Action(NamedTuple):
    pattern: str  # a repository, "prefix/*" or "*"
    name: str  # "content/read", ...


def is_valid_repository(repository: str) -> bool:
    return len(repository) <= MAX_REPOSITORY_LENGTH and REPOSITORY.match(repository) is not None


def is_valid_pattern(pattern: str) -> bool:
    """A repository, or a wildcard: a bare "*" or "<repository>/*" (exactly one "*", last, after "/")."""
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        return is_valid_repository(pattern[:-2])
    return is_valid_repository(pattern)


def parse_action(action: str) -> Action:
    """Split a scope-map action string; ValueError with a human message when it is not one."""
    match = _ACTION.match(action)
    if match is None:
        raise ValueError(
            f"Invalid action '{action}': expected repositories/<repository>/<content|metadata>/<read|write|delete>."
        )
    kind, perm, pattern = match["kind"], match["perm"], match["repo"]
    if kind == "metadata" and perm == "delete":
        raise ValueError(f"Invalid action '{action}': metadata/delete is not an action.")
    if not is_valid_pattern(pattern):
        raise ValueError(
            f"Invalid repository '{pattern}' in action '{action}': use a lowercase repository name, "
            "'<prefix>/*' or '*'."
        )
    return Action(pattern, f"{kind}/{perm}")


def pattern_matches(pattern: str, repository: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        return repository.startswith(pattern[:-1])
    return pattern == repository
