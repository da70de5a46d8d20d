"""The append-only measurements file a profile's timings go to: one sealed row per
model or reference timing, never rewritten."""

from __future__ import annotations

from pathlib import Path

from yoco_deploy.runtime.errors import RunnerError
from yoco_deploy.runtime.sealed import RowCheck, append_line, checked_rows, sealed_line, set_aside

MEASUREMENTS_SCHEMA = 1
ROW_KINDS = ("model", "reference")


def measurement_problem(row: dict) -> str | None:
    """What every reader of a measurements file needs of a row: its kind and its key."""
    if row.get("kind") not in ROW_KINDS:
        return f"is not a measurement (kind {row.get('kind')!r}, not model or reference)"
    if not isinstance(row.get("key"), str):
        return "has no key"
    return None


class MeasurementLog:
    """JSON lines, appended and fsynced one row at a time; never rewritten. With
    ``repair``, unusable rows are set aside first (``set_aside`` lists them)."""

    def __init__(self, path: Path, repair: bool = False, check: RowCheck = measurement_problem):
        self.path = Path(path)
        self.check = check
        self.set_aside = set_aside(self.path, check) if repair else []
        self.rows = self._read()

    def _read(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        for number, _, row, why in checked_rows(self.path.read_bytes(), self.check):
            if row is None:
                raise RunnerError(
                    f"{self.path}: line {number} {why}; nothing was changed. Run the command "
                    "again with --repair to set such lines aside (every intact row is kept, "
                    "and a backup), or move the file away"
                )
            rows.append(row)
        return rows

    @staticmethod
    def repair(path: Path) -> int:
        """Move unreadable, edited or unsummed lines to ``<file>.rejected``; keep a
        backup; return the count. Every intact row stays."""
        return len(set_aside(path, measurement_problem))

    def append(self, row: dict) -> None:
        append_line(self.path, sealed_line(row))  # one write per row: whole rows only
        self.rows.append(row)

    def latest(self, kind: str = "model") -> dict[str, dict]:
        """The last row per job key: re-measurements supersede earlier rows."""
        out = {}
        for row in self.rows:
            if row["kind"] == kind:
                out[row["key"]] = row
        return out
