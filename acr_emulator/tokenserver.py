"""The registry's token server: Docker token authentication as ACR serves it at `/oauth2/token`.

`GET /oauth2/token?service=<login server>&scope=repository:<repo>:pull,push` (scope may repeat) with HTTP Basic
(token name, password) answers `{"token", "access_token", "expires_in", "issued_at"}`: an RS256 JWT whose `access`
claim holds what was asked for intersected with what the token's scope map grants. A Distribution registry configured
with this server as its realm (see `distribution.py`) trusts the JWT through the emulator's certificate, which rides
in the JWT's `x5c` header and is also named by a libtrust `kid`.

Every answer is written to the ContainerRegistryLoginEvents table (see `events.py`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from acr_emulator import names
from acr_emulator.api import Request, Response
from acr_emulator.dataplane import DATA_PLANE_ACTIONS, DataPlaneConfig, authenticate, effective_actions
from acr_emulator.state import State, format_time, utcnow

log = logging.getLogger("acr_emulator.tokenserver")

# What ACR writes into its access tokens (Azure/acr docs/AAD-OAuth.md shows iss, aud = login server, version,
# grant_type "access_token" and an empty roles list).
ISSUER = "Azure Container Registry"
# ACR's documented sample token lived 75 minutes; five minutes here keeps a disabled token's last JWT short-lived.
DEFAULT_TOKEN_LIFETIME = 300
LOGIN_TABLE = "ContainerRegistryLoginEvents"
_CHALLENGE = 'Basic realm="Azure Container Registry"'


class SigningKey:
    """The RSA key and self-signed certificate the token server signs with, made on first use.

    With a directory, both live there as PEM files (the key readable by its owner only) and a restarted emulator
    signs with the same key, so registries configured with the certificate keep trusting it.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._key: rsa.RSAPrivateKey | None = None
        self._cert: x509.Certificate | None = None

    @property
    def key_path(self) -> Path | None:
        return self.directory / "token-signing.key" if self.directory else None

    @property
    def cert_path(self) -> Path | None:
        return self.directory / "token-signing.crt" if self.directory else None

    def _load(self) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        with self._lock:
            if self._key is None or self._cert is None:
                self._key, self._cert = self._read() or self._make()
            return self._key, self._cert

    def _read(self) -> tuple[rsa.RSAPrivateKey, x509.Certificate] | None:
        if self.key_path is None or self.cert_path is None:
            return None
        if not (self.key_path.exists() and self.cert_path.exists()):
            return None
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{self.key_path} does not hold an RSA key")
        return key, x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    def _make(self) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acr-emulator token signing")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            # Its own root: Distribution checks the x5c chain against its rootcertbundle, and wants a leaf meant
            # for digital signatures.
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        if self.key_path is not None and self.cert_path is not None:
            self.key_path.parent.mkdir(parents=True, exist_ok=True)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    @property
    def certificate_pem(self) -> bytes:
        return self._load()[1].public_bytes(serialization.Encoding.PEM)

    @property
    def kid(self) -> str:
        return libtrust_key_id(self._load()[1].public_key())

    def sign(self, claims: dict[str, Any]) -> str:
        key, cert = self._load()
        headers = {
            "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
            "kid": libtrust_key_id(cert.public_key()),
        }
        return jwt.encode(claims, key, algorithm="RS256", headers=headers)

    def public_key(self) -> Any:
        return self._load()[1].public_key()


