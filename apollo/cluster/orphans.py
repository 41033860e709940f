"""The orphan sweeper: deletes shard files that nothing in the metadata refers to.

Orphans come from events the durable GC queue cannot see: a database restored
from a backup (shards written after it), a crash between a repair's write and
its commit, an old copy a repair could not delete because its drive was away.
A pass walks each drive through the ``StorageNode`` seam, so the same code sweeps
the all-in-one server's own drives and, on a cluster's lease holder, every drive
of the map over the storage nodes' listing routes (service tokens). A step takes
one page of one placement group and asks the metadata who refers to its
segments. A file is kept if its segment is committed with this drive at this
shard index, still being written (a pending GC row), or queued for GC on this
drive (the collector will get it); anything else older than ``orphan_min_age_s``
is deleted. The age guard covers writes that have created a file but not yet
committed (a repair writes its new shard before it commits the new layout); the
node measures it on its own clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from apollo import metrics
from apollo.cluster.passes import PeriodicPass
from apollo.errors import DriveError
from apollo.meta.service import MetaService
from apollo.proto.layout import ShardRef
from apollo.storage.node import StorageNode

log = logging.getLogger("apollo.orphans")
PAGE_SEGMENTS = 500  # segments per step: one listing page, one metadata query

DriveNodes = Callable[[], dict[str, StorageNode]]  # drive id -> the node serving it now


class OrphanSweeper(PeriodicPass):
    name = "orphans"

    def __init__(self, meta: MetaService, nodes: DriveNodes) -> None:
        """``nodes``: the node of each drive now, read at every step (``node.serving`` for the all-in-one
        server's own drives, ``lambda: directory.nodes`` in a cluster)."""
        super().__init__(meta, interval_s=24 * 3600.0)
        self.nodes = nodes
        self.min_age_s = 3600.0

    def tune(self, interval_s: float, min_age_s: float) -> None:
        self.interval_s = interval_s
        self.min_age_s = min_age_s

    async def begin(self) -> dict:
        # pg: the group being swept (-1 before the first); after: the segment cursor in it, None once it is done
        return {"drives": sorted(self.nodes()), "drive": 0, "pg": -1, "after": None, "files": 0, "orphans": 0,
                "bytes_freed": 0, "skipped": 0}  # fmt: skip

    def summary(self, current: dict) -> str:
        return (f"{current['drive']}/{len(current['drives'])} drives, {current['files']} shard files checked, "
                f"{current['orphans']} orphans deleted ({current['bytes_freed']} bytes), "
                f"{current.get('skipped', 0)} drives skipped")  # fmt: skip

    async def advance(self, current: dict) -> bool:
        """Sweep one page of one placement group of one drive."""
        if current["drive"] >= len(current["drives"]):
            return True
        drive_id = current["drives"][current["drive"]]
        node = self.nodes().get(drive_id)
        try:
            drive_done = node is None or await self._sweep_page(node, drive_id, current)
        except (OSError, DriveError) as exc:  # a node down, a drive failing: the next pass sweeps it
            log.warning("orphan sweep skips drive %s this pass: %s", drive_id, exc)
            current["skipped"] = current.get("skipped", 0) + 1
            drive_done = True
        if drive_done:
            current.update(drive=current["drive"] + 1, pg=-1, after=None)
        return False

    async def _sweep_page(self, node: StorageNode, drive_id: str, current: dict) -> bool:
        """True when the drive has no group left."""
        if current.get("after") is None:  # also a pass saved by a version without page cursors: redo the drive
            groups = await node.list_groups(drive_id, current.get("pg", -1), 1)
            if not groups:
                return True
            current.update(pg=groups[0], after="")
        pg = current["pg"]
        files = await node.list_shards(drive_id, pg, current["after"], PAGE_SEGMENTS)
        segments = sorted({f.segment_id for f in files})
        references = await self.meta.shard_references(segments)
        for file in files:
            if file.age_s < self.min_age_s or _referenced(references.get(file.segment_id, []), drive_id, file.index):
                continue
            if await node.delete(drive_id, ShardRef(pg, file.segment_id, file.index)):
                log.info("deleted orphan shard %d of segment %s on drive %s", file.index, file.segment_id, drive_id)
                metrics.orphan_shards_deleted.inc()
                current["orphans"] += 1
                current["bytes_freed"] += file.size
        current["files"] += len(files)
        current["after"] = segments[-1] if len(segments) == PAGE_SEGMENTS else None
        return False


def _referenced(references: list[tuple[str, tuple[str, ...]]], drive_id: str, index: int) -> bool:
    for kind, drives in references:
        if kind == "pending":  # being written: its shards may be anywhere until it commits or is collected
            return True
        if index < len(drives) and drives[index] == drive_id:  # committed here, or GC will delete it here
            return True
    return False
