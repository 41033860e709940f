"""Background managers of one server: drive probes everywhere; repair, scrub, drive jobs on the manager.

Every server process runs the drive probe (it decides where that process may
place new shards). Exactly one process per deployment is the *manager*: the one
holding the manager lease in the database (``apollo.cluster.lease``), so that a
manager that dies hands the role to another process. The manager changes drive
states, walks failed and draining drives, repairs, scrubs, rebalances, sweeps
orphan shards, collects garbage, publishes what it is doing for
``apollo admin status``; those loops start when the lease is taken and are
cancelled when it is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine

from apollo import metrics
from apollo.client.context import ClientContext
from apollo.cluster.drives import DriveMonitor
from apollo.cluster.lease import LeaseKeeper
from apollo.cluster.orphans import OrphanSweeper
from apollo.cluster.rebalance import Rebalancer
from apollo.cluster.repair import RepairWorker
from apollo.cluster.scrub import Scrubber
from apollo.cluster.tuning import SETTING_PREFIX, Tuning
from apollo.storage.node import LocalStorageNode

log = logging.getLogger("apollo.manager")
PROBE_INTERVAL_S = 2.0
STATUS_SETTING = "status.repair"


Duty = Callable[[], Coroutine[None, None, None]]  # a manager loop: runs until cancelled


class BackgroundManager:
    def __init__(
        self, ctx: ClientContext, node: LocalStorageNode, deployment_id: str, *, holder: str, lease_ttl_s: float,
        reserve_bytes: int,
    ) -> None:  # fmt: skip
        """``holder``: this process's name for the lease, stable across its restarts (see ``Server``)."""
        self.ctx = ctx
        self.meta = ctx.meta
        self.lease = LeaseKeeper(ctx.meta, holder, lease_ttl_s)
        self.drives = DriveMonitor(ctx, node, deployment_id, manager=False, reserve_bytes=reserve_bytes)
        self.repair = RepairWorker(ctx, self.drives.view)
        self.scrub = Scrubber(ctx, lambda: set(node.drives))
        self.orphans = OrphanSweeper(ctx.meta, node)
        self.rebalance = Rebalancer(ctx.meta, self.drives.view)
        self.duties: list[Duty] = [self.repair.run_forever, self.scrub.run_forever, self.orphans.run_forever,
                                   self.rebalance.run_forever,
                                   lambda: self.drives.lifecycle.jobs_forever(lambda: self.drives.records)]  # fmt: skip
        self._duty_tasks: list[asyncio.Task] = []
        self.tuning = Tuning()
        for background_pass in (self.scrub, self.orphans, self.rebalance):
            background_pass.retune = self.retune
        self._last_status = (time.monotonic(), 0)

    @property
    def is_manager(self) -> bool:
        return self.drives.manager

    async def start(self) -> list[asyncio.Task]:
        """Tuning, the lease and a first probe before the server accepts requests, then the loops."""
        await self.retune()
        if await self.lease.renew():
            await self._take_role()
        await self.drives.probe()
        loops = [self._probe_loop(), self.lease.keep(self._take_role, self._drop_role)]
        return [asyncio.create_task(loop) for loop in loops]

    async def stop(self) -> None:
        await self._drop_role()
        await self.lease.release()

    async def _take_role(self) -> None:
        if self.drives.manager:
            return
        self.drives.manager = True
        metrics.manager_lease_held.set(1)
        self._duty_tasks = [asyncio.create_task(duty()) for duty in self.duties]

    async def _drop_role(self) -> None:
        self.drives.manager = False
        metrics.manager_lease_held.set(0)
        tasks, self._duty_tasks = self._duty_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def retune(self) -> None:
        settings = await self.meta.settings_like(SETTING_PREFIX)
        try:
            tuning = Tuning.load(settings)
        except ValueError as exc:
            log.error("ignoring bad tuning setting: %s", exc)
            return
        if tuning != self.tuning:
            log.info("tuning: %s", tuning)
        self.tuning = tuning
        self.drives.lifecycle.offline_grace_s = tuning.drive_offline_grace_s
        self.repair.tune(
            tuning.repair_bytes_per_s, tuning.repair_ops_per_s, tuning.repair_parallel, bool(tuning.repair_paused)
        )
        self.scrub.tune(tuning.scrub_bytes_per_s, tuning.scrub_mode, tuning.scrub_interval_s)
        self.orphans.tune(tuning.orphan_interval_s, tuning.orphan_min_age_s)
        self.rebalance.tune(tuning.rebalance_interval_s, tuning.rebalance_tolerance)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            try:
                await self.retune()
                await self.drives.probe()
                if self.is_manager:
                    await self._publish_status()
                    await self.drives.lifecycle.rebalance_on_change(self.drives.records)
            except Exception:
                log.exception("drive probe failed")

    async def _publish_status(self) -> None:
        backlog = await self.meta.repair_backlog()
        degraded = await self.meta.degraded_groups()
        metrics.repair_backlog.set(backlog)
        metrics.degraded_groups.set(degraded)
        now, done = time.monotonic(), self.repair.repaired_bytes
        since, before = self._last_status
        rate = (done - before) / max(1e-6, now - since)
        self._last_status = (now, done)
        status = {"updated": time.time(), "backlog": backlog, "degraded_groups": degraded,
                  "bytes_per_s": rate, "bytes_total": done}  # fmt: skip
        await self.meta.set_setting(STATUS_SETTING, json.dumps(status))
