"""A small OpenID provider for the tests: the parts of Entra ID that the portal talks to, on a local port.

It signs ID tokens with an RSA key made at start, publishes the key as a JWKS, and checks what a real provider
checks: the client's secret, a single-use code bound to its redirect URI, and the PKCE verifier. A test decides
who signs in (`user`) and may spoil the next token (`token_overrides`, `sign_with_stray_key`) or make the provider
refuse (`refuse_with`), as Entra does for a disabled account.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

KEY_ID = "test-key-1"


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str
    claims: dict[str, Any]


@dataclass
class Provider:
    client_id: str = "portal-client-id"
    client_secret: str = "portal-client-secret"
    user: dict[str, Any] = field(default_factory=dict)
    token_overrides: dict[str, Any] = field(default_factory=dict)
    sign_with_stray_key: bool = False
    refuse_with: str | None = None
    # What the provider saw, for assertions.
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._stray_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._grants: dict[str, Grant] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.issuer = f"{self.url}/tenant/v2.0"
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-provider", daemon=True)

    def start(self) -> Provider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self._grants.clear()
        self.user = {}
        self.token_overrides = {}
        self.sign_with_stray_key = False
        self.refuse_with = None
        self.authorize_requests.clear()
        self.token_errors.clear()

    def endpoints(self) -> dict[str, str]:
        return {
            "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.url}/authorize",
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.url}/token",
            "OIDC_OP_USER_ENDPOINT": f"{self.url}/userinfo",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.url}/keys",
            "OIDC_OP_ISSUER": self.issuer,
        }

    def authorize(self, url: str) -> str:
        """Play the browser at the provider: request the authorize URL and return where it sends the browser."""
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            connection.request("GET", f"{parts.path}?{parts.query}")
            response = connection.getresponse()
            response.read()
            assert response.status == 302, f"the provider answered {response.status}"
            return response.getheader("Location", "")
        finally:
            connection.close()

    # The endpoints.

    def _authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        self.authorize_requests.append(query)
        redirect_uri, state = query.get("redirect_uri", ""), query.get("state", "")
        if query.get("client_id") != self.client_id or query.get("response_type") != "code" or not redirect_uri:
            return 400, {}, {"error": "invalid_request"}
        if self.refuse_with:
            return 302, {"Location": f"{redirect_uri}?{urlencode({'error': self.refuse_with, 'state': state})}"}, None
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._grants[code] = Grant(
                client_id=self.client_id,
                redirect_uri=redirect_uri,
                nonce=query.get("nonce"),
                code_challenge=query.get("code_challenge"),
                code_challenge_method=query.get("code_challenge_method", "plain"),
                claims=dict(self.user),
            )
        return 302, {"Location": f"{redirect_uri}?{urlencode({'code': code, 'state': state})}"}, None

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        if form.get("grant_type") != "authorization_code":
            return self._token_error("unsupported_grant_type")
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return self._token_error("invalid_client")
        with self._lock:
            grant = self._grants.pop(form.get("code", ""), None)
        if grant is None or grant.redirect_uri != form.get("redirect_uri"):
            return self._token_error("invalid_grant")
        if not grant.code_challenge or not _pkce_matches(grant, form.get("code_verifier")):
            return self._token_error("invalid_grant: PKCE")
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "nonce": grant.nonce,
            "tid": "tenant",
            **grant.claims,
        }
        claims.setdefault("sub", claims.get("oid", "subject"))
        claims.update(self.token_overrides)
        key = self._stray_key if self.sign_with_stray_key else self._key
        id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": KEY_ID})
        return (
            200,
            {},
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": 3600,
                "id_token": id_token,
            },
        )

    def _token_error(self, error: str) -> tuple[int, dict[str, str], Any]:
        self.token_errors.append(error)
        return 400, {}, {"error": error.split(":")[0]}

    def _keys(self) -> tuple[int, dict[str, str], Any]:
        jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update({"kid": KEY_ID, "use": "sig", "alg": "RS256"})
        return 200, {}, {"keys": [jwk]}

    def _userinfo(self, authorization: str) -> tuple[int, dict[str, str], Any]:
        if not authorization.startswith("Bearer "):
            return 401, {}, {"error": "invalid_token"}
        return 200, {}, {k: v for k, v in self.user.items() if k in {"sub", "name", "email"}}

    def _discovery(self) -> tuple[int, dict[str, str], Any]:
        return (
            200,
            {},
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "userinfo_endpoint": f"{self.url}/userinfo",
                "jwks_uri": f"{self.url}/keys",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
            },
        )


def _pkce_matches(grant: Grant, verifier: str | None) -> bool:
    if not verifier:
        return False
    if grant.code_challenge_method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == grant.code_challenge
    return verifier == grant.code_challenge


def _handler_for(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/authorize":
                self._answer(*provider._authorize(query))
            elif parts.path == "/keys":
                self._answer(*provider._keys())
            elif parts.path == "/userinfo":
                self._answer(*provider._userinfo(self.headers.get("Authorization", "")))
            elif parts.path == "/tenant/v2.0/.well-known/openid-configuration":
                self._answer(*provider._discovery())
            else:
                self._answer(404, {}, {"error": "not_found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if urlsplit(self.path).path == "/token":
                self._answer(*provider._token(form))
            else:
                self._answer(404, {}, {"error": "not_found"})

        def _answer(self, status: int, headers: dict[str, str], body: Any) -> None:
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
