"""A cluster's drives as the manager sees them: storage nodes' heartbeats turned into drive states.

The storage nodes probe their own drives and report (health, free space) with every
heartbeat; a node that stops heartbeating makes all its drives ``unreachable``. Those
reports go through the same ``DriveLifecycle`` as the all-in-one server's probes: an
unreachable drive goes offline at once and fails after ``drive_offline_grace_s``, a
gone one fails at once, and a failed drive's shards are queued for the repair worker.

Silence counts only once the manager has been listening for a node's whole heartbeat timeout: a metadata
database outage (a failover) stops every heartbeat at once, and the manager that takes the lease after it
(or whose steps failed during it) would otherwise find every node silent and take every drive offline,
failing writes until the next beats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from apollo import limits, metrics
from apollo.cluster.lifecycle import DriveLifecycle
from apollo.cluster.repair import DriveView
from apollo.proto.cluster_map import SERVING_STATES, ClusterMap, DriveRecord, DriveState

log = logging.getLogger("apollo.drives")
STEP_S = 2.0


class ClusterDrives:
    domain_unit = "failure domains"  # racks when labelled, else nodes

    def __init__(self, meta, cluster_map: Callable[[], Awaitable[ClusterMap]]) -> None:
        self.meta = meta
        self.cluster_map = cluster_map
        self.lifecycle = DriveLifecycle(meta)
        self.map = ClusterMap(epoch=-1)
        self.records: dict[str, DriveRecord] = {}
        self._writable: set[str] = set()
        self._listening_since = time.monotonic()  # since this manager last could not read the heartbeats

    def view(self) -> DriveView:
        """What the repair worker and the rebalancer need: states, writable drives, replacements, placement
        candidates and every drive's failure domain (its rack when racks are labelled, else its node)."""
        domains = self.map.domains()
        # The map is the service's answer of a moment ago; the records are this process's, and its own state
        # changes land in them at once. A drive this process just failed may still be online in the map: a
        # repair would then choose it as the target for its own lost shards, fail to open it, and back off.
        online = {d for d, r in self.records.items() if r.state == "online"}
        return DriveView(
            states={d: r.state for d, r in self.records.items()},
            writable=self.map.writable() & online,
            replaced_by={d: r.replaced_by for d, r in self.records.items() if r.replaced_by},
            candidates=[c for c in self.map.candidates() if c.drive_id in online],
            domain_of={d: domains.get(r.node, r.node) for d, r in self.records.items()},
        )

    async def step(self) -> None:
        self.map = await self.cluster_map()  # judged with the outages of the database allowed for (MetaRpc)
        self.records = {r.drive_id: r for r in await self.meta.list_drives()}
        nodes = {n.name: n.alive for n in self.map.nodes}
        heard_long_enough = time.monotonic() - self._listening_since >= limits.node_dead_after_s
        health = {
            drive_id: record.health if nodes[record.node] else "silent"
            for drive_id, record in self.records.items()
            if record.node in nodes and record.state in SERVING_STATES and (nodes[record.node] or heard_long_enough)
        }
        writable = self.map.writable()
        gained, self._writable = bool(writable - self._writable), writable
        await self.lifecycle.apply(self.records, health, gained)
        await self.lifecycle.rebalance_on_change(self.records)
        for state in DriveState:
            metrics.drives_by_state.labels(state).set(sum(r.state == state for r in self.records.values()))

    async def run_forever(self) -> None:
        """The manager's loop (started each time this process takes the lease)."""
        self._listening_since = time.monotonic()
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("cluster drive step failed")
                self._listening_since = time.monotonic()
            await asyncio.sleep(STEP_S)
