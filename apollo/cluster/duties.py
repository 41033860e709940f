"""What the holder of the manager lease does, in the all-in-one server and in a cluster alike.

Exactly one process per deployment holds the manager lease (``apollo.cluster.lease``): an
``apollo server`` process (``apollo.cluster.manager``) or an ``apollo meta`` process
(``apollo.roles.meta``). While it does, it runs the duties: the repair worker, the drive
jobs, the periodic passes the deployment has (scrub, rebalance, orphan sweep), whatever
else the deployment adds (garbage collection, key rotation, ...), a reread of the knobs
``apollo admin tune`` sets, and a report of what repair is doing for ``apollo admin
status`` and /metrics. They start when the lease is taken and are cancelled when it is
lost, so a holder that dies or stalls hands all of it to the next one. When it takes the role, and
whenever the live failure domains change, it says in the log whether they are fewer than the
scheme's width (``placement.domain_shortfall``: the same words as the drain refusal).

Call sequence: ``add_pass`` / ``add`` while assembling; then ``claim`` (optional: one
attempt before serving), ``keep`` as a task for the process's life, ``stop`` at shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from typing import Any, Protocol

from apollo import metrics
from apollo.client.context import ClientContext
from apollo.cluster.gc import GarbageCollector
from apollo.cluster.lease import LeaseKeeper
from apollo.cluster.lifecycle import DriveLifecycle
from apollo.cluster.orphans import OrphanSweeper
from apollo.cluster.passes import PeriodicPass
from apollo.cluster.rebalance import Rebalancer
from apollo.cluster.repair import DriveView, RepairWorker
from apollo.cluster.scrub import Scrubber
from apollo.cluster.tuning import SETTING_PREFIX, Tuning
from apollo.eventloop import every
from apollo.proto.cluster_map import DriveRecord
from apollo.proto.layout import Scheme
from apollo.proto.placement import domain_shortfall
from apollo.storage.node import StorageNode

log = logging.getLogger("apollo.manager")
RETUNE_S = 2.0  # `apollo admin tune` takes effect within this
STATUS_S = 2.0
STATUS_SETTING = "status.repair"
SCHEME_SETTING = "scheme"  # the all-in-one server's durability scheme, recorded at start for the spread checks
CLUSTER_SCHEME_DEFAULT = "4+2"  # what gateways and native clients write unless told otherwise

Duty = Callable[[], Coroutine[None, None, None]]  # runs until cancelled; started afresh each time the role is taken

# The one place the Tuning fields meet the periodic passes, by pass name (each pass's ``tune`` differs).
_PASS_KNOBS: dict[str, Callable[[Any, Tuning], None]] = {
    "scrub": lambda scrub, knobs: scrub.tune(knobs.scrub_bytes_per_s, knobs.scrub_mode, knobs.scrub_interval_s),
    "rebalance": lambda rebalance, knobs: rebalance.tune(knobs.rebalance_interval_s, knobs.rebalance_tolerance),
    "orphans": lambda orphans, knobs: orphans.tune(knobs.orphan_interval_s, knobs.orphan_min_age_s),
}


class ManagedDrives(Protocol):
    """The drive states the holder acts on: the all-in-one probe's ``DriveMonitor`` or a cluster's ``ClusterDrives``."""

    lifecycle: DriveLifecycle
    records: dict[str, DriveRecord]
    domain_unit: str  # what a failure domain is, for people: "drives" on one server, else "failure domains"

    def view(self) -> DriveView: ...


class ManagerDuties:
    def __init__(
        self, ctx: ClientContext, drives: ManagedDrives, holder: str, lease_ttl_s: float,
        on_change: Callable[[bool], None] = lambda held: None,
    ) -> None:  # fmt: skip
        """``holder``: this process's name for the lease; ``on_change(held)``: told when the role starts and ends."""
        self.meta = ctx.meta
        self.drives = drives
        self.lease = LeaseKeeper(ctx.meta, holder, lease_ttl_s)
        self.lifecycle = drives.lifecycle
        self.repair = RepairWorker(ctx, drives.view)
        self.lifecycle.repairs_writing = lambda: self.repair.writing
        self.passes: list[PeriodicPass] = []
        self.tuning = Tuning()
        self.held = False
        self._on_change = on_change
        self._duties: list[Duty] = [
            self.repair.run_forever,
            partial(self.lifecycle.jobs_forever, lambda: drives.records),  # records are replaced every probe
            partial(every, RETUNE_S, self.retune, "retune"),
            partial(every, STATUS_S, self.publish_status, "repair status", at_once=True),
        ]
        self._tasks: list[asyncio.Task] = []
        self._last_status = (time.monotonic(), 0)
        # The domain check's findings: the last one seen, and the last one logged ("": none since taking the role).
        self._seen: str | None = ""
        self._shortfall: str | None = ""

    def add(self, duty: Duty) -> None:
        self._duties.append(duty)

    def add_healing(self, ctx: ClientContext, serving: Callable[[], Mapping[str, StorageNode]],
                    upload_expiry_s: float) -> None:  # fmt: skip
        """What every deployment's holder runs over the drives ``serving()`` maps to their nodes (this server's
        own, or a cluster's storage nodes): scrub, rebalance, the orphan sweep and the garbage collector."""
        self.add_pass(Scrubber(ctx, lambda: set(serving())))
        self.add_pass(Rebalancer(ctx.meta, self.drives.view, lambda: self.repair.paused))
        self.add_pass(OrphanSweeper(ctx.meta, serving))
        self.add(GarbageCollector(ctx.meta, serving, upload_expiry_s).run_forever)

    def add_pass(self, background_pass: PeriodicPass) -> None:
        """Run the pass while holding the role, tuned from ``Tuning`` and retuned before each pass starts.

        :raises ValueError: no knobs are known for a pass of that name (it would run untuned).
        """
        if background_pass.name not in _PASS_KNOBS:
            raise ValueError(f"no tuning knobs are known for the {background_pass.name!r} pass")
        background_pass.retune = self.retune
        self.passes.append(background_pass)
        self._duties.append(background_pass.run_forever)

    async def claim(self) -> None:
        """One attempt at the lease now: the first process up manages from its first request on."""
        if await self.lease.renew():
            await self._take()

    async def keep(self) -> None:
        """Renew the lease for as long as the process lives, running the duties while it is ours."""
        await self.lease.keep(self._take, self._drop)

    async def stop(self) -> None:
        """Stop the duties and hand the lease on at once rather than after its expiry."""
        await self._drop()
        await self.lease.release()

    async def _take(self) -> None:
        if self.held:  # ``claim`` took it; the first round of ``keep`` reports the same gain
            return
        self.held = True
        self._seen = self._shortfall = ""
        self._on_change(True)
        metrics.manager_lease_held.set(1)
        await self.retune()  # the repair worker starts unlimited until tuned
        self._last_status = (time.monotonic(), self.repair.repaired_bytes)
        if self.held:  # not dropped while the knobs were read
            self._tasks = [asyncio.create_task(duty()) for duty in self._duties]

    async def _drop(self) -> None:
        self.held = False
        self._on_change(False)
        metrics.manager_lease_held.set(0)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def retune(self) -> None:
        """Reread the ``tuning.*`` settings and hand every knob to the part it paces."""
        try:
            tuning = Tuning.load(await self.meta.settings_like(SETTING_PREFIX))
        except ValueError as exc:
            log.error("ignoring bad tuning setting: %s", exc)
            return
        if tuning != self.tuning:
            log.info("tuning: %s", tuning)
        self.tuning = tuning
        self.lifecycle.offline_grace_s = tuning.drive_offline_grace_s
        self.repair.tune(tuning.repair_bytes_per_s, tuning.repair_ops_per_s, tuning.repair_parallel,
                         bool(tuning.repair_paused))  # fmt: skip
        for background_pass in self.passes:
            _PASS_KNOBS[background_pass.name](background_pass, tuning)

    async def publish_status(self) -> None:
        """Repair's backlog and pace and the segments at risk, for ``apollo admin status`` (a setting) and
        /metrics; and the check of the live failure domains against the scheme."""
        backlog = await self.meta.repair_backlog()
        degraded = await self.meta.degraded_groups()
        at_risk, measured = self.at_risk() or (None, None)
        metrics.repair_backlog.set(backlog)
        metrics.degraded_groups.set(degraded)
        metrics.segments_at_risk.set(at_risk or 0)
        now, done = time.monotonic(), self.repair.repaired_bytes
        since, before = self._last_status
        self._last_status = (now, done)
        status = {"updated": time.time(), "backlog": backlog, "degraded_groups": degraded,
                  "bytes_per_s": (done - before) / max(1e-6, now - since), "bytes_total": done,
                  "at_risk": at_risk, "at_risk_measured": measured}  # fmt: skip
        await self.meta.set_setting(STATUS_SETTING, json.dumps(status))
        await self.check_domains()

    def at_risk(self) -> tuple[int, float] | None:
        """Segments at risk and when they were counted: the rebalancer's last measurement, which walks
        every segment anyway (a count per status call would be a scan of the whole namespace)."""
        counts = [p.at_risk() for p in self.passes if isinstance(p, Rebalancer)]
        return next((c for c in counts if c is not None), None)

    async def check_domains(self) -> None:
        """Log, on taking the role and whenever it changes, whether the live failure domains are fewer than
        the scheme's width (the same rule as the drain refusal and docs/deploy.md "Sizing").

        A finding is logged once two checks in a row agree, so nodes joining one by one at a cluster's
        start, or a map caught mid-change, do not log every step on the way."""
        view = self.drives.view()
        if not view.candidates:  # nothing known yet: before the first probe or heartbeats
            return
        scheme = Scheme.parse(await self.meta.get_setting(SCHEME_SETTING) or CLUSTER_SCHEME_DEFAULT)
        sizes = Counter(c.domain for c in view.candidates).values()
        shortfall = domain_shortfall(scheme.width, scheme.m, sizes, self.drives.domain_unit)
        seen, self._seen = self._seen, shortfall
        if shortfall != seen or shortfall == self._shortfall:
            return
        if shortfall is not None:
            log.warning("%s segments: %s", scheme, shortfall)
        elif self._shortfall:
            log.info("%s segments: %d live %s, one shard of a segment in each: any %d may fail", scheme, len(sizes),
                     self.drives.domain_unit, scheme.m)  # fmt: skip
        self._shortfall = shortfall
