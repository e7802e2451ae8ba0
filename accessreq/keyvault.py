"""The only module that talks to Azure Key Vault: it writes a token's password as a new version of a secret.

It builds `SecretClient` from settings (DefaultAzureCredential on Azure, a static bearer for the local emulator) and
turns the SDK's errors into our own small set, like `acr.py`. Retries live in Celery, so the SDK's are off.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from django.conf import settings

from accessreq import emulatorauth

# The data action the portal's identity needs on a vault; "Key Vault Secrets Officer" holds it (the README says so).
REQUIRED_ROLE = "Key Vault Secrets Officer"
CONTENT_TYPE = "application/vnd.acr-token-password"
SECRET_NAME = re.compile(r"^[A-Za-z0-9-]{1,127}$")


class KeyVaultError(Exception):
    """Something the vault refused or could not do. The message is safe to show to admins; it holds no value."""


class TransientError(KeyVaultError):
    pass


class Denied(KeyVaultError):
    pass


class Invalid(KeyVaultError):
    pass


@dataclass(frozen=True)
class Written:
    id: str  # https://<vault>/secrets/<name>/<version>
    name: str
    version: str


def normalize_vault_url(value: str) -> str:
    """A vault's URL as the portal keeps it: https://host[:port], lowercase, no path. ValueError otherwise."""
    parts = urlsplit(value.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("A vault URL starts with https:// and names the vault, e.g. https://contoso.vault.azure.net")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("A vault URL is only https:// and the vault's host name, with no path.")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("The vault URL's port is not a number.") from exc
    host = parts.hostname.lower()
    return f"https://{host}:{port}" if port and port != 443 else f"https://{host}"


def valid_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.match(name))


@cache
def _credential() -> Any:
    if settings.KEY_VAULT_CREDENTIAL == "emulator":
        return emulatorauth.StaticCredential(settings.ACR_EMULATOR_TOKEN)
    return DefaultAzureCredential()


def client(vault_url: str) -> SecretClient:
    kwargs: dict[str, Any] = {
        "retry_total": 0,
        "connection_timeout": settings.KEY_VAULT_TIMEOUT,
        "read_timeout": settings.KEY_VAULT_TIMEOUT,
    }
    if settings.KEY_VAULT_CA_BUNDLE:
        kwargs["connection_verify"] = settings.KEY_VAULT_CA_BUNDLE
    if settings.KEY_VAULT_CREDENTIAL == "emulator":
        # The emulator's vaults live at https://127.0.0.1:PORT, not under the challenge's vault.azure.net.
        kwargs["verify_challenge_resource"] = False
    return SecretClient(vault_url, _credential(), **kwargs)


def _describe(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or exc.message or str(exc)
    return f"{exc.status_code} {code}: {message}" if code else f"{exc.status_code}: {message}"


@contextmanager
def _translated(vault_url: str) -> Iterator[None]:
    try:
        yield
    except ClientAuthenticationError as exc:
        raise Denied(f"{vault_url} refused the portal's identity: {_describe(exc)}") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(f"{vault_url}: connection failed ({type(exc).__name__})") from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        if status in (408, 429) or status >= 500:
            raise TransientError(f"{vault_url}: {_describe(exc)}") from exc
        if status in (401, 403):
            raise Denied(
                f"{vault_url} refused to store the secret ({_describe(exc)}). The portal's identity needs the "
                f"'{REQUIRED_ROLE}' role on this vault."
            ) from exc
        raise Invalid(f"{vault_url}: {_describe(exc)}") from exc
    except ValueError as exc:  # the SDK refusing a URL or a challenge before any call
        raise Invalid(f"{vault_url}: {exc}") from exc


def write_password(
    vault_url: str, secret_name: str, password: str, *, expires_on: datetime | None, tags: dict[str, str]
) -> Written:
    """Store the password as a new version of the secret; the versions before it stay readable until they expire."""
    with _translated(vault_url):
        secret = client(vault_url).set_secret(
            secret_name,
            password,
            content_type=CONTENT_TYPE,
            expires_on=expires_on,
            tags={k: v[:256] for k, v in tags.items()},
        )
    return Written(id=str(secret.id), name=secret.name or secret_name, version=str(secret.properties.version))


def read_current(vault_url: str, secret_name: str) -> tuple[str, str]:
    """The current version's id and value: for checks that the vault holds what the registry accepts."""
    with _translated(vault_url):
        secret = client(vault_url).get_secret(secret_name)
    return str(secret.properties.version), str(secret.value)
