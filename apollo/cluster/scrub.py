"""The scrubber: walks every committed segment and checks every shard, at a set pace.

A pass visits segments in (placement group, segment id) order, checks each
shard on the drive the layout names (``shardcheck``: shallow or deep), and
queues whatever is wrong for the repair worker. The cursor and the pass's
counters are saved in the ``settings`` table after every page, so a restarted
server resumes the pass where it stopped instead of starting over. A new pass
starts ``scrub_interval_s`` after the previous one started, or at once when an
operator asks (``apollo admin scrub --now``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from apollo.client.context import ClientContext
from apollo.cluster.ratelimit import RateLimiter
from apollo.cluster.shardcheck import check_shard
from apollo.gateway import metrics
from apollo.types import SegmentLayout

log = logging.getLogger("apollo.scrub")
STATE_SETTING = "scrub.state"
REQUEST_SETTING = "scrub.requested"  # an operator's request (a timestamp); the pass serving it records it
PAGE_SEGMENTS = 32


class Scrubber:
    def __init__(self, ctx: ClientContext, serving: Callable[[], set[str]]) -> None:
        self.ctx = ctx
        self.meta = ctx.meta
        self.serving = serving  # drives this process can read; shards elsewhere are left to drive jobs
        self.budget = RateLimiter(0)
        self.mode = "deep"
        self.interval_s = 7 * 24 * 3600.0
        self.state: dict = {}

    def tune(self, bytes_per_s: float, mode: str, interval_s: float) -> None:
        self.budget.rate = bytes_per_s
        self.mode = mode if mode in ("deep", "shallow") else "deep"
        self.interval_s = interval_s

    async def run_forever(self) -> None:
        raw = await self.meta.get_setting(STATE_SETTING)
        self.state = json.loads(raw) if raw else {}
        if self.state.get("current"):
            current = self.state["current"]
            log.info("resuming %s scrub pass at group %d (%d segments done)", current["mode"], current["cursor_pg"],
                     current["segments"])  # fmt: skip
        while True:
            try:
                if not await self.step():
                    await asyncio.sleep(1.0)
            except Exception:
                log.exception("scrub step failed")
                await asyncio.sleep(5.0)

    async def step(self) -> bool:
        """Scrub one page of segments (starting a pass if one is due); False when idle."""
        current = self.state.get("current")
        if current is None:
            requested = float(await self.meta.get_setting(REQUEST_SETTING) or 0)
            if not self._pass_due(requested):
                return False
            current = self.state["current"] = {
                "mode": self.mode, "started": time.time(), "request": requested, "cursor_pg": -1,
                "cursor_segment": "", "total": await self.meta.segment_count(), "segments": 0, "shards": 0,
                "bytes": 0, "errors": 0,
            }  # fmt: skip
            log.info("%s scrub pass started over %d segments", current["mode"], current["total"])
        page = await self.meta.segments_after(current["cursor_pg"], current["cursor_segment"], PAGE_SEGMENTS)
        for layout in page:
            await self._scrub_segment(layout, current)
        if page:
            current["cursor_pg"], current["cursor_segment"] = page[-1].pg, page[-1].segment_id
            current["segments"] += len(page)
            metrics.scrub_progress.set(current["segments"] / max(1, current["total"]))
        else:
            current["finished"] = time.time()
            self.state = {"last": current}
            log.info("%s scrub pass done: %d segments, %d shards, %d bytes read, %d problems in %.1f s",
                     current["mode"], current["segments"], current["shards"], current["bytes"], current["errors"],
                     current["finished"] - current["started"])  # fmt: skip
        await self.meta.set_setting(STATE_SETTING, json.dumps(self.state))
        return True

    def _pass_due(self, requested: float) -> bool:
        """An operator asked for a pass no earlier pass served, or the interval is up."""
        last = self.state.get("last", {})
        return requested > last.get("request", 0.0) or time.time() >= last.get("started", 0.0) + self.interval_s

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
