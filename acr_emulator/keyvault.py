"""Key Vault secrets: the data plane `azure-keyvault-secrets` drives, over HTTPS, one listener per vault.

A vault is addressed by its URL, `https://127.0.0.1:PORT`: the SDK parses secret ids as
`{vault URL}/secrets/{name}/{version}`, so a vault cannot live under a path, and names such as
`contosokv.vault.azure.net` do not resolve here. Each vault therefore gets a port of its own on the emulator's
host, served by a thread of the emulator's process, with a certificate the emulator makes and keeps beside its
state (`KeyVault.ca_bundle` is the file clients trust).

Authentication is the challenge the SDK expects: a request without a bearer gets 401 with
`WWW-Authenticate: Bearer authorization="…", resource="https://vault.azure.net"`, and any bearer is then accepted.
A vault can be told to refuse every authenticated call with 403 (`deny`), as a vault whose RBAC lacks the role does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import ssl
import tempfile
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("acr_emulator.keyvault")

# What azure-keyvault-secrets 4.x sends (its default first) and the versions before it.
API_VERSIONS = ("2026-04-01", "2025-07-01", "7.6", "7.5", "7.4", "7.3", "7.2", "7.1", "7.0", "2016-10-01")
TENANT = "00000000-0000-0000-0000-000000000000"
CHALLENGE = f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="https://vault.azure.net"'
MAX_PAGE = 25


class VaultError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": str(self)}}


@dataclass
class SecretVersion:
    version: str
    value: str
    content_type: str | None
    enabled: bool
    created: int
    updated: int
    exp: int | None = None
    nbf: int | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Vault:
    name: str
    port: int
    denied: bool = False
    # secret name (as first written) -> versions, oldest first; names compare case-insensitively, as in Azure.
    secrets: dict[str, list[SecretVersion]] = field(default_factory=dict)

    def versions(self, name: str) -> tuple[str, list[SecretVersion]]:
        for stored, versions in self.secrets.items():
            if stored.lower() == name.lower():
                return stored, versions
        raise VaultError(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")


class TlsCertificate:
    """A root and a server certificate for 127.0.0.1 and localhost, made once and kept in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_path = directory / "ca.pem"
        self.cert_path = directory / "server.pem"
        self.key_path = directory / "server-key.pem"
        if not (self.ca_path.exists() and self.cert_path.exists() and self.key_path.exists()):
            self._make()

    def _make(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acr-emulator Key Vault root")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


class KeyVault:
    """Every vault, its secrets and its listener. State lives in `state_path` (JSON) when given."""

    def __init__(self, directory: Path | None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.lock = threading.RLock()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="acr-emulator-keyvault-")
            directory = Path(self._tmp.name)
        self.directory = directory
        self.state_path: Path | None = None if self._tmp else directory / "vaults.json"
        self._tls: TlsCertificate | None = None  # made when first needed, so an emulator without vaults writes none
        self.vaults: dict[str, Vault] = {}
        self._servers: dict[str, VaultServer] = {}
        self._load()

    @property
    def tls(self) -> TlsCertificate:
        with self.lock:
            if self._tls is None:
                self._tls = TlsCertificate(self.directory)
            return self._tls

    @property
    def ca_bundle(self) -> str:
        """The PEM file a client passes as `connection_verify` to trust every vault here."""
        return str(self.tls.ca_path)

    # --- vaults --------------------------------------------------------------------------------------------------

    def create_vault(self, name: str, port: int = 0) -> str:
        """Serve a vault (again, if it exists) and answer its URL."""
        if not isinstance(name, str) or not name or len(name) > 24:
            raise ValueError("a vault name is 1-24 characters")
        with self.lock:
            vault = self.vaults.get(name)
            if vault is None:
                vault = Vault(name=name, port=port)
                self.vaults[name] = vault
            if name not in self._servers:
                self._listen(vault)
            self._save()
            return self.url(name)

    def port_of(self, name: str) -> int:
        """The port a remembered vault was served on, 0 for a new one."""
        vault = self.vaults.get(name)
        return vault.port if vault else 0

    def url(self, name: str) -> str:
        return f"https://{self.host}:{self.vaults[name].port}"

    def deny(self, name: str, denied: bool = True) -> None:
        """Make a vault answer 403 to every authenticated call (or stop doing so)."""
        with self.lock:
            if name not in self.vaults:
                raise ValueError(f"no vault {name!r}")
            self.vaults[name].denied = bool(denied)
            self._save()

    def describe(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"name": v.name, "url": self.url(v.name), "denied": v.denied, "secrets": sorted(v.secrets)}
                for v in self.vaults.values()
            ]

    def reset(self) -> None:
        """No vaults: every listener stops."""
        with self.lock:
            self.stop()
            self.vaults.clear()
            self._save()

    def start(self) -> None:
        """Serve every vault the state file remembers, on its port."""
        with self.lock:
            for vault in self.vaults.values():
                if vault.name not in self._servers:
                    self._listen(vault)

    def stop(self) -> None:
        with self.lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.shutdown()
            server.server_close()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _listen(self, vault: Vault) -> None:
        server = VaultServer((self.host, vault.port), self, vault.name)
        vault.port = server.server_address[1]
        self._servers[vault.name] = server
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"keyvault-{vault.name}",
            daemon=True,
        ).start()

    # --- persistence ---------------------------------------------------------------------------------------------

    def _load(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        data = json.loads(self.state_path.read_text())
        for raw in data.get("vaults", []):
            versions = {name: [SecretVersion(**v) for v in items] for name, items in raw.pop("secrets", {}).items()}
            self.vaults[raw["name"]] = Vault(**raw, secrets=versions)

    def _save(self) -> None:
        if self.state_path is None or (not self.vaults and not self.state_path.exists()):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"vaults": [asdict(v) for v in self.vaults.values()]}, indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".vaults-")
        with os.fdopen(fd, "w") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)

    # --- the REST API ----------------------------------------------------------------------------------------------

    def handle(
        self,
        vault_name: str,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        base_url: str,
    ) -> tuple[int, Any, dict[str, str]]:
        try:
            return 200, self._dispatch(vault_name, method, path, query, headers, body, base_url), {}
        except VaultError as exc:
            return exc.status, exc.body(), exc.headers

    def _dispatch(
        self,
        vault_name: str,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        base_url: str,
    ) -> Any:
        auth = headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise VaultError(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                {"WWW-Authenticate": CHALLENGE},
            )
        version = query.get("api-version")
        if version not in API_VERSIONS:
            raise VaultError(
                400,
                "BadParameter",
                f"The specified version ({version}) is not recognized. "
                f"Consider using the latest supported version ({API_VERSIONS[0]}).",
            )
        parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
        if path.endswith("/") and len(parts) == 3:
            parts = parts[:2] + [""]  # GET /secrets/{name}/ is the latest version
        with self.lock:
            vault = self.vaults[vault_name]
            if vault.denied:
                raise VaultError(
                    403,
                    "Forbidden",
                    "Caller is not authorized to perform action on resource. If role assignments, deny assignments "
                    "or role definitions were changed recently, please observe propagation time. "
                    f"Vault: {vault.name}; Action: 'Microsoft.KeyVault/vaults/secrets/setSecret/action'",
                )
            if parts == ["secrets"] and method == "GET":
                return self._list(vault, None, query, base_url)
            if len(parts) < 2 or parts[0] != "secrets":
                raise VaultError(404, "NotFound", f"No route for {method} {path}.")
            name = parts[1]
            if len(parts) == 2 and method == "PUT":
                return self._set(vault, name, body, base_url)
            if len(parts) == 3 and parts[2] == "versions" and method == "GET":
                return self._list(vault, name, query, base_url)
            if len(parts) == 3 and method == "GET":
                return self._get(vault, name, parts[2], base_url)
            if len(parts) == 3 and method == "PATCH":
                return self._update(vault, name, parts[2], body, base_url)
            raise VaultError(405, "MethodNotAllowed", f"{method} is not allowed on {path}.")

    def _set(self, vault: Vault, name: str, body: bytes, base_url: str) -> dict[str, Any]:
        if not _valid_name(name):
            raise VaultError(400, "BadParameter", "The request URI contains an invalid name: " + name)
        data = _json(body)
        value = data.get("value")
        if not isinstance(value, str):
            raise VaultError(400, "BadParameter", "Property 'value' is required.")
        if len(value.encode()) > 25 * 1024:
            raise VaultError(400, "BadParameter", "The secret value is larger than 25 KB.")
        attributes = data.get("attributes") or {}
        tags = _tags(data.get("tags"))
        now = int(time.time())
        item = SecretVersion(
            version=secrets.token_hex(16),
            value=value,
            content_type=data.get("contentType"),
            enabled=bool(attributes.get("enabled", True)),
            created=now,
            updated=now,
            exp=attributes.get("exp"),
            nbf=attributes.get("nbf"),
            tags=tags,
        )
        try:
            stored, versions = vault.versions(name)
        except VaultError:
            stored, versions = name, []
            vault.secrets[name] = versions
        versions.append(item)
        self._save()
        return _bundle(base_url, stored, item, with_value=True)

    def _find(self, vault: Vault, name: str, version: str) -> tuple[str, SecretVersion]:
        stored, versions = vault.versions(name)
        if not version:
            return stored, versions[-1]
        for item in versions:
            if item.version == version:
                return stored, item
        raise VaultError(
            404, "SecretNotFound", f"A secret with (name/id) {name}/{version} was not found in this key vault."
        )

    def _get(self, vault: Vault, name: str, version: str, base_url: str) -> dict[str, Any]:
        stored, item = self._find(vault, name, version)
        if not item.enabled:
            raise VaultError(403, "Forbidden", "Operation get is not allowed on a disabled secret.")
        return _bundle(base_url, stored, item, with_value=True)

    def _update(self, vault: Vault, name: str, version: str, body: bytes, base_url: str) -> dict[str, Any]:
        stored, item = self._find(vault, name, version)
        data = _json(body)
        attributes = data.get("attributes") or {}
        if "enabled" in attributes and attributes["enabled"] is not None:
            item.enabled = bool(attributes["enabled"])
        for key in ("exp", "nbf"):
            if key in attributes and attributes[key] is not None:
                setattr(item, key, attributes[key])
        if data.get("contentType") is not None:
            item.content_type = data["contentType"]
        if data.get("tags") is not None:
            item.tags = _tags(data["tags"])
        item.updated = int(time.time())
        self._save()
        return _bundle(base_url, stored, item, with_value=False)

    def _list(self, vault: Vault, name: str | None, query: dict[str, str], base_url: str) -> dict[str, Any]:
        if name is None:
            items = [(stored, versions[-1]) for stored, versions in sorted(vault.secrets.items())]
        else:
            stored, versions = vault.versions(name)
            items = [(stored, v) for v in versions]
        try:
            size = min(int(query.get("maxresults") or MAX_PAGE), MAX_PAGE)
            skip = int(query.get("$skiptoken") or 0)
        except ValueError as exc:
            raise VaultError(400, "BadParameter", "maxresults and $skiptoken are integers.") from exc
        page = items[skip : skip + size]
        rows = []
        for stored, item in page:
            row = _bundle(base_url, stored, item, with_value=False)
            if name is None:
                row["id"] = f"{base_url}/secrets/{stored}"
            del row["kid"]
            rows.append(row)
        next_link = None
        if skip + size < len(items):
            path = "/secrets" if name is None else f"/secrets/{urllib.parse.quote(name)}/versions"
            rest = urllib.parse.urlencode(
                {"api-version": query["api-version"], "maxresults": size, "$skiptoken": skip + size}
            )
            next_link = f"{base_url}{path}?{rest}"
        return {"value": rows, "nextLink": next_link}


