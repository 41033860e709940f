"""The rebalancer: moves healthy shards off crowded failure domains, and from fuller drives to emptier ones.

New writes already spread over every online drive (placement ranks all of them),
but data written before a drive was added, or rebuilt while one was missing,
stays where it is. A rebalance pass first measures how many shard bytes every
online drive holds (one walk over the segments table), gives every drive a
target share by weight, and counts the segments *at risk*: those with more
shards in one failure domain than the live domains force (``placement.FailureDomains``),
so that losing that domain costs more than it has to. Then it walks the segments
again and plans moves: first, for every segment at risk, off its crowded domain;
then, while usage is outside its band, one move per segment per walk from a
drive above its band to the drive furthest below its own. Every target keeps
the segment's spread legal, never two shards of a segment on one drive. Moves go
to the repair queue (reason ``rebalance``, with the planned target) and the
repair worker copies them at its paced rate; at most ``MOVES_QUEUED_MAX`` wait at
a time, like Ceph's backfill reservations, so foreground traffic and real repairs
are never starved. A pass that planned fixes asks for the next pass at once,
which measures again once they are done: the count of segments at risk
(``apollo admin status``, ``apollo_segments_at_risk``) is the last measurement's.

A pass runs when the set of online drives changes, on request (``apollo admin
rebalance --now``) and every ``rebalance_interval_s``. While a drive is offline
within its grace it waits, without ending: the drive may come back with every
shard, and moving shards around it would cost the copying the grace exists to
avoid. When the drive is back or declared failed, the pass measures afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from apollo.cluster.passes import PeriodicPass
from apollo.cluster.repair import DriveView
from apollo.meta.service import MetaService
from apollo.proto.layout import SegmentLayout
from apollo.proto.placement import Candidate, FailureDomains
from apollo.storage.geometry import ShardGeometry

log = logging.getLogger("apollo.rebalance")
PAGE_SEGMENTS = 512
MOVES_QUEUED_MAX = 256
FOOTER_BYTES_TYPICAL = 100
WALKS_MAX = 4
REPAIR_WAIT_MAX_S = 600.0
OFFLINE_POLL_S = 1.0

Move = tuple[str, int, str, str]  # (segment, shard index, from drive, to drive)


def shard_bytes(layout: SegmentLayout) -> int:
    """Bytes one shard file of the segment takes: header and cell records (the footer is a few dozen)."""
    return ShardGeometry(layout).records_end + FOOTER_BYTES_TYPICAL


class Rebalancer(PeriodicPass):
    name = "rebalance"

    def __init__(self, meta: MetaService, drives: Callable[[], DriveView],
                 repair_paused: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        super().__init__(meta, interval_s=6 * 3600.0)
        self.drives = drives
        self.repair_paused = repair_paused
        self.tolerance = 0.05  # each drive's share may be off its target by half this, either way

    def tune(self, interval_s: float, tolerance: float) -> None:
        self.interval_s = interval_s
        self.tolerance = tolerance

    async def begin(self) -> dict:
        return {"phase": "measure", "cursor_pg": -1, "cursor_segment": "", "usage": {}, "segments": 0, "moves": 0,
                "spread": 0.0, "at_risk": 0, "fixes": 0}  # fmt: skip

    def summary(self, current: dict) -> str:
        return (f"{current['phase']}: {current['segments']} segments measured, {current.get('at_risk', 0)} at risk, "
                f"{current['moves']} moves planned ({current.get('fixes', 0)} of them off crowded domains), "
                f"spread {100 * current['spread']:.1f}%")  # fmt: skip

    def at_risk(self) -> tuple[int, float] | None:
        """(segments at risk, when measured) as of the last finished measurement; None before the first."""
        current, last = self.state.get("current") or {}, self.state.get("last") or {}
        for measured in (current, last):
            if "measured" in measured:
                return measured["at_risk"], measured["measured"]
        return None

    async def advance(self, current: dict) -> bool:
        view = self.drives()
        if view.offline():
            return await self._wait_for_offline(current, view.offline())
        current.pop("waiting", None)
        if current["phase"] == "measure":
            if current["segments"] == 0 and await self._busy(current):
                await asyncio.sleep(1.0)
                return False
            return await self._measure(current, view)
        online = {c.drive_id: c for c in view.candidates}
        usage = {d: current["usage"].get(d, 0) for d in online}
        targets = self._targets(usage, online)
        current["spread"] = self._spread(usage, targets)
        balance = current["spread"] > self.tolerance
        if not balance and not current["at_risk"]:
            return True
        if await self.meta.queued_moves() >= MOVES_QUEUED_MAX:  # let the repair worker catch up
            await asyncio.sleep(1.0)
            return False
        page = await self.meta.segments_after(current["cursor_pg"], current["cursor_segment"], PAGE_SEGMENTS)
        if not page:  # one move per segment per walk: walk again while walks still help
            current["walks"] = current.get("walks", 0) + 1
            if current["moves"] == current.get("moves_before_walk", 0) or current["walks"] >= WALKS_MAX:
                current["again"] = current["fixes"] > 0  # measure again once they are done
                return True
            current.update(cursor_pg=-1, cursor_segment="", moves_before_walk=current["moves"])
            return False
        domains = view.failure_domains()
        moves = []
        for layout in page:
            if domains.at_risk(layout.drives):  # its fixes are planned once, on the first walk; no other move
                fixes = [] if current.get("walks") else self._fix_spread(layout, usage, targets, view.writable,
                                                                         domains)  # fmt: skip
                current["fixes"] += len(fixes)
                moves += fixes
            elif balance:
                moves += self._plan(layout, usage, targets, view.writable, domains)
        if moves:
            await self.meta.queue_moves(moves, time.time())
        current["usage"].update(usage)
        current["moves"] += len(moves)
        current["cursor_pg"], current["cursor_segment"] = page[-1].pg, page[-1].segment_id
        return False

    async def _wait_for_offline(self, current: dict, offline: list[str]) -> bool:
        """Plan nothing while a drive is offline, and keep the pass (and the request it serves) for later.

        What was measured is stale once the drive returns or fails, so the pass starts measuring again."""
        if current.get("waiting") != offline:
            log.info("rebalance waits: drive(s) %s offline within the grace may come back", ", ".join(offline))
        kept = {name: current[name] for name in ("started", "request", "moves", "fixes")}
        current.clear()
        current.update(await self.begin(), **kept, waiting=offline, moves_before_walk=kept["moves"],
                       measure_from=time.time())  # fmt: skip
        await asyncio.sleep(OFFLINE_POLL_S)
        return False

    async def _busy(self, current: dict) -> bool:
        """Wait before measuring: for the previous pass's moves (measure what they left, not what they
        will), and for repairs, which go first (at most ``REPAIR_WAIT_MAX_S``: one stuck repair must
        not stop rebalancing for good). Not while an operator has paused repairs, which carry the moves too:
        none would end meanwhile, and the count of segments at risk is what they may be looking at (a pass
        that planned moves just before a pause then measured nothing until the resume)."""
        if self.repair_paused():
            return False
        if await self.meta.queued_moves():
            return True
        waiting = time.time() - current.get("measure_from", current["started"]) < REPAIR_WAIT_MAX_S
        return waiting and await self.meta.repair_backlog() > 0

    async def _measure(self, current: dict, view: DriveView) -> bool:
        page = await self.meta.segments_after(current["cursor_pg"], current["cursor_segment"], PAGE_SEGMENTS)
        usage = current["usage"]
        domains = view.failure_domains()
        for layout in page:
            for drive in layout.drives:
                usage[drive] = usage.get(drive, 0) + shard_bytes(layout)
            current["at_risk"] += domains.at_risk(layout.drives)
        current["segments"] += len(page)
        if page:
            current["cursor_pg"], current["cursor_segment"] = page[-1].pg, page[-1].segment_id
        else:
            current.update(phase="move", cursor_pg=-1, cursor_segment="", measured=time.time())
            if current["at_risk"]:
                log.warning("%d segments at risk: more shards in one failure domain than the live domains force; "
                            "moving them off", current["at_risk"])  # fmt: skip
        return False

    @staticmethod
    def _targets(usage: dict[str, int], online: dict[str, Candidate]) -> dict[str, float]:
        weight = sum(online[d].weight for d in usage) or 1.0
        total = sum(usage.values())
        return {d: total * online[d].weight / weight for d in usage}

    @staticmethod
    def _spread(usage: dict[str, int], targets: dict[str, float]) -> float:
        """Largest distance of a drive from its target, as a fraction of the mean target."""
        mean = sum(targets.values()) / max(1, len(targets))
        return max((abs(usage[d] - targets[d]) for d in usage), default=0.0) / mean if mean else 0.0

    @staticmethod
    def _fix_spread(layout: SegmentLayout, usage: dict, targets: dict, writable: set, domains: FailureDomains
                    ) -> list[Move]:  # fmt: skip
        """Moves that take a segment at risk back within the rule, whatever usage says: shards leave its
        crowded domains (their fullest drives first) for legal drives (least crowded domains first, then
        the emptiest drives). Only shards on online drives move: the others are the drive jobs' and repair's."""
        drives = list(layout.drives)
        size = shard_bytes(layout)
        emptiest = sorted((d for d in usage if d in writable), key=lambda d: usage[d] - targets[d])
        moves: list[Move] = []
        while crowded := domains.crowded(drives):
            movable = sorted(((usage[d] - targets[d], i) for i, d in enumerate(drives)
                              if d in usage and domains.domain(d) in crowded), reverse=True)  # fmt: skip
            found = next(((i, t) for _, i in movable if (t := domains.choose(drives, i, emptiest))), None)
            if found is None:
                break  # no legal drive has room: the segment stays counted at risk until one has
            index, target = found
            moves.append((layout.segment_id, index, drives[index], target))
            usage[drives[index]] -= size
            usage[target] += size
            drives[index] = target
        return moves

    def _plan(self, layout: SegmentLayout, usage: dict, targets: dict, writable: set, domains: FailureDomains
              ) -> list[Move]:  # fmt: skip
        """At most one move for this segment: from its fullest drive to the emptiest legal one (same rule as
        repair: the segment's spread stays legal), when either is outside its band and the move brings both
        closer to their targets."""
        size = shard_bytes(layout)
        band = self.tolerance / 2
        held = [(usage[d] - targets[d], i, d) for i, d in enumerate(layout.drives) if d in usage]
        if not held:
            return []
        surplus, index, source = max(held)
        legal = domains.targets(layout.drives, index, [d for d in usage if d in writable])
        choices = [(targets[d] - usage[d], d) for d in legal]
        if not choices:
            return []
        deficit, target = max(choices)
        outside = usage[source] > targets[source] * (1 + band) or usage[target] < targets[target] * (1 - band)
        if not outside or deficit < size / 2 or surplus < size / 2:
            return []  # balanced enough, or the move would overshoot: shard sizes set the floor
        usage[source] -= size
        usage[target] += size
        return [(layout.segment_id, index, source, target)]
