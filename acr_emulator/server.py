"""The HTTP side: a threading HTTP/1.1 server, bearer check, api-version check, faults, request log,
the `/_emulator/` admin endpoints and state-file persistence.

Besides the ARM API (`api.py`), the one server routes each other service's own table: the token server
(`tokenserver.py`), the data plane's events (`events.py`) and the Log Analytics query API (`loganalytics.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from acr_emulator.api import API_VERSION, Api, ArmError, Request, Response, Route
from acr_emulator.dataplane import DataPlaneConfig
from acr_emulator.events import RegistryEvents
from acr_emulator.faults import STATUS_CODES, Fault, FaultBook
from acr_emulator.keyvault import KeyVault
from acr_emulator.loganalytics import LogAnalytics
from acr_emulator.state import State
from acr_emulator.tokenserver import DEFAULT_TOKEN_LIFETIME, SigningKey, TokenServer
from acr_emulator.writebudget import WRITE_METHODS, WriteBudget
from acr_emulator.writebudget import parse as parse_write_budget

ServiceHandler = Callable[[Request], Response]

log = logging.getLogger("acr_emulator")

MAX_LOGGED_REQUESTS = 10_000
_CHALLENGE = (
    'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token", '
    "error_description=\"The authentication failed because of missing 'Authorization' header.\""
)


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    # Tests restart on the same port (state persistence); don't wait out TIME_WAIT.
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        lro_polls: int = 1,
        page_size: int = 50,
        state_file: str | Path | None = None,
        data_plane: str | None = None,
        data_plane_registry: str | None = None,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        write_budget: str | None = None,
        lro_retry_after: float = 0,
    ) -> None:
        self.state = State()
        self.state_file = Path(state_file) if state_file else None
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state.load(self.state_file)
        self.api = Api(self.state, lro_polls=lro_polls, page_size=page_size, lro_retry_after=lro_retry_after)
        self.defaults: dict[str, Any] = {
            "lro_polls": lro_polls,
            "page_size": page_size,
            "lro_retry_after": lro_retry_after,
            "write_budget": write_budget,
            "data_plane": data_plane,
            "data_plane_registry": data_plane_registry,
        }
        self.faults = FaultBook()
        self.write_budget: WriteBudget | None = None
        self.set_write_budget(write_budget)
        # ARM answers by status since start-up or reset (429s from the write budget and from faults alike).
        self.status_counts: dict[int, int] = {}
        self.request_log: deque[dict[str, Any]] = deque(maxlen=MAX_LOGGED_REQUESTS)
        # The token server's signing key lives beside the state file, so a restarted emulator keeps it.
        key_dir = self.state_file.parent / f"{self.state_file.stem}-tokenserver" if self.state_file else None
        self.signing_key = SigningKey(key_dir)
        self.token_server = TokenServer(
            self.state, self.api.data_plane, self.signing_key, self._changed, token_lifetime=token_lifetime
        )
        self.events = RegistryEvents(self.state, self.api.data_plane, self._changed)
        self.log_analytics = LogAnalytics(self.state)
        self.service_routes: dict[tuple[str, str], ServiceHandler] = {}
        for service in (self.token_server, self.events):
            self.service_routes.update(service.routes)
        # Services whose paths carry parameters answer `match(method, path)` themselves.
        self.pattern_services = [self.log_analytics]
        self.set_data_plane(data_plane, data_plane_registry)
        super().__init__(address, EmulatorHandler)
        # Key Vault: its vaults, secrets and TLS certificate beside the state file; each vault on a port of its own.
        vault_dir = self.state_file.parent / f"{self.state_file.stem}-keyvault" if self.state_file else None
        self.keyvault = KeyVault(vault_dir, host=address[0])
        self.keyvault.start()

    @property
    def data_plane(self) -> DataPlaneConfig:
        return self.api.data_plane

    def set_data_plane(self, address: str | None, registry: str | None = None) -> None:
        """Serve a data plane at `address` ("HOST:PORT"): for `registry` if named (marked now if it exists),
        else for the next registry created. None stops reporting any registry's data plane."""
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError("data_plane must be HOST:PORT")
        if registry is not None and not isinstance(registry, str):
            raise ValueError("data_plane_registry must be a registry name")
        with self.state.lock:
            self.api.data_plane.address = address.strip() if address else None
            self.api.data_plane.registry = registry
            if self.api.data_plane.apply(self.state):
                self.persist(force=True)

    def data_plane_config(self) -> dict[str, Any]:
        return {"data_plane": self.data_plane.address, "data_plane_registry": self.data_plane.registry}

    def _changed(self) -> None:
        self.api.dirty = True

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def set_write_budget(self, spec: str | None) -> None:
        """Throttle ARM writes with a token bucket, "RATE[/BURST]" (e.g. "10/200", as ARM does); None or "" lifts
        it. A new budget starts full, with its counters at zero."""
        parsed = parse_write_budget(spec)
        self.write_budget = WriteBudget(*parsed) if parsed else None

    def stats(self) -> dict[str, Any]:
        budget = self.write_budget
        return {
            "write_budget": budget.describe() if budget else None,
            "responses": {str(status): count for status, count in sorted(self.status_counts.items())},
        }

    def configure(
        self, lro_polls: int | None = None, page_size: int | None = None, lro_retry_after: float | None = None
    ) -> None:
        if lro_retry_after is not None:
            if isinstance(lro_retry_after, bool) or not isinstance(lro_retry_after, int | float) or lro_retry_after < 0:
                raise ValueError("lro_retry_after must be a non-negative number (seconds)")
            self.api.lro_retry_after = lro_retry_after
        if lro_polls is not None:
            if not isinstance(lro_polls, int) or isinstance(lro_polls, bool) or lro_polls < 0:
                raise ValueError("lro_polls must be a non-negative integer")
            self.api.lro_polls = lro_polls
        if page_size is not None:
            if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
                raise ValueError("page_size must be a positive integer")
            self.api.page_size = page_size

    def reset(self) -> None:
        """Back to a fresh start: no registries, operations, events, faults or logged requests, start-up config."""
        with self.state.lock:
            self.state.clear()
            self.configure(
                lro_polls=self.defaults["lro_polls"],
                page_size=self.defaults["page_size"],
                lro_retry_after=self.defaults["lro_retry_after"],
            )
            self.set_write_budget(self.defaults["write_budget"])
            self.status_counts.clear()
            self.set_data_plane(self.defaults["data_plane"], self.defaults["data_plane_registry"])
            self.faults.clear()
            self.request_log.clear()
            self.keyvault.reset()
            self.persist(force=True)

    def persist(self, force: bool = False) -> None:
        """Write the state file after a change; call with state.lock held."""
        if self.state_file is not None and (force or self.api.dirty):
            self.state.save(self.state_file)
        self.api.dirty = False

    def server_close(self) -> None:
        super().server_close()
        self.keyvault.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-response (or faults that drop them) are routine here.
        log.debug("connection error from %s", client_address, exc_info=True)


class EmulatorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorServer
    server_version = "acr-emulator"
    # Headers and body go out as separate writes; with Nagle on, each response waits ~40 ms for an ACK.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        # One line per request is written by _handle through logging; silence http.server's stderr lines.
        pass

    def _handle(self) -> None:
        started = time.monotonic()
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self._service(path, parsed.query, query, body, started):
            return
        if path.startswith("/_emulator/") or path == "/_emulator":
            admin = self._admin(path, body)
            self._send(admin)
            log.info("%s %s %d %.1fms", self.command, path, admin.status, (time.monotonic() - started) * 1000)
            return
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        request = Request(
            method=self.command,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            base_url=f"http://{host}",
        )
        api = self.server.api
        route = api.route(self.command, path)
        operation = route.operation if route else None
        response: Response | None
        self._remaining_writes: int | None = None
        try:
            route = self._front_door(request, route)
            with self.server.state.lock:
                try:
                    response = route.handler(request, **route.params)
                finally:
                    self.server.persist()
        except ArmError as exc:
            response = Response(exc.status, exc.body(), exc.headers)
        except _Dropped:
            response = None
        except Exception:
            log.exception("unhandled error for %s %s", self.command, path)
            response = Response(500, ArmError(500, "InternalServerError", "Emulator error.").body())
        status = 0 if response is None else response.status
        if response is not None and self._remaining_writes is not None:
            response.headers.setdefault("x-ms-ratelimit-remaining-subscription-writes", str(self._remaining_writes))
        with self.server.state.lock:
            self.server.status_counts[status] = self.server.status_counts.get(status, 0) + 1
        elapsed = (time.monotonic() - started) * 1000
        # Logged before answering, so a client that reads the log right after its call finds the call there.
        self.server.request_log.append(
            {
                "method": self.command,
                "path": path,
                "status": status,
                "time": datetime.now(UTC).isoformat(),
                "operation": operation,
                "ms": round(elapsed, 1),
            }
        )
        log.info("%s %s %d %.1fms", self.command, path, status, elapsed)
        if response is None:
            self._drop()
        else:
            self._send(response)

    def _service(self, path: str, raw_query: str, query: dict[str, str], body: bytes, started: float) -> bool:
        """Answer from another service's routes table (token server, events); False when none has the path."""
        routes = self.server.service_routes
        handler = routes.get((self.command, path.rstrip("/") or "/"))
        known = handler is not None or any(p == path.rstrip("/") for _, p in routes)
        for service in self.server.pattern_services:
            if known:
                break
            found = service.match(self.command, path)
            if found is not False:
                known, handler = True, (found if callable(found) else None)
        if handler is None:
            if not known:
                return False
            response = Response(405, {"errors": [{"code": "UNSUPPORTED", "message": f"{self.command} not allowed"}]})
        else:
            host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
            request = Request(
                method=self.command,
                path=path,
                query=query,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                base_url=f"http://{host}",
                raw_query=raw_query,
                client_address=str(self.client_address[0]),
            )
            try:
                response = handler(request)
                with self.server.state.lock:
                    self.server.persist()
            except Exception:
                log.exception("unhandled error for %s %s", self.command, path)
                response = Response(500, {"errors": [{"code": "UNKNOWN", "message": "Emulator error."}]})
        self._send(response)
        log.info("%s %s %d %.1fms", self.command, path, response.status, (time.monotonic() - started) * 1000)
        return True

    def _front_door(self, request: Request, route: Route | None) -> Route:
        """Checks ARM makes before a resource provider sees the call, then any injected fault."""
        auth = request.headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing or is not a Bearer token.",
                headers={"WWW-Authenticate": _CHALLENGE},
            )
        version = request.query.get("api-version")
        if version is None:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version != API_VERSION:
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported version is '{API_VERSION}'.",
            )
        if route is None:
            raise ArmError(404, "NotFound", f"No route for {request.method} {request.path}.")
        budget = self.server.write_budget
        if budget is not None and request.method in WRITE_METHODS:
            decision = budget.take()
            self._remaining_writes = decision.remaining
            if not decision.allowed:
                # ARM's own words for a principal over its subscription's write limit.
                raise ArmError(
                    429,
                    "SubscriptionRequestsThrottled",
                    "Number of 'write' requests for subscription exceeded the limit. "
                    f"Please try again after '{decision.retry_after}' seconds.",
                    headers={
                        "Retry-After": str(decision.retry_after),
                        "x-ms-ratelimit-remaining-subscription-writes": "0",
                    },
                )
        fault = self.server.faults.take(route.operation) if route.operation else None
        if fault is None:
            return route
        if fault.delay:
            time.sleep(fault.delay)
        if fault.drop:
            raise _Dropped
        if fault.status is not None:
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            message = {
                429: "The request was throttled (injected fault).",
                500: "An internal error occurred (injected fault).",
                503: "The service is unavailable (injected fault).",
            }[fault.status]
            raise ArmError(fault.status, STATUS_CODES[fault.status], message, headers=headers)
        request.lro_fail = fault.lro_fail
        return route

    def _admin(self, path: str, body: bytes) -> Response:
        server = self.server
        route = (self.command, path.rstrip("/"))
        try:
            data = json.loads(body) if body.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            if route == ("GET", "/_emulator/health"):
                return Response(200, {"status": "ok"})
            if route == ("GET", "/_emulator/requests"):
                return Response(200, {"requests": list(server.request_log)})
            if route == ("GET", "/_emulator/faults"):
                return Response(200, {"faults": server.faults.list()})
            if route == ("POST", "/_emulator/faults"):
                server.faults.add(Fault.from_dict(data))
                return Response(201, {"faults": server.faults.list()})
            if route == ("DELETE", "/_emulator/faults"):
                server.faults.clear()
                return Response(204)
            if route == ("POST", "/_emulator/reset"):
                server.reset()
                return Response(204)
            if route == ("GET", "/_emulator/stats"):
                return Response(200, server.stats())
            if route == ("GET", "/_emulator/config"):
                return Response(200, self._config())
            if route == ("POST", "/_emulator/config"):
                unknown = set(data) - {
                    "lro_polls",
                    "page_size",
                    "lro_retry_after",
                    "data_plane",
                    "data_plane_registry",
                    "write_budget",
                }
                if unknown:
                    raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}")
                if "write_budget" in data:
                    server.set_write_budget(data["write_budget"])
                server.configure(
                    lro_polls=data.get("lro_polls"),
                    page_size=data.get("page_size"),
                    lro_retry_after=data.get("lro_retry_after"),
                )
                if "data_plane" in data or "data_plane_registry" in data:
                    current = server.data_plane_config()
                    server.set_data_plane(
                        data.get("data_plane", current["data_plane"]),
                        data.get("data_plane_registry", current["data_plane_registry"]),
                    )
                return Response(200, self._config())
            if route == ("GET", "/_emulator/state"):
                return Response(200, server.state.to_dict())
            if route == ("GET", "/_emulator/vaults"):
                return Response(200, {"vaults": server.keyvault.describe(), "ca_bundle": server.keyvault.ca_bundle})
            if route == ("POST", "/_emulator/vaults"):
                url = server.keyvault.create_vault(str(data.get("name") or ""), int(data.get("port") or 0))
                return Response(201, {"name": data["name"], "url": url, "ca_bundle": server.keyvault.ca_bundle})
            if route == ("POST", "/_emulator/vaults/deny"):
                server.keyvault.deny(str(data.get("name") or ""), bool(data.get("denied", True)))
                return Response(200, {"vaults": server.keyvault.describe()})
        except (ValueError, TypeError) as exc:
            return Response(400, {"error": {"code": "InvalidRequest", "message": str(exc)}})
        return Response(404, {"error": {"code": "NotFound", "message": f"No admin endpoint {self.command} {path}."}})

    def _config(self) -> dict[str, Any]:
        server = self.server
        budget = server.write_budget
        return {
            "lro_polls": server.api.lro_polls,
            "page_size": server.api.page_size,
            "lro_retry_after": server.api.lro_retry_after,
            "write_budget": budget.describe()["write_budget"] if budget else None,
            **server.data_plane_config(),
        }

    def _send(self, response: Response) -> None:
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        self.send_response(response.status)
        if response.body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", f"emulator-{time.monotonic_ns()}")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _drop(self) -> None:
        """Hang up without a word, as a dying load balancer would."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class _Dropped(Exception):
    pass


def serve(host: str, port: int, **kwargs: Any) -> EmulatorServer:
    """Bind (port 0 picks a free one) without serving yet; call serve_forever() on the result."""
    return EmulatorServer((host, port), **kwargs)


def serve_in_thread(server: EmulatorServer) -> threading.Thread:
    # A short poll interval so stop() (shutdown) returns in milliseconds rather than half a second.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="acr-emulator", daemon=True
    )
    thread.start()
    return thread
