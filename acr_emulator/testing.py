"""Run the emulator inside a test process, and build the real SDK client against it.

emu = start_emulator(lro_polls=1, page_size=50)
client = make_client(emu.url)
...
emu.stop()
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acr_emulator.faults import Fault
from acr_emulator.server import EmulatorServer, serve_in_thread
from acr_emulator.state import State

if TYPE_CHECKING:
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


class Emulator:
    """A running emulator on 127.0.0.1; the handle tests drive it through."""

    def __init__(self, server: EmulatorServer) -> None:
        self._server = server
        self._thread: threading.Thread | None = serve_in_thread(server)

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def state(self) -> State:
        return self._server.state

    def reset(self) -> None:
        """Forget every registry, operation, fault and logged request; restore start-up
        lro_polls and page_size."""
        self._server.reset()

    def add_fault(
        self,
        count: int = 1,
        status: int | None = None,
        retry_after: int | None = None,
        operation: str | None = None,
        delay: float | None = None,
        lro_fail: bool = False,
        drop: bool = False,
    ) -> None:
        self._server.faults.add(
            Fault.from_dict(
                {
                    "count": count,
                    "status": status,
                    "retry_after": retry_after,
                    "operation": operation,
                    "delay": delay,
                    "lro_fail": lro_fail,
                    "drop": drop,
                }
            )
        )

    def clear_faults(self) -> None:
        self._server.faults.clear()

    def requests(self) -> list[dict[str, Any]]:
        """ARM calls served so far: method, path (no query), status (0 = dropped), time, operation, ms."""
        return list(self._server.request_log)

    def configure(self, lro_polls: int | None = None, page_size: int | None = None) -> None:
        self._server.configure(lro_polls=lro_polls, page_size=page_size)

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_emulator(
    lro_polls: int = 1,
    page_size: int = 50,
    state_file: str | Path | None = None,
    port: int = 0,
) -> Emulator:
    """Serve on 127.0.0.1 (a free port unless `port` is given) from a daemon thread."""
    server = EmulatorServer(("127.0.0.1", port), lro_polls=lro_polls, page_size=page_size, state_file=state_file)
    return Emulator(server)


def make_client(
    url: str,
    subscription_id: str = DEFAULT_SUBSCRIPTION,
    polling_interval: float = 0,
    **kwargs: Any,
) -> ContainerRegistryManagementClient:
    """The real ContainerRegistryManagementClient, pointed at the emulator.

    The SDK's ARM bearer policy refuses to send a token over plain http, so a static
    "Authorization: Bearer emulator" header takes its place. Extra kwargs (retry_total=0, ...) pass through.
    """
    # Imported here so the emulator itself keeps running on the standard library alone.
    from azure.core.credentials import AccessToken
    from azure.core.pipeline import PipelineRequest
    from azure.core.pipeline.policies import SansIOHTTPPolicy
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    class StaticBearerPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
        def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]
            request.http_request.headers["Authorization"] = "Bearer emulator"

    class UnusedCredential:
        # The client insists on a credential even though the static policy above replaces its use.
        def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
            return AccessToken("emulator", 2**31)

    kwargs.setdefault("authentication_policy", StaticBearerPolicy())
    return ContainerRegistryManagementClient(
        UnusedCredential(),  # type: ignore[arg-type]
        subscription_id,
        base_url=url,
        polling_interval=polling_interval,
        **kwargs,
    )
