"""What a killed test run leaves: server processes started from a temp directory, and the directory.

A harness that starts servers from a temp directory of its own (``TempPostgres``, ``TempPatroniCluster``)
writes its process id there (``claim``). The next harness of the kind to start on the machine removes what
an owner that died left (``reap``): every process whose command line names the directory, with their
descendants, then the directory. Without it, a CI run killed in the middle of a test leaves PostgreSQL,
Patroni and etcd running, holding ports and memory, until the machine restarts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

OWNER_FILE = "owner.pid"


def claim(root: Path) -> None:
    """Mark ``root`` as this process's: it removes the directory itself when done."""
    (root / OWNER_FILE).write_text(str(os.getpid()))


def reap(prefix: str) -> list[Path]:
    """Remove every temp directory named ``prefix...`` whose owner died, and its processes; returns them.
    A directory with no owner recorded (being made, or an older harness's) is left alone."""
    reaped = []
    for root in Path(tempfile.gettempdir()).glob(prefix + "*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if alive(owner):
            continue
        kill(naming(root))
        shutil.rmtree(root, ignore_errors=True)
        reaped.append(root)
    return reaped


def naming(root: Path) -> list[int]:
    """The processes whose command line names ``root``, and their descendants (a postmaster's backends name
    nothing)."""
    pids = []
    for pid in all_pids():
        if str(root) in cmdline(pid):
            pids += [pid, *descendants(pid)]
    return list(dict.fromkeys(pids))


def kill(pids: list[int], timeout: float = 10.0) -> None:
    """SIGKILL each, then wait until none runs."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_gone(pids, timeout)


def wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie has done dying: its parent reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """Children, grandchildren... of ``pid`` (from /proc: pgrep -P one level at a time)."""
    parents: dict[int, list[int]] = {}
    for child in all_pids():
        try:
            ppid = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(child)
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found
