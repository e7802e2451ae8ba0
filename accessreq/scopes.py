"""Repository patterns, actions and scope-map strings: the rules of ACR, in one place.

A request's rules are a list of {"repository": pattern, "actions": [...]}. A pattern is a lowercase OCI repository
name, a prefix wildcard `prefix/*`, or `*` for every repository. Wildcards are additive and cover repositories
created later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ACTIONS = ("content/read", "content/write", "content/delete", "metadata/read", "metadata/write")
ACTION_LABELS = {
    "content/read": "pull",
    "content/write": "push",
    "content/delete": "delete",
    "metadata/read": "list tags",
    "metadata/write": "change tag settings",
}
WRITE_ACTIONS = frozenset({"content/write", "content/delete", "metadata/write"})
MAX_ACTIONS_PER_SCOPE_MAP = 500
# Per registry, by SKU: (tokens, scope maps). The one table of ACR's limits; from Azure's "Service tier features and
# limits" page for Azure Container Registry, as recorded in the project's ACR facts ("Names and limits").
SKU_LIMITS = {"Basic": (100, 100), "Standard": (500, 500), "Premium": (50_000, 50_000)}
SKU_TOKEN_LIMITS = {sku: tokens for sku, (tokens, _) in SKU_LIMITS.items()}
SKU_SCOPE_MAP_LIMITS = {sku: scope_maps for sku, (_, scope_maps) in SKU_LIMITS.items()}
# Every registry holds these system scope maps, and they count against the scope-map limit like any other.
SYSTEM_SCOPE_MAPS = ("_repositories_admin", "_repositories_pull", "_repositories_push")

# The OCI distribution spec's repository name: path components of lowercase alphanumerics joined by separators.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
MAX_REPOSITORY_LENGTH = 256


@dataclass(frozen=True)
class Rule:
    """One line of a request: a repository pattern and the actions granted on it."""

    repository: str
    actions: tuple[str, ...]

    @classmethod
    def of(cls, repository: str, actions: Iterable[str]) -> Rule:
        return cls(repository, tuple(actions))

    def as_json(self) -> dict[str, object]:
        return {"repository": self.repository, "actions": list(self.actions)}


def rules_from_json(rules: Sequence[dict]) -> list[Rule]:
    return [Rule.of(r["repository"], r["actions"]) for r in rules]


def rule_errors(repository: str, actions: Sequence[str]) -> dict[str, list[str]]:
    """What is wrong with one rule, by field ("repository", "actions"); empty when it is valid."""
    errors: dict[str, list[str]] = {}
    if not repository:
        errors["repository"] = ["Enter a repository for these actions."]
    elif error := validate_repository(repository):
        errors["repository"] = [error]
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        errors["actions"] = [f"Unknown action {unknown[0]!r}: choose from {', '.join(ACTIONS)}."]
    elif not actions:
        errors["actions"] = ["Choose at least one action."]
    elif "content/write" in actions and "content/read" not in actions:
        errors["actions"] = ["Pushing needs pulling too: add content/read."]
    return errors


def validate_repository(pattern: str) -> str | None:
    """None when the pattern is valid, else a sentence saying what is wrong with it."""
    if not pattern:
        return "Enter a repository, a prefix ending in /*, or *."
    if pattern == "*":
        return None
    if len(pattern) > MAX_REPOSITORY_LENGTH:
        return f"A repository name has at most {MAX_REPOSITORY_LENGTH} characters."
    if "*" in pattern:
        if pattern.count("*") > 1 or not pattern.endswith("/*"):
            return "A wildcard is one * at the very end, after a slash: myapp/*."
        pattern = pattern[:-2]
    if pattern != pattern.lower():
        return "Repository names are lowercase."
    if not _REPOSITORY.match(pattern):
        return (
            "Use lowercase letters and digits, with single . _ - or __ between them, and / between path parts."
        )
    return None


def is_wildcard(pattern: str) -> bool:
    return pattern.endswith("*")


def covers(pattern: str, repository_or_pattern: str) -> bool:
    """Does `pattern` grant on everything `repository_or_pattern` names? (`myapp/*` covers `myapp/api/*`.)"""
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        prefix = pattern[:-1]
        return repository_or_pattern.startswith(prefix)
    return pattern == repository_or_pattern


def merge_rules(rules: Iterable[tuple[str, Sequence[str]]]) -> list[dict]:
    """Duplicate repositories are merged (actions united), not rejected; the result is sorted, so stable."""
    merged: dict[str, set[str]] = {}
    for repository, actions in rules:
        merged.setdefault(repository, set()).update(actions)
    return [
        {"repository": repository, "actions": [a for a in ACTIONS if a in actions]}
        for repository, actions in sorted(merged.items())
    ]


def scope_map_actions(rules: list[dict]) -> list[str]:
    return [f"repositories/{rule['repository']}/{action}" for rule in rules for action in rule["actions"]]


def risks(rules: list[dict], client_kind: str) -> list[str]:
    found = []
    actions = {a for rule in rules for a in rule["actions"]}
    if actions & {"content/write", "metadata/write"}:
        found.append("write")
    if "content/delete" in actions:
        found.append("delete")
    if any(is_wildcard(rule["repository"]) for rule in rules):
        found.append("wildcard")
    if client_kind == "partner":
        found.append("partner")
    return found


def is_risky(rules: list[dict], client_kind: str) -> bool:
    return bool(risks(rules, client_kind))


# --- In plain words ------------------------------------------------------------------------------------------------

VERBS = {
    "content/read": "pull",
    "content/write": "push",
    "content/delete": "delete images",
    "metadata/read": "list tags",
    "metadata/write": "change tag settings",
}
RISK_MEANINGS = {
    "write": "it can change images that others pull and deploy",
    "delete": "it can delete images for good",
    "wildcard": "it covers repositories created later too, not only the ones there today",
    "partner": "it is used outside the company",
}


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _where(pattern: str) -> str:
    if pattern == "*":
        return "every repository in the registry, including ones created later"
    if is_wildcard(pattern):
        return f"every repository under {pattern[:-1]}, including ones created later"
    return pattern


def describe(rules: Sequence[dict]) -> list[str]:
    """What the rules allow, one sentence each, for people: "Pull and push in myapp/api and myapp/web." Rules with
    the same actions share a sentence; repositories come before wildcards, which come before everything."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for rule in sorted(rules, key=lambda r: (r["repository"] == "*", is_wildcard(r["repository"]), r["repository"])):
        actions = tuple(a for a in ACTIONS if a in rule["actions"])
        if actions:
            groups.setdefault(actions, []).append(rule["repository"])
    sentences = []
    for actions, patterns in groups.items():
        verbs = _and([VERBS[a] for a in actions])
        sentences.append(f"{verbs[0].upper()}{verbs[1:]} in {_and([_where(p) for p in patterns])}.")
    return sentences


def explain_risks(found: Sequence[str]) -> list[tuple[str, str]]:
    """Each risk with what it means, in the order given."""
    return [(risk, RISK_MEANINGS.get(risk, "")) for risk in found]
