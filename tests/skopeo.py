"""skopeo, driven from tests: copy a tiny OCI image to and from a registry over plain HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from acr_emulator.testing import write_oci_image

DENIED = "requested access to the resource is denied"


@dataclass
class Result:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def denied(self) -> bool:
        """Refused by the registry or its token server (not some other failure)."""
        text = self.output.lower()
        return not self.ok and (DENIED in text or "unauthorized" in text or "authentication required" in text)


class Skopeo:
    """One skopeo with a policy file of its own (accept anything) and a tiny image in an OCI layout."""

    def __init__(self, workdir: Path, login_server: str) -> None:
        self.workdir = workdir
        self.login_server = login_server
        self.binary = shutil.which("skopeo") or "skopeo"
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.image = workdir / "image"
        self.digest = write_oci_image(self.image, "v1")

    def _run(self, *args: str) -> Result:
        done = subprocess.run(
            [self.binary, "--policy", str(self.policy), *args],
            capture_output=True,
            text=True,
            timeout=60,
            # Keep skopeo from reading or writing any auth file of the machine's user.
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.workdir), "XDG_RUNTIME_DIR": str(self.workdir)},
        )
        return Result(done.returncode, done.stdout + done.stderr)

    def push(self, repository: str, username: str, password: str, tag: str = "v1") -> Result:
        return self._run(
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            f"{username}:{password}",
            f"oci:{self.image}:v1",
            f"docker://{self.login_server}/{repository}:{tag}",
        )

    def pull(self, repository: str, username: str, password: str, tag: str = "v1") -> Result:
        target = self.workdir / f"pulled-{repository.replace('/', '_')}"
        return self._run(
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            f"{username}:{password}",
            f"docker://{self.login_server}/{repository}:{tag}",
            f"oci:{target}:{tag}",
        )

    def delete(self, repository: str, username: str, password: str, tag: str = "v1") -> Result:
        return self._run(
            "delete",
            "--tls-verify=false",
            "--creds",
            f"{username}:{password}",
            f"docker://{self.login_server}/{repository}:{tag}",
        )
