"""The orphan sweeper: deletes shard files that nothing in the metadata refers to.

Orphans come from events the durable GC queue cannot see: a database restored
from a backup (shards written after it), a crash between a repair's write and
its commit, an old copy a repair could not delete because its drive was away.
A pass walks each drive's placement-group directories one at a time and asks
the metadata, per batch, who refers to each file's segment. A file is kept if
its segment is committed with this drive at this shard index, still being
written (a pending GC row), or queued for GC on this drive (the collector will
get it); anything else older than ``orphan_min_age_s`` is deleted. The age
guard covers writes that have created a file but not yet committed (a repair
writes its new shard before it commits the new layout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from apollo import metrics
from apollo.cluster.passes import PeriodicPass
from apollo.meta.service import MetaService
from apollo.storage.node import LocalStorageNode

log = logging.getLogger("apollo.orphans")


def _list_groups(shards_dir: Path, after: str) -> list[str]:
    return sorted(d.name for d in shards_dir.iterdir() if d.is_dir() and d.name > after)


def _list_shards(group_dir: Path) -> list[tuple[str, int, float, int]]:
    """(segment id, shard index, mtime, size) of every shard file in a group directory."""
    out = []
    for entry in group_dir.iterdir():
        segment_id, dot, index = entry.name.rpartition(".")
        if not dot or not index.isdigit():
            continue
        try:
            stat = entry.stat()
        except FileNotFoundError:  # deleted meanwhile (GC, repair)
            continue
        out.append((segment_id, int(index), stat.st_mtime, stat.st_size))
    return out


def _delete(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


class OrphanSweeper(PeriodicPass):
    name = "orphans"

    def __init__(self, meta: MetaService, node: LocalStorageNode) -> None:
        super().__init__(meta, interval_s=24 * 3600.0)
        self.node = node
        self.min_age_s = 3600.0

    def tune(self, interval_s: float, min_age_s: float) -> None:
        self.interval_s = interval_s
        self.min_age_s = min_age_s

    async def begin(self) -> dict:
        return {"drives": sorted(self.node.drives), "drive": 0, "group": "", "files": 0, "orphans": 0,
                "bytes_freed": 0}  # fmt: skip

    def summary(self, current: dict) -> str:
        return (f"{current['drive']}/{len(current['drives'])} drives, {current['files']} shard files checked, "
                f"{current['orphans']} orphans deleted ({current['bytes_freed']} bytes)")  # fmt: skip

    async def advance(self, current: dict) -> bool:
        """Sweep one placement-group directory of one drive."""
        if current["drive"] >= len(current["drives"]):
            return True
        drive_id = current["drives"][current["drive"]]
        drive = self.node.drives.get(drive_id)
        groups = await asyncio.to_thread(_list_groups, drive.shards_dir, current["group"]) if drive else []
        if not groups:
            current["drive"] += 1
            current["group"] = ""
            return False
        group_dir = drive.shards_dir / groups[0]
        files = await asyncio.to_thread(_list_shards, group_dir)
        references = await self.meta.shard_references(sorted({f[0] for f in files}))
        cutoff = time.time() - self.min_age_s
        for segment_id, index, mtime, size in files:
            if mtime > cutoff or _referenced(references.get(segment_id, []), drive_id, index):
                continue
            if await asyncio.to_thread(_delete, group_dir / f"{segment_id}.{index}"):
                log.info("deleted orphan shard %d of segment %s on drive %s", index, segment_id, drive_id)
                metrics.orphan_shards_deleted.inc()
                current["orphans"] += 1
                current["bytes_freed"] += size
        current["files"] += len(files)
        current["group"] = groups[0]
        return False


def _referenced(references: list[tuple[str, tuple[str, ...]]], drive_id: str, index: int) -> bool:
    for kind, drives in references:
        if kind == "pending":  # being written: its shards may be anywhere until it commits or is collected
            return True
        if index < len(drives) and drives[index] == drive_id:  # committed here, or GC will delete it here
            return True
    return False
