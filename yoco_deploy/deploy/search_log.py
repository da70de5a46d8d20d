"""The append-only, checksummed JSONL log of a search's evaluations: read back to resume,
appended to, locked while written, and repaired when lines are damaged."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

from yoco_deploy.deploy.search_types import SearchError

# (arch_id, split) -> (metric, loss): what a rerun replays instead of evaluating again.
Cache = dict[tuple[str, str], tuple[float, float]]


class SearchLog:
    """The log at ``path`` (none: nothing is read or written). ``write=False`` reads it
    but leaves writing and locking to the one process that owns it."""

    def __init__(self, path: Path | None, write: bool = True):
        self.path = Path(path) if path else None
        self.write = write

    def read(self) -> Cache:
        if not self.path or not self.path.exists():
            return {}
        from yoco_deploy.device.runner import parse_row

        cache = {}
        for number, line in enumerate(self.path.read_bytes().split(b"\n"), 1):
            if not line.strip():
                continue
            row, why = parse_row(line)
            try:
                if row is None:
                    raise ValueError(why)
                loss = row.get("loss")
                cache[(row["arch_id"], row["split"])] = (
                    float(row["fitness"]),
                    math.nan if loss is None else float(loss),
                )
            except (ValueError, KeyError, TypeError) as err:
                reason = why or f"is not a search row ({type(err).__name__}: {err})"
                raise SearchError(
                    f"{self.path}: line {number} {reason}; nothing was changed. Rerun "
                    "with --repair to set such lines aside (every intact evaluation is "
                    "kept, and a backup), or move the log away to start afresh"
                ) from None
        return cache

    def append(self, row: dict[str, Any]) -> None:
        if self.path is None or not self.write:
            return
        from yoco_deploy.device.runner import sealed_line

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write per row on an O_APPEND descriptor: a crash leaves whole rows, or one
        # torn last line that the checksum names.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, sealed_line(row))
        finally:
            os.close(fd)

    def lock(self):
        """The log's lock, held by the process that writes it (one search per log)."""
        if self.path is None or not self.write:
            return contextlib.nullcontext()
        from yoco_deploy.util.lock import exclusive

        lock = self.path.with_name(self.path.name + ".lock")
        return exclusive(lock, f"search log {self.path}")

    @staticmethod
    def repair(path: Path) -> int:
        """Set unreadable or edited lines of a search log aside (every intact evaluation
        and a backup are kept); returns how many."""
        from yoco_deploy.device.runner import repair_rows

        def valid(row: dict) -> bool:
            return {"arch_id", "split", "fitness"} <= set(row)

        return repair_rows(path, valid)
