"""What the client library needs to reach metadata and drives."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from apollo.errors import DriveError
from apollo.meta.service import MetaService
from apollo.proto.placement import Placement
from apollo.storage.node import StorageNode

log = logging.getLogger("apollo.client")


@dataclass
class Damage:
    segment_id: str
    shard_index: int
    drive_id: str
    reason: str


@dataclass
class ClientContext:
    meta: MetaService
    nodes: dict[str, StorageNode]  # drive id -> node serving it
    cpu: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, thread_name_prefix="codec"))
    on_damage: list = field(default_factory=list)  # callbacks(Damage), e.g. metrics
    on_decode: list = field(default_factory=list)  # callbacks(stripes decoded from parity), e.g. metrics

    @property
    def placement(self) -> Placement:
        """Where new shards may go: the metadata service's view (in process) or the cluster map's (remote)."""
        return self.meta.placement

    def node(self, drive_id: str) -> StorageNode:
        node = self.nodes.get(drive_id)
        if node is None:
            raise DriveError(f"no storage node serves drive {drive_id}")
        return node

    async def cpu_run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.cpu, fn, *args)

    def decoded(self, stripes: int) -> None:
        for callback in self.on_decode:
            callback(stripes)

    async def report(self, damage: Damage) -> None:
        """Log a bad or missing shard and queue it for repair; reads carry on from parity."""
        log.warning(
            "damaged shard segment=%s shard=%d drive=%s: %s",
            damage.segment_id, damage.shard_index, damage.drive_id, damage.reason,
        )  # fmt: skip
        for callback in self.on_damage:
            callback(damage)
        try:
            await self.meta.report_damage(damage.segment_id, damage.shard_index, damage.drive_id, damage.reason,
                                          time.time())  # fmt: skip
        except Exception:  # the read itself must not fail because the queue is unavailable
            log.exception("could not queue repair for segment %s", damage.segment_id)