def _valid_name(name: str) -> bool:
    return 1 <= len(name) <= 127 and all(c.isascii() and (c.isalnum() or c == "-") for c in name)


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise VaultError(400, "BadParameter", "The request body is not JSON.") from exc
    if not isinstance(data, dict):
        raise VaultError(400, "BadParameter", "The request body must be a JSON object.")
    return data


def _tags(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > 15:
        raise VaultError(400, "BadParameter", "Tags are at most 15 name/value pairs.")
    for key, value in raw.items():
        if not isinstance(value, str) or len(key) > 512 or len(value) > 512:
            raise VaultError(400, "BadParameter", "A tag's name and value are strings of at most 512 characters.")
    return dict(raw)


def _bundle(base_url: str, name: str, item: SecretVersion, *, with_value: bool) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "enabled": item.enabled,
        "created": item.created,
        "updated": item.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    }
    if item.exp is not None:
        attributes["exp"] = item.exp
    if item.nbf is not None:
        attributes["nbf"] = item.nbf
    bundle: dict[str, Any] = {
        "id": f"{base_url}/secrets/{name}/{item.version}",
        "attributes": attributes,
        "tags": item.tags,
        "kid": None,
    }
    if item.content_type is not None:
        bundle["contentType"] = item.content_type
    if with_value:
        bundle["value"] = item.value
    return bundle


class VaultServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], keyvault: KeyVault, vault_name: str) -> None:
        self.keyvault = keyvault
        self.vault_name = vault_name
        self.context = keyvault.tls.server_context()
        super().__init__(address, VaultHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the connection's own thread, so a slow client holds up nobody.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            log.debug("TLS handshake with %s failed", client_address, exc_info=True)
            return
        super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)


class VaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: VaultServer
    server_version = "acr-emulator-keyvault"
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
        pass

    def _handle(self) -> None:
        started = time.monotonic()
        parsed = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        try:
            status, payload, headers = self.server.keyvault.handle(
                self.server.vault_name,
                self.command,
                parsed.path,
                query,
                {k.lower(): v for k, v in self.headers.items()},
                body,
                f"https://{host}",
            )
        except Exception:
            log.exception("unhandled error for %s %s", self.command, parsed.path)
            status, payload, headers = 500, {"error": {"code": "InternalError", "message": "Emulator error."}}, {}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", f"emulator-{time.monotonic_ns()}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(data)
        log.info(
            "vault %s: %s %s %d %.1fms",
            self.server.vault_name,
            self.command,
            parsed.path,
            status,
            (time.monotonic() - started) * 1000,
        )
