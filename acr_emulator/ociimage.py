"""A tiny container image written as an OCI image layout, to push with skopeo where nothing can be downloaded.

python -m acr_emulator.ociimage DIR [TAG]   then   skopeo copy oci:DIR:TAG docker://HOST/REPO:TAG ...
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any


def write_oci_image(directory: str | Path, tag: str = "v1", content: bytes = b"hello from acr-emulator\n") -> str:
    """Write a tiny single-layer image as an OCI image layout at `directory` (for `skopeo copy oci:DIR:TAG ...`);
    returns its manifest digest. The layer is a gzipped tar holding one file, `hello.txt`, with `content`, so
    different contents make different images."""
    root = Path(directory)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes, media_type: str) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode, info.mtime = len(content), 0o644, 0
        tar.addfile(info, io.BytesIO(content))
    uncompressed = tar_bytes.getvalue()
    layer = blob(gzip.compress(uncompressed, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(uncompressed).hexdigest()}"]},
    }
    config_blob = blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_blob,
        "layers": [layer],
    }
    manifest_blob = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    index_path = root / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    )
    index["manifests"] = [
        m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
    ] + [{**manifest_blob, "annotations": {"org.opencontainers.image.ref.name": tag}}]
    index_path.write_text(json.dumps(index))
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return str(manifest_blob["digest"])


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m acr_emulator.ociimage DIR [TAG]")
    print(write_oci_image(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) == 3 else "v1"))
