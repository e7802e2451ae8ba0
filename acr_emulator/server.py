"""The HTTP side: a threading HTTP/1.1 server, bearer check, api-version check, faults, request log,
the `/_emulator/` admin endpoints and state-file persistence."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from acr_emulator.api import API_VERSION, Api, ArmError, Request, Response, Route
from acr_emulator.faults import STATUS_CODES, Fault, FaultBook
from acr_emulator.state import State

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
    ) -> None:
        self.state = State()
        self.state_file = Path(state_file) if state_file else None
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state.load(self.state_file)
        self.api = Api(self.state, lro_polls=lro_polls, page_size=page_size)
        self.defaults = {"lro_polls": lro_polls, "page_size": page_size}
        self.faults = FaultBook()
        self.request_log: deque[dict[str, Any]] = deque(maxlen=MAX_LOGGED_REQUESTS)
        super().__init__(address, EmulatorHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def configure(self, lro_polls: int | None = None, page_size: int | None = None) -> None:
        if lro_polls is not None:
            if not isinstance(lro_polls, int) or isinstance(lro_polls, bool) or lro_polls < 0:
                raise ValueError("lro_polls must be a non-negative integer")
            self.api.lro_polls = lro_polls
        if page_size is not None:
            if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
                raise ValueError("page_size must be a positive integer")
            self.api.page_size = page_size

    def reset(self) -> None:
        """Back to a fresh start: no registries, operations, faults or logged requests, start-up config."""
        with self.state.lock:
            self.state.clear()
            self.configure(**self.defaults)
            self.faults.clear()
            self.request_log.clear()
            self.persist(force=True)

    def persist(self, force: bool = False) -> None:
        """Write the state file after a change; call with state.lock held."""
        if self.state_file is not None and (force or self.api.dirty):
            self.state.save(self.state_file)
        self.api.dirty = False

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
        if path.startswith("/_emulator/") or path == "/_emulator":
            response = self._admin(path, body)
            self._send(response)
            log.info("%s %s %d %.1fms", self.command, path, response.status, (time.monotonic() - started) * 1000)
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
        try:
            route = self._front_door(request, route)
            with self.server.state.lock:
                try:
                    response: Response | None = route.handler(request, **route.params)
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
            if route == ("GET", "/_emulator/config"):
                return Response(200, {"lro_polls": server.api.lro_polls, "page_size": server.api.page_size})
            if route == ("POST", "/_emulator/config"):
                unknown = set(data) - {"lro_polls", "page_size"}
                if unknown:
                    raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}")
                server.configure(**data)
                return Response(200, {"lro_polls": server.api.lro_polls, "page_size": server.api.page_size})
            if route == ("GET", "/_emulator/state"):
                return Response(200, server.state.to_dict())
        except (ValueError, TypeError) as exc:
            return Response(400, {"error": {"code": "InvalidRequest", "message": str(exc)}})
        return Response(404, {"error": {"code": "NotFound", "message": f"No admin endpoint {self.command} {path}."}})

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
