"""docker-compose.yml and the Dockerfile only name entry points and settings that exist.

Nothing here needs Docker: a typo in a command or an environment variable that settings.py never reads would
otherwise show up only in a deployment.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_SOURCE = (ROOT / "portal" / "settings.py").read_text()
# Read by libraries rather than by settings.py: azure-identity's DefaultAzureCredential and Django itself.
THIRD_PARTY_VARIABLES = {
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "DJANGO_SETTINGS_MODULE",
}


def _settings_variables() -> set[str]:
    helpers = re.findall(r"\benv(?:bool|int|list)?\(\s*\"([A-Z][A-Z0-9_]*)\"", SETTINGS_SOURCE)
    direct = re.findall(r"os\.environ\.get\(\s*\"([A-Z][A-Z0-9_]*)\"", SETTINGS_SOURCE)
    return set(helpers) | set(direct)


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _portal_services() -> dict[str, dict[str, Any]]:
    # Services that run the portal's own image; postgres and redis take their images' own variables.
    return {
        name: service
        for name, service in _compose()["services"].items()
        if "build" in service or str(service.get("image", "")).startswith("acr-access-portal")
    }


def _dockerfile_cmd() -> list[str]:
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    assert len(lines) == 1, "the Dockerfile has one CMD, in exec form"
    return json.loads(lines[0][len("CMD ") :])


def _commands() -> dict[str, list[str]]:
    found = {f"service {name}": service["command"] for name, service in _portal_services().items()}
    found["Dockerfile CMD"] = _dockerfile_cmd()
    return found


def _check_entry_point(argv: list[str]) -> None:
    assert isinstance(argv, list), "commands are in exec form, a list, so no shell sits between signals and PID 1"
    program, *args = argv
    if program == "gunicorn":
        module_name, _, attribute = args[0].partition(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, attribute or "application"))
    elif program == "celery":
        assert args[0] == "-A"
        from celery import Celery

        assert isinstance(importlib.import_module(f"{args[1]}.celery").app, Celery)
        assert args[2] in {"worker", "beat"}
    elif program == "python" and args[0] == "-m":
        assert importlib.util.find_spec(f"{args[1]}.__main__") is not None, f"no module {args[1]}.__main__"
    elif program == "python" and args[0] == "manage.py":
        assert (ROOT / "manage.py").is_file()
        assert args[1] in get_commands(), f"no management command {args[1]}"
    else:
        pytest.fail(f"unknown entry point {argv}")


def test_it_finds_the_settings_variables() -> None:
    # Guards the scan itself: if it found nothing, every other check would pass vacuously.
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DEBUG", "ALLOWED_HOSTS"} <= _settings_variables()


def test_it_runs_every_piece() -> None:
    assert {"postgres", "redis", "emulator", "migrate", "web", "worker", "beat"} <= set(_compose()["services"])


@pytest.mark.parametrize("where", sorted(_commands()))
def test_it_names_real_entry_points(where: str) -> None:
    _check_entry_point(_commands()[where])


def test_it_sets_only_variables_that_settings_read() -> None:
    known = _settings_variables() | THIRD_PARTY_VARIABLES
    for name, service in _portal_services().items():
        environment = service.get("environment") or {}
        names = environment.keys() if isinstance(environment, dict) else [e.split("=")[0] for e in environment]
        for variable in names:
            base = variable.removesuffix("_FILE")
            assert variable in known or base in _settings_variables(), f"{name} sets {variable}, read by nothing"


def test_it_requires_the_secrets() -> None:
    environment = _compose()["services"]["web"]["environment"]
    for variable in ("SECRET_KEY", "PASSWORD_ENCRYPTION_KEYS", "AUDIT_KEYS", "ALLOWED_HOSTS", "SITE_URL"):
        assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", environment[variable]), variable
    assert environment["DEBUG"] == "0"


def test_it_builds_a_non_root_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# syntax=") or dockerfile.startswith("FROM")
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}


def test_it_documents_every_variable_in_the_readme() -> None:
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", (ROOT / "README.md").read_text(), re.M))
    assert _settings_variables() - documented == set()


def test_it_publishes_exactly_the_azure_permissions_the_portal_uses() -> None:
    import json
    import re

    from accessreq import acr

    readme = (ROOT / "README.md").read_text()
    role = json.loads(re.search(r'```json\n(\{\n  "Name": "ACR Access Portal".*?\n\})\n```', readme, re.S).group(1))
    assert role["Actions"] == list(acr.REQUIRED_PERMISSIONS)
    assert role["DataActions"] == [] and role["NotActions"] == []


def test_it_gives_gunicorn_a_valid_configuration() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "portal.wsgi"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
