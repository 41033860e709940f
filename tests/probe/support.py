"""What the damage tests share: metrics, shard files, waiting, the metadata database, drive states.

Seeded objects and their byte-exact checks are ``apollo.testing.workload.Workload``; ``apollo admin`` is
``apollo.testing.admin``.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from apollo.testing.admin import admin


def metric(server, name: str) -> float:
    text = urllib.request.urlopen(f"{server.endpoint}/metrics").read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


def shards_by_segment(server) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in server.shard_files():
        groups[path.name.rsplit(".", 1)[0]].append(path)
    return groups


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> float:
    """Poll until ``condition()`` is truthy; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def pause_repair(server) -> None:
    """Stop the repair worker (damage then stays put for inspection) and wait until the server applied it."""
    admin("repair", "--pause", meta_dir=server.meta_dir)
    wait_until(lambda: "repair_paused=1" in server.log_path.read_text(), 10, "the server to pause repair")


def query(server, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of one statement on the server's metadata database, read-only: one consistent snapshot while the
    server keeps writing (ask for several counts with subqueries in one statement to see them together)."""
    with closing(sqlite3.connect(f"file:{server.meta_dir / 'apollo.db'}?mode=ro", uri=True)) as db:
        return db.execute(sql, args).fetchall()


def wipe(drive: Path) -> None:
    """``rm -rf`` a drive directory while the server may still be writing into it (as a dying disk's
    directory would be): retry until it is gone, since a file created mid-delete makes rmtree fail."""
    for _ in range(50):
        shutil.rmtree(drive, ignore_errors=True)
        if not drive.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"could not wipe {drive}")


def drive_state(server, drive: Path) -> str:
    """State of the newest drive registered at a path (a replacement shares its predecessor's path)."""
    rows = query(server, "SELECT state FROM drives WHERE path = ? ORDER BY added DESC LIMIT 1", (str(drive.resolve()),))
    return rows[0][0] if rows else ""
