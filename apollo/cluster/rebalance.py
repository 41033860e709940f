"""The rebalancer: moves healthy shards from fuller drives to emptier ones, a bounded batch at a time.

New writes already spread over every online drive (placement ranks all of them),
but data written before a drive was added, or rebuilt while one was missing,
stays where it is. A rebalance pass first measures how many shard bytes every
online drive holds (one walk over the segments table), gives every drive a
target share by weight, then walks the segments again and plans moves from
drives above their band to the drive furthest below its own, never two shards
of a segment on one drive nor on one failure domain. Moves go to the repair
queue (reason ``rebalance``, with the planned target) and the repair worker
copies them at its paced rate; at most ``MOVES_QUEUED_MAX`` wait at a time,
like Ceph's backfill reservations, so foreground traffic and real repairs are
never starved. A pass runs when the set of online drives changes, on request
(``apollo admin rebalance --now``) and every ``rebalance_interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from apollo.cluster.passes import PeriodicPass
from apollo.cluster.repair import DriveView
from apollo.meta.service import MetaService
from apollo.storage.geometry import ShardGeometry
from apollo.types import SegmentLayout

log = logging.getLogger("apollo.rebalance")
PAGE_SEGMENTS = 512
MOVES_QUEUED_MAX = 256
FOOTER_BYTES_TYPICAL = 100
WALKS_MAX = 4
REPAIR_WAIT_MAX_S = 600.0


def shard_bytes(layout: SegmentLayout) -> int:
    """Bytes one shard file of the segment takes: header and cell records (the footer is a few dozen)."""
    return ShardGeometry(layout).records_end + FOOTER_BYTES_TYPICAL


class Rebalancer(PeriodicPass):
    name = "rebalance"

    def __init__(self, meta: MetaService, drives: Callable[[], DriveView]) -> None:
        super().__init__(meta, interval_s=6 * 3600.0)
        self.drives = drives
        self.tolerance = 0.05  # each drive's share may be off its target by half this, either way

    def tune(self, interval_s: float, tolerance: float) -> None:
        self.interval_s = interval_s
        self.tolerance = tolerance

    async def begin(self) -> dict:
        return {"phase": "measure", "cursor_pg": -1, "cursor_segment": "", "usage": {}, "segments": 0, "moves": 0,
                "spread": 0.0}  # fmt: skip

    def summary(self, current: dict) -> str:
        return (f"{current['phase']}: {current['segments']} segments measured, {current['moves']} moves planned, "
                f"spread {100 * current['spread']:.1f}%")  # fmt: skip

    async def advance(self, current: dict) -> bool:
        if current["phase"] == "measure":
            if current["segments"] == 0 and await self._busy(current):
                await asyncio.sleep(1.0)
                return False
            return await self._measure(current)
        view = self.drives()
        online = {c.drive_id: c for c in view.candidates}
        usage = {d: current["usage"].get(d, 0) for d in online}
        targets = self._targets(usage, online)
        current["spread"] = self._spread(usage, targets)
        if current["spread"] <= self.tolerance:
            return True
        if await self.meta.queued_moves() >= MOVES_QUEUED_MAX:  # let the repair worker catch up
            await asyncio.sleep(1.0)
            return False
        page = await self.meta.segments_after(current["cursor_pg"], current["cursor_segment"], PAGE_SEGMENTS)
        if not page:  # one move per segment per walk: walk again while walks still help
            current["walks"] = current.get("walks", 0) + 1
            if current["moves"] == current.get("moves_before_walk", 0) or current["walks"] >= WALKS_MAX:
                return True
            current.update(cursor_pg=-1, cursor_segment="", moves_before_walk=current["moves"])
            return False
        moves = []
        for layout in page:
            moves += self._plan(layout, usage, targets, online, view.writable)
        if moves:
            await self.meta.queue_moves(moves, time.time())
        current["usage"].update(usage)
        current["moves"] += len(moves)
        current["cursor_pg"], current["cursor_segment"] = page[-1].pg, page[-1].segment_id
        return False

    async def _busy(self, current: dict) -> bool:
        """Wait before measuring: for the previous pass's moves (measure what they left, not what they
        will), and for repairs, which go first (at most ``REPAIR_WAIT_MAX_S``: one stuck repair must
        not stop rebalancing for good)."""
        moves = await self.meta.queued_moves()
        if moves:
            return True
        waiting = time.time() - current["started"] < REPAIR_WAIT_MAX_S
        return waiting and await self.meta.repair_backlog() > 0

    async def _measure(self, current: dict) -> bool:
        page = await self.meta.segments_after(current["cursor_pg"], current["cursor_segment"], PAGE_SEGMENTS)
        usage = current["usage"]
        for layout in page:
            for drive in layout.drives:
                usage[drive] = usage.get(drive, 0) + shard_bytes(layout)
        current["segments"] += len(page)
        if page:
            current["cursor_pg"], current["cursor_segment"] = page[-1].pg, page[-1].segment_id
        else:
            current.update(phase="move", cursor_pg=-1, cursor_segment="")
        return False

    @staticmethod
    def _targets(usage: dict[str, int], online: dict) -> dict[str, float]:
        weight = sum(online[d].weight for d in usage) or 1.0
        total = sum(usage.values())
        return {d: total * online[d].weight / weight for d in usage}

    @staticmethod
    def _spread(usage: dict[str, int], targets: dict[str, float]) -> float:
        """Largest distance of a drive from its target, as a fraction of the mean target."""
        mean = sum(targets.values()) / max(1, len(targets))
        return max((abs(usage[d] - targets[d]) for d in usage), default=0.0) / mean if mean else 0.0

    def _plan(self, layout: SegmentLayout, usage: dict, targets: dict, online: dict, writable: set) -> list:
        """At most one move for this segment: from its fullest drive to the emptiest allowed one, when
        either is outside its band and the move brings both closer to their targets."""
        size = shard_bytes(layout)
        band = self.tolerance / 2
        held = [(usage[d] - targets[d], i, d) for i, d in enumerate(layout.drives) if d in usage]
        if not held:
            return []
        surplus, index, source = max(held)
        domains = {online[d].domain for d in layout.drives if d in online and d != source}
        choices = [(targets[d] - usage[d], d) for d in usage
                   if d in writable and d not in layout.drives
                   and (online[d].domain not in domains or online[d].domain == online[source].domain)]  # fmt: skip
        if not choices:
            return []
        deficit, target = max(choices)
        outside = usage[source] > targets[source] * (1 + band) or usage[target] < targets[target] * (1 - band)
        if not outside or deficit < size / 2 or surplus < size / 2:
            return []  # balanced enough, or the move would overshoot: shard sizes set the floor
        usage[source] -= size
        usage[target] += size
        return [(layout.segment_id, index, source, target)]
