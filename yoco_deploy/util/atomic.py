"""Artifacts appear complete or not at all: built under a temporary name beside their
final place, then renamed into it. A failure (a full disk, a crash, Ctrl-C) leaves the
previous good one where it was and no half-written one under a valid-looking name."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A fresh folder to fill; on success it replaces ``final`` (renames, same
    filesystem), on any error it is removed and ``final`` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = final.with_name(f".{final.name}.staging-{os.getpid()}")
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if final.exists():
        final.rename(old)  # kept until the new one is in place
    stage.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: Path, text: str) -> Path:
    """Write a file under a temporary name, flush it to disk, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        discard(tmp)
        raise
    return path


def check_writable(folder: Path, error: type[Exception]) -> Path:
    """Fail now if ``folder`` could not be created or written, without creating it (a
    mistake elsewhere must not leave an empty folder behind)."""
    folder = Path(folder)
    for existing in (folder, *folder.parents):
        if existing.exists():
            break
    if not existing.is_dir():
        raise error(f"cannot write to {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise error(f"cannot write to {folder}: {existing} is not writable")
    return folder


def check_output(
    option: str,
    out: Path,
    inputs: Iterable[Path | str | None],
    error: type[Exception],
    replaced: Iterable[Path] = (),
) -> None:
    """Fail now if ``out`` is one of the command's ``inputs``, or if a file or folder it
    writes whole (``replaced``) is one or holds one: ``fit --out`` once wrote a predictor
    over the measurements it was fitted from."""
    replaced = [Path(p) for p in replaced]
    for source in (Path(p) for p in inputs if p is not None and _exists(Path(p))):
        held = any(source.resolve().is_relative_to(p.resolve()) for p in replaced)
        if held or any(_same(p, source) for p in (Path(out), *replaced)):
            raise error(
                f"{option} {out} would write over {source}, an input of this command: "
                "write the output somewhere else"
            )


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for a path (inline JSON) names no file
        return False


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve() or (_exists(a) and os.path.samefile(a, b))


def discard(path: Path) -> None:
    """Remove a temporary file while another error is being raised: a cleanup that fails
    (the folder turned read-only) must not replace the error the user needs to see."""
    with suppress(OSError):
        Path(path).unlink(missing_ok=True)
