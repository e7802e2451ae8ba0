"""The ARM client each worker keeps: it goes through a proxy the environment names, trusts the CA bundle it names, and
when it names no proxy does not read the environment again on every call."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from accessreq import acr as acr_module


@pytest.fixture
def proxy() -> Iterator[list[str]]:
    """A forward proxy that records each request line and answers 404, as ARM does for a missing scope map."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            seen.append(self.requestline)
            body = b'{"error": {"code": "ResourceNotFound", "message": "not here"}}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen.append(f"http://127.0.0.1:{server.server_address[1]}")
    yield seen
    server.shutdown()


def _fresh_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # Clients are made once per process: these tests need one made under the environment they set.
    monkeypatch.setattr(acr_module, "_clients", {})


def test_it_goes_through_the_proxy_the_environment_names(registry, proxy, monkeypatch) -> None:
    address = proxy.pop(0)
    monkeypatch.setenv("HTTP_PROXY", address)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    _fresh_client(monkeypatch)
    assert acr_module.get_scope_map(registry, "ci-payments-1") is None
    assert len(proxy) == 1 and proxy[0].startswith("GET http://") and "/scopeMaps/ci-payments-1" in proxy[0]


def test_it_does_not_look_at_the_environment_on_each_call_when_it_names_no_proxy(registry, monkeypatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    _fresh_client(monkeypatch)
    assert acr_module.get_scope_map(registry, "ci-payments-1") is None  # straight to the emulator
    looked: list[str] = []
    monkeypatch.setattr("requests.sessions.get_environ_proxies", lambda *a, **k: looked.append("proxies") or {})
    assert acr_module.get_scope_map(registry, "ci-payments-1") is None
    assert looked == []


def test_it_trusts_the_ca_bundle_the_environment_names(registry, monkeypatch, tmp_path) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    _fresh_client(monkeypatch)
    transport = acr_module.client(registry.subscription_id)._client._pipeline._transport
    assert transport.connection_config.verify == str(bundle)
