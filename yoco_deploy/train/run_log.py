"""The run's log, output_dir/log.jsonl: one JSON row per train or eval record, echoed as
a line for people; trimmed back to a checkpoint's step on resume."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


class RunLog:
    def __init__(self, path: Path, total_steps: int, metric: str, say: Callable[[str], None]):
        self.path = path
        self.total_steps = total_steps
        self.metric = metric
        self.say = say

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if row["kind"] == "train":
            self.say(
                f"step {row['step']}/{self.total_steps} [{row['phase']}] "
                f"loss {row['loss']:.4f} lr {row['lr']:.2e} ETA {row['eta_s'] / 60:.1f} min"
            )
        else:
            metric = self.metric if self.metric in row else "accuracy"
            self.say(f"eval [{row['phase']}] {row['name']}: {metric} {row.get(metric, 0):.4f}")

    def trim(self, step: int) -> None:
        """Drop rows written after the checkpoint: the resumed run writes them again."""
        from yoco_deploy.util.atomic import write_text

        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        if len(kept) < len(lines):
            write_text(self.path, "".join(line + "\n" for line in kept))


def train_rows(out: Path) -> list[dict[str, Any]]:
    """A run's train rows that carry their training seconds (``train_s``), in order."""
    log = Path(out) / "log.jsonl"
    if not log.is_file():
        return []
    rows = (json.loads(line) for line in log.read_text().splitlines())
    return [r for r in rows if r.get("kind") == "train" and "train_s" in r]