def libtrust_key_id(public_key: Any) -> str:
    """The key id Distribution's libtrust gives a public key: base32 of the first 30 bytes of the SHA-256 of its
    DER SubjectPublicKeyInfo, in 12 groups of 4 joined by ':'."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, 48, 4))


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(raw_query: str) -> list[Scope]:
    """Every `scope` parameter (it may repeat, and one may hold several scopes separated by spaces).
    Unparseable scopes are dropped: they can grant nothing."""
    found = []
    for value in urllib.parse.parse_qs(raw_query, keep_blank_values=True).get("scope", []):
        for part in value.split():
            kind, sep, rest = part.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not (sep and sep2 and kind and name):
                continue
            found.append(Scope(kind, name, tuple(a for a in actions.split(",") if a)))
    return found


def grant(scope_map_actions: list[str], scopes: list[Scope]) -> list[dict[str, Any]]:
    """The JWT `access` entries: per repository, the requested actions the scope map grants; repositories with
    nothing granted (and every non-repository scope, such as `registry:catalog:*`) are left out."""
    granted: dict[str, list[str]] = {}
    for scope in scopes:
        if scope.type != "repository" or not names.is_valid_repository(scope.name):
            continue
        allowed = {DATA_PLANE_ACTIONS[a] for a in effective_actions(scope_map_actions, scope.name)}
        actions = granted.setdefault(scope.name, [])
        actions.extend(a for a in scope.actions if a in allowed and a not in actions)
    return [{"type": "repository", "name": name, "actions": acts} for name, acts in granted.items() if acts]


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def _unauthorized(message: str) -> Response:
    body = {"errors": [{"code": "UNAUTHORIZED", "message": message}]}
    return Response(401, body, {"WWW-Authenticate": _CHALLENGE})


class TokenServer:
    """Routes: `GET /oauth2/token` (the token endpoint) and `GET /_emulator/tokenserver/certificate` (the PEM
    certificate a registry needs as its rootcertbundle)."""

    def __init__(
        self,
        state: State,
        data_plane: DataPlaneConfig,
        signing_key: SigningKey,
        on_change: Callable[[], None],
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
    ) -> None:
        self.state = state
        self.data_plane = data_plane
        self.signing_key = signing_key
        self.on_change = on_change
        self.token_lifetime = token_lifetime
        self.routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "/oauth2/token"): self.token,
            ("GET", "/_emulator/tokenserver/certificate"): self.certificate,
        }

    def certificate(self, req: Request) -> Response:
        return Response(200, {"certificate": self.signing_key.certificate_pem.decode(), "kid": self.signing_key.kid})

    def token(self, req: Request) -> Response:
        started = time.monotonic()
        service = req.query.get("service", "")
        scopes = parse_scopes(req.raw_query)
        credentials = _basic_credentials(req.headers.get("authorization", ""))
        identity = credentials[0] if credentials else ""
        registry = self.data_plane.registry_for(self.state, service) if service else None
        response: Response
        failure: str | None
        granted: list[dict[str, Any]] = []
        jwt_id = ""
        if not service:
            failure = "no service"
            response = Response(400, {"errors": [{"code": "INVALID_REQUEST", "message": "service is required"}]})
        elif credentials is None:
            failure = "no basic credentials"
            response = _unauthorized("authentication required")
        elif registry is None:
            failure = f"unknown service {service}"
            response = _unauthorized("authentication required")
        else:
            result = authenticate(self.state, registry, credentials[0], credentials[1])
            failure = result.failure
            if result.ok:
                granted = grant(list(result.actions), scopes)
                jwt_id = secrets.token_hex(16)
                subject = result.token.name if result.token else identity
                response = Response(200, self._issue(subject, service, granted, jwt_id))
            else:
                # The client learns only that it failed; the reason goes to the login log.
                response = _unauthorized("authentication required: the token name or password is not valid")
        self._record(req, registry, service, identity, response.status, failure, scopes, granted, started, jwt_id)
        return response

    def _issue(self, subject: str, service: str, access: list[dict[str, Any]], jwt_id: str) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "jti": jwt_id,
            "sub": subject,
            "nbf": now,
            "exp": now + self.token_lifetime,
            "iat": now,
            "iss": ISSUER,
            "aud": service,
            "version": "1.0",
            "grant_type": "access_token",
            "access": access,
            "roles": [],
        }
        signed = self.signing_key.sign(claims)
        issued_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": signed, "access_token": signed, "expires_in": self.token_lifetime, "issued_at": issued_at}

    def _record(
        self,
        req: Request,
        registry: Any,
        service: str,
        identity: str,
        status: int,
        failure: str | None,
        scopes: list[Scope],
        granted: list[dict[str, Any]],
        started: float,
        jwt_id: str,
    ) -> None:
        row = {
            "TimeGenerated": format_time(utcnow()),
            "Category": LOGIN_TABLE,
            "OperationName": "Login",
            "LoginServer": service,
            "Identity": identity,
            "CallerIpAddress": req.client_address,
            "UserAgent": req.headers.get("user-agent", ""),
            "ResultType": str(status),
            "ResultDescription": failure or "Succeeded",
            # A string column in ACR's schema.
            "DurationMs": str(round((time.monotonic() - started) * 1000)),
            "CorrelationId": secrets.token_hex(8),
            # The issued JWT's jti; empty when nothing was issued.
            "JwtId": jwt_id,
            "Region": "",
            "_ResourceId": registry.id if registry is not None else "",
            "_SubscriptionId": registry.subscription_id if registry is not None else "",
            "Type": LOGIN_TABLE,
            # Not ACR columns: what the client asked for and what its token holds.
            "ScopesRequested": [str(s) for s in scopes],
            "ScopesGranted": [f"repository:{a['name']}:{','.join(a['actions'])}" for a in granted],
        }
        self.state.record_event(LOGIN_TABLE, row)
        self.on_change()
        log.info("token for %r at %s: %d %s", identity, service, status, failure or "granted")
