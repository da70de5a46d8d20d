"""Up-to-date checks for pipeline stages: each records, in WORKDIR/.stages/, a hash of its
inputs (its settings and the content hashes of the outputs it reads) and the content
hashes of the outputs it wrote; a stage whose record still matches is skipped."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoco_deploy.util.hashing import update_with_file


def content_hash(path: Path) -> str:
    """Content hash of a file, or of a directory's files (names and bytes)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if "checkpoint" in f.parts or f.suffix == ".png":
            continue  # resumable state and drawings are not outputs
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        update_with_file(h, f)
    return h.hexdigest()


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Stage:
    key: str
    inputs: dict[str, Any]  # settings and upstream output hashes
    outputs: list[Path]
    run: Callable[[], None]


class StageBook:
    def __init__(self, workdir: Path):
        self.dir = Path(workdir) / ".stages"

    def _file(self, key: str) -> Path:
        return self.dir / f"{key.replace('/', '_').replace(':', '_')}.json"

    def status(self, stage: Stage) -> str:
        record = self._file(stage.key)
        if not record.exists():
            return "never run"
        saved = json.loads(record.read_text())
        if saved["inputs"] != _digest(stage.inputs):
            return "inputs changed"
        for out, digest in saved["outputs"].items():
            if not Path(out).exists() or content_hash(Path(out)) != digest:
                return f"output {Path(out).name} missing or changed"
        return "up to date"

    def record(self, stage: Stage) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        outputs = {str(p): content_hash(p) for p in stage.outputs}
        self._file(stage.key).write_text(
            json.dumps({"inputs": _digest(stage.inputs), "outputs": outputs}, indent=1)
        )


def output_hash(path: Path) -> str | None:
    return content_hash(path) if Path(path).exists() else None
