"""The append-only, checksummed JSONL log of a search's evaluations: read back to resume,
appended to, locked while written, and repaired when lines are damaged.

Its first row (kind ``inputs``) records what the logged scores were produced with: the
search space and what the caller adds (``DeployJob``: the super-BERT's weights and the
search data). A log whose recorded inputs differ from this run's, or that records none,
is never replayed: its scores belong to something else. The latency predictor is not an
input: a score is an arch's metric, which no predictor changes, so a refit reuses them."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yoco_deploy.deploy.search_types import SearchError

# (arch_id, split) -> (metric, loss): what a rerun replays instead of evaluating again.
Cache = dict[tuple[str, str], tuple[float, float]]

INPUTS = "inputs"  # the kind of a log's first row
# how a refusal names each recorded input, in the order they are compared
_DIFFERS = {
    "super_bert": "with another super-BERT (weights {old}, now {new})",
    "data": "on other search data (examples {old}, now {new})",
    "space": "over another search space ({old}, now {new})",
}
_FIX = "Delete it, or pass --fresh to set it aside and start a new log"


def log_inputs(space, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a search's logged scores depend on (besides each arch): the space (which layers
    the weights come from) and ``given`` (the weights, the data)."""
    inputs = {"space": space.to_dict(), **(given or {})}
    return json.loads(json.dumps(inputs))  # as read back: lists, not tuples


def provenance(space, predictor, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """What chose a bundle's sub-BERT, as its manifest records it: the scores' inputs (as a
    log records them), the space's sha256, and the predictor that ranked by latency."""
    from yoco_deploy.util.hashing import json_sha256

    return {
        **(inputs or {}),
        "space": json_sha256(space.to_dict()),
        "predictor": predictor and {
            "sha256": predictor.to_dict()["sha256"],
            "device": predictor.device.get("name"),
        },
    }  # fmt: skip


class SearchLog:
    """The log at ``path`` (none: nothing is read or written). ``write=False`` reads it
    but leaves writing and locking to the one process that owns it. ``inputs``: what this
    run's scores depend on (None: not recorded, not checked); ``fresh``: ignore an
    existing log, which the writer sets aside (``start``)."""

    def __init__(
        self,
        path: Path | None,
        write: bool = True,
        inputs: dict[str, Any] | None = None,
        fresh: bool = False,
    ):
        self.path = Path(path) if path else None
        self.write = write
        self.inputs = inputs
        self.fresh = fresh
        self.replaced: Path | None = None  # where ``start`` moved an existing log

    def read(self) -> Cache:
        if not self.path or self.fresh or not self.path.exists():
            return {}
        from yoco_deploy.runtime import checked_rows

        cache, recorded = {}, None
        for number, _, row, why in checked_rows(self.path.read_bytes(), _row_problem):
            if row is None:
                raise SearchError(
                    f"{self.path}: line {number} {why}; nothing was changed. Rerun "
                    "with --repair to set such lines aside (every intact evaluation is "
                    "kept, and a backup), or move the log away to start afresh"
                )
            if row.get("kind") == INPUTS:
                if cache or recorded is not None:
                    raise SearchError(
                        f"{self.path}: line {number} records a second run's inputs (two logs "
                        f"joined?); nothing was changed. {_FIX}"
                    )
                recorded = row
                continue
            loss = row.get("loss")
            cache[(row["arch_id"], row["split"])] = (
                float(row["fitness"]),
                math.nan if loss is None else float(loss),
            )
        self._check_inputs(recorded, bool(cache))
        return cache

    def _check_inputs(self, recorded: dict[str, Any] | None, scored: bool) -> None:
        if self.inputs is None or not (scored or recorded):
            return
        if recorded is None:
            raise SearchError(
                f"{self.path} records no inputs (written before logs recorded them), so its "
                f"scores cannot be tied to this super-BERT; nothing was changed. {_FIX}"
            )
        for key in [*_DIFFERS, *sorted(set(self.inputs) - set(_DIFFERS))]:
            old, new = recorded.get(key), self.inputs.get(key)
            if old != new:
                how = _DIFFERS.get(key, f"with another {key} ({{old}}, now {{new}})")
                if key == "space":
                    old, new = _space_change(old, new)
                else:
                    old, new = _short(old), _short(new)
                raise SearchError(
                    f"{self.path} was made {how.format(old=old, new=new)}: its scores are "
                    f"not this run's; nothing was changed. {_FIX}"
                )

    def start(self) -> None:
        """Under the lock, before the first evaluation: with ``fresh``, move an existing
        log aside (``replaced``); a log without rows begins with this run's inputs."""
        if self.path is None or not self.write:
            return
        if self.fresh and self.path.exists():
            self.replaced = _aside(self.path)
            os.replace(self.path, self.replaced)
        empty = not self.path.exists() or not self.path.read_bytes().strip()
        if self.inputs is not None and empty:
            self.append({"kind": INPUTS, **self.inputs, "t": time.time()})

    def append(self, row: dict[str, Any]) -> None:
        if self.path is None or not self.write:
            return
        from yoco_deploy.runtime import RunnerError, append_line, sealed_line

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            append_line(self.path, sealed_line(row))  # a whole row or nothing
        except RunnerError as err:
            raise SearchError(str(err)) from None

    def lock(self):
        """The log's lock, held by the process that writes it (one search per log)."""
        if self.path is None or not self.write:
            return contextlib.nullcontext()
        from yoco_deploy.util.lock import exclusive

        lock = self.path.with_name(self.path.name + ".lock")
        return exclusive(lock, f"search log {self.path}")

    @staticmethod
    def set_aside(path: Path) -> list[str]:
        """Set unreadable, edited or unsummed lines of a search log aside (every intact
        evaluation and a backup are kept); what was set aside."""
        from yoco_deploy.runtime import set_aside

        return set_aside(path, _row_problem)

    @staticmethod
    def repair(path: Path) -> int:
        """``set_aside``, counted."""
        return len(SearchLog.set_aside(path))


def _row_problem(row: dict[str, Any]) -> str | None:
    if row.get("kind") == INPUTS:
        return None
    try:
        float(row["fitness"])
        loss = row.get("loss")
        if loss is not None:
            float(loss)
        if not (isinstance(row["arch_id"], str) and isinstance(row["split"], str)):
            raise TypeError("arch_id and split must be text")
    except (ValueError, KeyError, TypeError) as err:
        return f"is not a search row ({type(err).__name__}: {err})"
    return None


def _short(value: Any) -> str:
    return f"{value[:12]}..." if isinstance(value, str) else "none recorded"


def _space_change(old: Any, new: Any) -> tuple[str, str]:
    """The first field of two spaces that differs, as two short texts."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return str(old), str(new)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key} {old.get(key)}", str(new.get(key))
    return "?", "?"


def _aside(path: Path) -> Path:
    """A free name beside ``path`` for the log it replaces."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    return aside
