"""Background work of one all-in-one server process: drive probes everywhere; the manager's duties on one.

Every server process runs the drive probe (it decides where that process may
place new shards). Exactly one process per deployment is the *manager*: the one
holding the manager lease, which runs the duties of ``apollo.cluster.duties``
(repair, drive jobs, scrub, orphan sweep, rebalance, and what ``apollo.roles.server``
adds: garbage collection and checkpoints) and turns what the probes find into
drive state changes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from apollo import limits
from apollo.client.context import ClientContext
from apollo.cluster.drives import DriveMonitor
from apollo.cluster.duties import ManagerDuties
from apollo.proto.cluster_map import NODE_NAME
from apollo.storage.node import LocalStorageNode

log = logging.getLogger("apollo.manager")


class BackgroundManager:
    def __init__(
        self, ctx: ClientContext, node: LocalStorageNode, deployment_id: str, *, holder: str, lease_ttl_s: float,
        reserve_bytes: int, upload_expiry_s: float,
    ) -> None:  # fmt: skip
        """``holder``: this process's name for the lease, stable across its restarts (see ``Server``)."""
        # Whether each probe also keeps this server alive in the cluster map (node ``local``), where native
        # clients find its drives.
        self.heartbeat = False
        self.drives = DriveMonitor(ctx, node, deployment_id, manager=False, reserve_bytes=reserve_bytes)
        self.duties = ManagerDuties(ctx, self.drives, holder, lease_ttl_s, on_change=self._set_manager)
        self.duties.add_healing(ctx, node.serving, upload_expiry_s)

    async def start(self) -> list[asyncio.Task]:
        """The lease and a first probe before the server accepts requests, then the loops."""
        await self.duties.claim()
        await self.drives.probe()
        return [asyncio.create_task(loop) for loop in (self._probe_loop(), self.duties.keep())]

    async def stop(self) -> None:
        await self.duties.stop()

    def _set_manager(self, held: bool) -> None:
        """Only the lease holder's probes change drive states."""
        self.drives.manager = held

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(limits.drive_probe_interval_s)
            try:
                await self.drives.probe()
                if self.heartbeat:
                    await self.drives.meta.node_heartbeat(NODE_NAME, self.drives.reports, time.time())
                if self.duties.held:
                    await self.drives.lifecycle.rebalance_on_change(self.drives.records)
            except Exception:
                log.exception("drive probe failed")
