"""How the portal's Azure clients authenticate to the local emulator, which accepts any bearer token.

Shared by the one module per service (`acr`, `loganalytics`, `keyvault`). Over plain http azure-core's bearer policy
refuses to send a token, so those clients get `StaticBearerPolicy` in its place; the credential argument they all
require is then `StaticCredential`, which a client over https (Key Vault's challenge) does ask for a token.
"""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy


class StaticBearerPolicy(SansIOHTTPPolicy):
    """Sends a fixed bearer token, over http too."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def on_request(self, request: PipelineRequest) -> None:
        request.http_request.headers["Authorization"] = self._header


class StaticCredential:
    """A credential that always answers the same token, good for an hour."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)
