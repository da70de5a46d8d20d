"""What a bundle's ONNX file says about itself, readable from an ONNX Runtime session alone.

``session.get_modelmeta().custom_metadata_map`` of a shipped ``model.onnx`` holds:

| key | value |
|---|---|
| ``yoco.arch_id`` | the sub-BERT's architecture id |
| ``yoco.arch`` | its architecture (JSON) |
| ``yoco.labels`` | class names in class order (JSON list; empty for regression) |
| ``yoco.seq_len`` | the sequence length its latency was measured at |
| ``yoco.format`` | the deploy format (fp32, int8, fp16) |
| ``yoco.version`` | the yoco-deploy version that wrote it |
| ``yoco.manifest_sha256`` | the digest of the bundle's manifest.json (``manifest_digest``) |

The manifest records the file's own sha256, so the digest here covers the manifest
without that one field: each side names the other without a cycle. The digest is set
last, over a placeholder of its own length, so the file's size (and every budget checked
against it) is the same before and after.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

PREFIX = "yoco."
DIGEST_KEY = PREFIX + "manifest_sha256"
# the manifest's digest of the file cannot be part of the file's digest of the manifest
FILE_FIELDS = ("onnx_sha256",)
_PLACEHOLDER = "0" * 64  # a digest's length, so the file's size does not change when set


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, without the fields that describe the file."""
    body = {k: v for k, v in manifest.items() if k not in FILE_FIELDS}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def props_for(arch, labels: list[str], seq_len: int, fmt: str) -> dict[str, str]:
    """The metadata of a file about to be timed; the manifest digest is filled in at write
    time (``set_digest``) with a value of the same length, so the size measured now is the
    size shipped."""
    import yoco_deploy

    return {
        PREFIX + "arch_id": arch.arch_id,
        PREFIX + "arch": json.dumps(arch.to_dict(), separators=(",", ":")),
        PREFIX + "labels": json.dumps(list(labels)),
        PREFIX + "seq_len": str(seq_len),
        PREFIX + "format": fmt,
        PREFIX + "version": yoco_deploy.__version__,
        DIGEST_KEY: _PLACEHOLDER,
    }


def embed(path: Path, props: dict[str, str]) -> None:
    """Set ``props`` in the file's metadata (replacing keys of the same name), in place."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def set_digest(path: Path, manifest: dict[str, Any]) -> str:
    digest = manifest_digest(manifest)
    embed(path, {DIGEST_KEY: digest})
    return digest


def read(session_or_path) -> dict[str, str]:
    """yoco-deploy's metadata of an ONNX Runtime session (or an ONNX file), unprefixed."""
    meta = session_or_path
    if isinstance(session_or_path, str | Path):
        import onnxruntime as ort

        meta = ort.InferenceSession(str(session_or_path), providers=["CPUExecutionProvider"])
    custom = meta.get_modelmeta().custom_metadata_map
    return {k[len(PREFIX) :]: v for k, v in custom.items() if k.startswith(PREFIX)}
