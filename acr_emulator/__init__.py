"""A local emulator of the Azure Resource Manager API for Microsoft.ContainerRegistry registries, scope maps and
tokens, so the real azure-mgmt-containerregistry SDK can run offline; and of a registry's data plane: the token
server, a real Distribution registry beside it, and their events.

See README.md in this package; `acr_emulator.testing` is the in-process entry point for tests.
"""

from __future__ import annotations

from acr_emulator.api import API_VERSION

__all__ = ["API_VERSION"]
