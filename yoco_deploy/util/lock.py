"""One writer per folder: profiles, search logs and pipeline workdirs.

Two commands on one profile folder would measure every sub-BERT twice on shared cores
and interleave their rows; two searches on one log would log every evaluation twice.
The lock is an OS advisory lock (``flock``) on a small file that also names its holder:
the OS releases it when the holder exits, however it exits (kill -9 included), so a lock
is never stale on a local disk. The file itself may stay behind; it is harmless.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from yoco_deploy.errors import YocoError


class LockHeld(YocoError):
    """Another process is writing to the same folder."""


@contextmanager
def exclusive(lock_file: Path, what: str) -> Iterator[None]:
    """Hold ``lock_file`` for the duration; if another process holds it, fail at once with
    its pid, host, start time and command."""
    import fcntl

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LockHeld(f"{what} is in use: {_holder(lock_file)}") from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv[:6]),
        }
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(lock_file: Path) -> str:
    try:
        h = json.loads(lock_file.read_text() or "{}")
    except (OSError, ValueError):
        h = {}
    if not h:
        return f"another process holds {lock_file}; wait for it to finish"
    return (
        f"pid {h.get('pid')} on {h.get('host')} since {h.get('started')} "
        f"({h.get('command')}); wait for it to finish, or stop that process (the lock "
        f"is released when it exits; on a network disk that lost it, remove {lock_file})"
    )
