"""Run the emulator inside a test process, and build the real SDK client against it.

emu = start_emulator(lro_polls=1, page_size=50)
client = make_client(emu.url)
...
emu.stop()

With a real Distribution registry beside it (needs the docker-registry package):

with start_data_plane(tmp_path) as dp:
    dp.login_server  # "127.0.0.1:PORT": the loginServer of registries created from now on
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acr_emulator.distribution import Distribution, free_port
from acr_emulator.faults import Fault
from acr_emulator.ociimage import write_oci_image
from acr_emulator.server import EmulatorServer, serve_in_thread
from acr_emulator.state import State

__all__ = ["DataPlane", "Emulator", "make_client", "start_data_plane", "start_emulator", "write_oci_image"]

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
        probability: float = 1.0,
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
                    "probability": probability,
                }
            )
        )

    def clear_faults(self) -> None:
        self._server.faults.clear()

    def requests(self) -> list[dict[str, Any]]:
        """ARM calls served so far: method, path (no query), status (0 = dropped), time, operation, ms."""
        return list(self._server.request_log)

    def configure(
        self, lro_polls: int | None = None, page_size: int | None = None, lro_retry_after: float | None = None
    ) -> None:
        self._server.configure(lro_polls=lro_polls, page_size=page_size, lro_retry_after=lro_retry_after)

    def set_write_budget(self, spec: str | None) -> None:
        """Throttle ARM writes like ARM: "RATE[/BURST]", e.g. "10/200"; None lifts the limit. Starts full;
        reset() goes back to the start-up budget."""
        self._server.set_write_budget(spec)

    def stats(self) -> dict[str, Any]:
        """As GET /_emulator/stats: the write budget (rate, burst, remaining, allowed, throttled) and ARM answers
        by status, e.g. {"write_budget": {...}, "responses": {"200": 12, "429": 3}}."""
        return self._server.stats()

    def set_data_plane(self, address: str | None, registry: str | None = None) -> None:
        """Report `address` as the loginServer of the next registry created (or of `registry`), and answer
        token requests for it; reset() goes back to the start-up data plane."""
        self._server.set_data_plane(address, registry)

    def create_vault(self, name: str, port: int = 0) -> str:
        """Serve a Key Vault called `name` over HTTPS on a port of its own; answers its URL."""
        return self._server.keyvault.create_vault(name, port)

    def deny_vault(self, name: str, denied: bool = True) -> None:
        """Make the vault answer 403 to every authenticated call, as one without the role assignment does."""
        self._server.keyvault.deny(name, denied)

    @property
    def key_vault_ca_bundle(self) -> str:
        """The PEM file that makes a client trust the vaults' certificate (`connection_verify`)."""
        return self._server.keyvault.ca_bundle

    @property
    def certificate_pem(self) -> bytes:
        """The token server's signing certificate, a registry's rootcertbundle."""
        return self._server.signing_key.certificate_pem

    def events(self, table: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """The data plane's events, as GET /_emulator/events answers them: {table name: rows, oldest first}."""
        query = f"?{urllib.parse.urlencode({'table': table})}" if table else ""
        with urllib.request.urlopen(f"{self.url}/_emulator/events{query}", timeout=10) as response:
            return dict(json.load(response))

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
    data_plane: str | None = None,
    write_budget: str | None = None,
    lro_retry_after: float = 0,
) -> Emulator:
    """Serve on 127.0.0.1 (a free port unless `port` is given) from a daemon thread."""
    server = EmulatorServer(
        ("127.0.0.1", port),
        lro_polls=lro_polls,
        page_size=page_size,
        state_file=state_file,
        data_plane=data_plane,
        write_budget=write_budget,
        lro_retry_after=lro_retry_after,
    )
    return Emulator(server)


class DataPlane:
    """An emulator and the Distribution registry it serves as a data plane, started together."""

    def __init__(self, emulator: Emulator, registry: Distribution) -> None:
        self.emulator = emulator
        self.registry = registry

    @property
    def login_server(self) -> str:
        """HOST:PORT of the registry, which registries created in the emulator report as their loginServer."""
        return self.registry.address

    @property
    def token_url(self) -> str:
        return f"{self.emulator.url}/oauth2/token"

    def reset(self) -> None:
        """A fresh emulator (no registries, tokens or events) still serving this data plane. Images already
        pushed stay in the registry's storage: use repository names of your own per test."""
        self.emulator.reset()

    def events(self, table: str) -> list[dict[str, Any]]:
        return self.emulator.events(table)[table]

    def wait_for_event(
        self, table: str, matches: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first row of `table` that `matches`, waiting for it: the registry posts its notifications
        asynchronously, shortly after answering the client."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((row for row in self.events(table) if matches(row)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching {table} row within {timeout}s: {self.events(table)}")
            time.sleep(0.1)


@contextmanager
def start_data_plane(
    var_dir: str | Path, *, lro_polls: int = 1, page_size: int = 50, registry_port: int = 0
) -> Iterator[DataPlane]:
    """The emulator in a thread and `docker-registry serve` beside it, storing images under `var_dir`.

    Registries created in the emulator report the registry's HOST:PORT as their loginServer; its token realm is
    the emulator's /oauth2/token and its notifications go to the emulator's events. Raises
    distribution.DistributionError when docker-registry is not installed or does not come up.
    """
    address = f"127.0.0.1:{registry_port or free_port()}"
    emulator = start_emulator(lro_polls=lro_polls, page_size=page_size, data_plane=address)
    try:
        registry = Distribution(
            Path(var_dir),
            port=int(address.rsplit(":", 1)[1]),
            emulator_url=emulator.url,
            certificate_pem=emulator.certificate_pem,
        )
        registry.start()
        try:
            yield DataPlane(emulator, registry)
        finally:
            registry.stop()
    finally:
        emulator.stop()


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

    class StaticBearerPolicy(SansIOHTTPPolicy):
        def on_request(self, request: PipelineRequest) -> None:
            request.http_request.headers["Authorization"] = "Bearer emulator"

    class UnusedCredential:
        # The client insists on a credential even though the static policy above replaces its use.
        def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
            return AccessToken("emulator", 2**31)

    kwargs.setdefault("authentication_policy", StaticBearerPolicy())
    return ContainerRegistryManagementClient(
        UnusedCredential(),
        subscription_id,
        base_url=url,
        polling_interval=polling_interval,
        **kwargs,
    )


def make_logs_client(url: str, **kwargs: Any) -> Any:
    """The real azure-monitor-query LogsQueryClient, pointed at the emulator's Log Analytics query API, with the
    same static bearer as make_client (the SDK's bearer policy refuses plain http)."""
    from azure.core.credentials import AccessToken
    from azure.core.pipeline import PipelineRequest
    from azure.core.pipeline.policies import SansIOHTTPPolicy
    from azure.monitor.query import LogsQueryClient

    class StaticBearerPolicy(SansIOHTTPPolicy):
        def on_request(self, request: PipelineRequest) -> None:
            request.http_request.headers["Authorization"] = "Bearer emulator"

    class UnusedCredential:
        def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
            return AccessToken("emulator", 2**31)

    kwargs.setdefault("authentication_policy", StaticBearerPolicy())
    kwargs.setdefault("retry_total", 0)
    return LogsQueryClient(UnusedCredential(), endpoint=url, **kwargs)
