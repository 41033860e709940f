"""CPU time and memory of a process and its descendants, read from /proc (Linux)."""

from __future__ import annotations

import os
import threading

from apollo.testing import leftovers

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return text[text.rindex(")") + 2 :].split()


def tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    return [pid, *leftovers.descendants(pid)]


def cpu_seconds(pids: list[int], reaped: bool = False) -> float:
    """user+sys CPU seconds consumed so far by ``pids`` (all their threads); ``reaped``: and by their children
    that ended and were waited for (a PostgreSQL backend's time moves to the postmaster's when it exits)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:  # utime, stime (fields 14 and 15 of stat), then cutime, cstime
            total += sum(int(f) for f in fields[11:15 if reaped else 13])
    return total / CLOCK_TICKS


def read_chars(pids: list[int]) -> int:
    """Bytes ``pids`` have read by system calls so far (``rchar`` of /proc/<pid>/io: page cache hits included)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("rchar:"))
        except (OSError, StopIteration):
            pass
    return total


def status_kib(pid: int, name: str) -> int:
    """A ``kB`` line of /proc/<pid>/status (VmRSS, VmHWM), 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples the summed VmRSS of a process tree in a thread; ``peak_bytes`` is the largest sample."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = sum(status_kib(p, "VmRSS") for p in tree(self.pid)) * 1024
            self.peak_bytes = max(self.peak_bytes, rss)
            self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
