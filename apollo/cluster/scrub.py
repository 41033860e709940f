"""The scrubber: walks every committed segment and checks every shard, at a set pace.

A pass visits segments in (placement group, segment id) order, checks each
shard on the drive the layout names (``shardcheck``: shallow or deep), and
queues whatever is wrong for the repair worker. Scheduling, requests
(``apollo admin scrub --now``) and resuming after a restart are
``passes.PeriodicPass``'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from apollo import metrics
from apollo.client.context import ClientContext
from apollo.cluster.passes import PeriodicPass
from apollo.cluster.ratelimit import RateLimiter
from apollo.cluster.shardcheck import check_shard
from apollo.proto.layout import SegmentLayout

log = logging.getLogger("apollo.scrub")
PAGE_SEGMENTS = 32


class Scrubber(PeriodicPass):
    name = "scrub"

    def __init__(self, ctx: ClientContext, serving: Callable[[], set[str]]) -> None:
        super().__init__(ctx.meta, interval_s=7 * 24 * 3600.0)
        self.ctx = ctx
        self.serving = serving  # drives this process can read; shards elsewhere are left to drive jobs
        self.budget = RateLimiter(0)
        self.mode = "deep"

    def tune(self, bytes_per_s: float, mode: str, interval_s: float) -> None:
        self.budget.rate = bytes_per_s
        self.mode = mode if mode in ("deep", "shallow") else "deep"
        self.interval_s = interval_s

    def summary(self, current: dict) -> str:
        c = current
        where = "" if c["cursor_pg"] < 0 else f", at group {c['cursor_pg']}"  # -1: before the first group
        return (f"{c['mode']}{where}, {c['segments']}/{c['total']} segments, {c['shards']} "
                f"shards, {c['bytes']} bytes read, {c['errors']} problems")  # fmt: skip

    async def step(self) -> bool:
        """A step of the pass, then when the next pass is due: a pass still running after that (or none
        starting) is behind schedule, which the progress ratio alone does not show."""
        busy = await super().step()
        started = (self.state.get("current") or self.state.get("last") or {}).get("started")
        if started is not None:
            metrics.scrub_due.set(started + self.interval_s)
        return busy

    async def begin(self) -> dict:
        return {"mode": self.mode, "cursor_pg": -1, "cursor_segment": "", "total": await self.meta.segment_count(),
                "segments": 0, "shards": 0, "bytes": 0, "errors": 0}  # fmt: skip

    async def advance(self, current: dict) -> bool:
        page = await self.meta.segments_after(current["cursor_pg"], current["cursor_segment"], PAGE_SEGMENTS)
        for layout in page:
            await self._scrub_segment(layout, current)
        if not page:
            return True
        current["cursor_pg"], current["cursor_segment"] = page[-1].pg, page[-1].segment_id
        current["segments"] += len(page)
        metrics.scrub_progress.set(current["segments"] / max(1, current["total"]))
        return False

    async def _scrub_segment(self, layout: SegmentLayout, current: dict) -> None:
        serving = self.serving()

        async def pace(n: int) -> None:
            current["bytes"] += n
            metrics.scrub_bytes.inc(n)
            await self.budget.take(n)

        async def one(index: int, drive: str) -> None:
            problem = await check_shard(self.ctx, layout, index, drive, deep=current["mode"] == "deep", pace=pace)
            current["shards"] += 1
            if problem is not None:
                current["errors"] += 1
                metrics.scrub_errors.inc()
                log.warning("scrub: segment %s shard %d on %s: %s", layout.segment_id, index, drive, problem)
                await self.meta.report_damage(layout.segment_id, index, drive, f"scrub: {problem}", time.time())

        await asyncio.gather(*(one(i, d) for i, d in enumerate(layout.drives) if d in serving))
