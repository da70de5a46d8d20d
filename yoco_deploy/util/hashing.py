"""SHA-256 of files, streamed (bundles' ONNX files, the pipeline's stage outputs), and of
JSON values in a canonical form."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def update_with_file(h, path: Path) -> None:
    """Feed a file's bytes to ``h`` in 1 MiB blocks (ONNX files reach hundreds of MB)."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    update_with_file(h, Path(path))
    return h.hexdigest()


def json_sha256(value) -> str:
    """sha256 of a JSON value, independent of key order and spacing."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
