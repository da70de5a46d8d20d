"""Checksummed JSON lines, appended whole or not at all: the measurements file and the
search logs are made of them, so a hand edit or a torn write is found and named."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from yoco_deploy.runtime.errors import RunnerError

# Each row carries a checksum of its own content, so a hand edit (a changed median, a
# changed fitness) is found and named instead of silently changing a result. A row
# without one is refused like an edited row: deleting the checksum must not be a way
# around it (every file written since checksums exist has them on every row).
CHECKSUM_KEY = "sum"

# Why a row cannot be used, or None: the content check a log's reader applies to each
# intact row (profile_store adds the fields a predictor needs).
RowCheck = Callable[[dict], str | None]


def row_sum(row: dict) -> str:
    body = {k: v for k, v in row.items() if k != CHECKSUM_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def sealed_line(row: dict) -> bytes:
    """One JSON line holding the row and its checksum."""
    return (json.dumps({**row, CHECKSUM_KEY: row_sum(row)}, sort_keys=True) + "\n").encode()


def parse_row(line: bytes) -> tuple[dict | None, str | None]:
    """(row without its checksum, None), or (None, why it cannot be trusted)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None, "is not valid JSON"
    if not isinstance(row, dict):
        return None, "is not a row"
    stored = row.pop(CHECKSUM_KEY, None)
    if stored is None:
        return None, "has no checksum (edited by hand, or not written by yoco-deploy)"
    if stored != row_sum(row):
        return None, "was edited after it was written (checksum mismatch)"
    return row, None


def checked_rows(data: bytes, check: RowCheck):
    """(line number, line, row or None, why it is unusable or None) for each non-blank
    line; a last line without its newline is named as cut off."""
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row, why = parse_row(line)
        if row is None and number == len(lines) and not data.endswith(b"\n"):
            why = "is cut off (an interrupted write?)"
        elif row is not None:
            why = check(row)
        yield number, line, (row if why is None else None), why


def set_aside(path: Path, check: RowCheck) -> list[str]:
    """Keep every intact row that ``check`` accepts; move the others to
    ``<file>.rejected``, keep a backup of the file as it was, and return what was moved
    ("line N why" each)."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    good, bad, dropped = [], [], []
    for number, line, row, why in checked_rows(data, check):
        if row is not None:
            good.append(line)
        else:
            bad.append(line)
            dropped.append(f"line {number} {why}")
    if bad:
        backup = path.with_name(path.name + f".bak-{int(time.time())}")
        backup.write_bytes(data)
        with open(path.with_name(path.name + ".rejected"), "ab") as f:
            f.write(b"\n".join(bad) + b"\n")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(line + b"\n" for line in good))
        os.replace(tmp, path)
    return dropped


def repair_note(path: Path, dropped: list[str]) -> str:
    """One line saying what --repair set aside, and where it went."""
    if not dropped:
        return f"{path}: every row is intact, nothing set aside"
    shown = "; ".join(dropped[:5]) + (f"; and {len(dropped) - 5} more" if len(dropped) > 5 else "")
    rows = "1 row" if len(dropped) == 1 else f"{len(dropped)} rows"
    return (
        f"{path}: set {rows} aside ({shown}) into {Path(path).name}.rejected; the file as "
        "it was is kept as a .bak"
    )


def append_line(path: Path, line: bytes) -> None:
    """Append one whole line or nothing: a short write is continued, and a failed one (a
    full disk) cuts the file back to its length before, so no torn row is left behind."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            done = 0
            while done < len(line):
                n = os.write(fd, line[done:])
                if n <= 0:
                    raise OSError(5, "the disk accepted no more bytes")
                done += n
            os.fsync(fd)
        except OSError as err:
            raise RunnerError(_append_failed(fd, size, path, err)) from None
    finally:
        os.close(fd)


def _append_failed(fd: int, size: int, path: Path, err: OSError) -> str:
    try:
        os.ftruncate(fd, size)
        left = "the file is as it was before this row"
    except OSError:
        left = "a torn last row may remain: rerun with --repair to set it aside"
    return (
        f"cannot append a row to {path}: {err.strerror or err}; {left}. Free disk space "
        "(or fix the disk) and run the same command again: it resumes"
    )
