"""A real CNCF Distribution registry (`docker-registry serve`, Distribution 2.8) beside the emulator.

It stores images under a var directory, sends clients to the emulator's token server for a JWT (`auth.token`),
trusts the emulator's certificate (`rootcertbundle`), and posts its notifications to the emulator's events
endpoint. Start and stop it as a subprocess:

    with Distribution(var_dir, port=5000, emulator_url="http://127.0.0.1:8765",
                      certificate_pem=server.signing_key.certificate_pem) as registry:
        registry.address  # "127.0.0.1:5000": the login server clients use
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from acr_emulator.tokenserver import ISSUER

log = logging.getLogger("acr_emulator.distribution")

BINARIES = ("docker-registry", "registry")  # Debian's package name, then upstream's


def find_binary() -> str | None:
    """The Distribution binary on PATH (or /usr/bin), None when the package is not installed."""
    for name in BINARIES:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")
        if found:
            return found
    return None


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the process that started us dies, so a test run or
    emulator killed outright leaves no registry behind. (Linux ties this to the starting *thread*: start the registry
    from a thread that lives as long as it should.)"""
    import ctypes

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class DistributionError(RuntimeError):
    pass


class Distribution:
    """One `docker-registry serve` process and the config it was given."""

    def __init__(
        self,
        var_dir: str | os.PathLike[str],
        *,
        emulator_url: str,
        certificate_pem: bytes,
        port: int = 0,
        host: str = "127.0.0.1",
        binary: str | None = None,
        service: str | None = None,
    ) -> None:
        self.var_dir = Path(var_dir)
        self.host = host
        self.port = port or free_port(host)
        self.emulator_url = emulator_url.rstrip("/")
        self.certificate_pem = certificate_pem
        self.binary = binary or find_binary()
        # The service (JWT audience) is the login server, as on ACR.
        self.service = service or self.address
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def config_path(self) -> Path:
        return self.var_dir / "config.yml"

    @property
    def log_path(self) -> Path:
        return self.var_dir / "registry.log"

    def config(self) -> dict[str, Any]:
        return {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.var_dir / "storage")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.address,
                "secret": secrets.token_urlsafe(24),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "auth": {
                "token": {
                    "realm": f"{self.emulator_url}/oauth2/token",
                    "service": self.service,
                    "issuer": ISSUER,
                    "rootcertbundle": str(self.var_dir / "token-signing.crt"),
                }
            },
            "notifications": {
                "endpoints": [
                    {
                        "name": "acr-emulator",
                        "url": f"{self.emulator_url}/_emulator/registry/notifications",
                        "timeout": "2s",
                        "threshold": 5,
                        "backoff": "1s",
                        # Layers and configs; ACR's repository table has a row per artifact, not per blob.
                        "ignoredmediatypes": ["application/octet-stream"],
                    }
                ]
            },
            "health": {"storagedriver": {"enabled": False}},
        }

    def write_config(self) -> Path:
        """The config file (JSON, which is YAML too) and the certificate it points at."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        (self.var_dir / "token-signing.crt").write_bytes(self.certificate_pem)
        self.config_path.write_text(json.dumps(self.config(), indent=1), encoding="utf-8")
        return self.config_path

    def start(self, timeout: float = 30.0) -> None:
        if self.binary is None:
            raise DistributionError(f"none of {', '.join(BINARIES)} is installed (Debian package docker-registry)")
        self.write_config()
        log_file = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [self.binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # The starter's process group: whatever stops that group (the demo, a terminal) stops it too.
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        finally:
            log_file.close()
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None:
                raise DistributionError(f"{self.binary} exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise DistributionError(f"{self.url} did not answer within {timeout:.0f}s: {self.log_tail()}")
            time.sleep(0.05)
        log.info("Distribution registry serving %s (pid %d)", self.url, self.process.pid)

    def answers(self) -> bool:
        """Any HTTP answer from /v2/ (401 without a token) means it is up."""
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> Distribution:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
