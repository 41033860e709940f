"""One owner per metadata directory: an exclusive ``flock`` on ``<meta-dir>/apollo.lock``.

SQLite keeps concurrent writers correct, but two servers on one metadata directory
would each clear the other's temp files and hand its pending writes to GC at start-up,
and a restore under a running server would swap the database beneath it. So the
server (or the supervisor of ``--workers``) holds this lock for its lifetime, and
``restore-metadata`` holds it while it swaps the database. The kernel drops the lock
when the holder dies, even by kill -9, so a crash never leaves a stale lock behind.
Admin commands that only read or add rows (keys, backups) do not take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "apollo.lock"


class MetaDirInUse(RuntimeError):
    """Another process holds the metadata directory."""


class MetaDirLock:
    """Held from construction until ``release()`` or process exit; the file records the holder's pid."""

    def __init__(self, meta_dir: Path, purpose: str) -> None:
        meta_dir.mkdir(parents=True, exist_ok=True)
        path = meta_dir / LOCK_FILE
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            raise MetaDirInUse(f"metadata directory {meta_dir} is in use by {holder}; stop it first") from None
        with contextlib.suppress(OSError):  # who holds it is only for messages: a full disk must not stop a start
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{purpose} (pid {os.getpid()})\n".encode(), 0)

    def release(self) -> None:
        os.close(self._fd)  # closing the only descriptor drops the flock
