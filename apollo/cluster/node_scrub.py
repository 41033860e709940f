"""Node-local scrub: a storage node verifies its own drives' shard files at a pace, and reports the damaged ones.

The lease holder's scrub (``apollo.cluster.scrub``) reads every shard of the cluster over the network:
one process's pace bounds the whole cluster's, and every byte crosses the network to be thrown away.
Here each ``apollo storage`` walks its own drives (placement group by group, as the files lie) and
checks each shard file as the deep scrub does (``shardcheck``: the header names the file, the footer
follows the last record, every cell's CRC32C), paced in bytes per second per node, so the cluster's
scrub rate grows with its nodes. A damaged shard is reported to the metadata service, whose repair
queue takes it as it takes a reader's report; one the metadata does not place on this drive (an
orphan, or a shard moved since) is refused there and left to the orphan sweep.

A shard's geometry comes from its own file: the name gives the segment, shard and group, the header
the scheme, cell size and offset, the footer the length. A header or footer that cannot be read is
itself the damage reported.

Each drive keeps its own scrub state in ``scrub-state.json`` at its root: when its last pass started
and finished, and the last group done in a pass under way. A node that restarts resumes an unfinished
pass where it stopped and starts none before the interval has run: restarts do not make a node read
its drives again from the start, and a drive carries its state when it moves to another node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from apollo import errors, metrics
from apollo.client.context import ClientContext
from apollo.client.remote_meta import RemoteMeta
from apollo.cluster.ratelimit import RateLimiter
from apollo.cluster.shardcheck import FOOTER_READ_BYTES, check_shard, header_and_footer
from apollo.proto.layout import NO_DRIVE, Scheme, SegmentLayout, ShardRef
from apollo.storage.node import LocalStorageNode, StoredShard
from apollo.storage.shardfile import HEADER_BYTES

log = logging.getLogger("apollo.scrub")
PAGE = 256  # groups, or segments, listed at a time
MISSING = "shard file missing"  # shardcheck's word for a file gone meanwhile (GC, repair): nothing to report


STATE_FILE = "scrub-state.json"
SAVE_EVERY_S = 10.0  # how often a pass under way records its place on the drive
CHECK_EVERY_S = 30.0  # how often the node looks for a drive whose pass is due (or the interval, if shorter)


@dataclass
class PassCounts:
    shards: int = 0
    bytes: int = 0
    damaged: int = 0

    def add(self, other: PassCounts) -> None:
        self.shards, self.bytes, self.damaged = (self.shards + other.shards, self.bytes + other.bytes,
                                                 self.damaged + other.damaged)  # fmt: skip


@dataclass
class DriveScrubState:
    """One drive's scrub schedule, kept on the drive (wall-clock times)."""

    started: float = 0.0  # the current or last pass began
    finished: float = 0.0  # the last whole pass ended (before ``started``: a pass is under way)
    cursor_pg: int = -1  # the pass under way has checked every group up to this one

    @classmethod
    def load(cls, root: Path) -> DriveScrubState:
        try:
            raw = json.loads((root / STATE_FILE).read_text())
            return cls(float(raw["started"]), float(raw["finished"]), int(raw["cursor_pg"]))
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: scrub from the start
            return cls()

    def save(self, root: Path) -> None:
        temp = root / (STATE_FILE + ".tmp")
        temp.write_text(json.dumps(asdict(self)))
        os.replace(temp, root / STATE_FILE)

    def under_way(self) -> bool:
        return self.finished < self.started


class NodeScrubber:
    """A pass over each of ``node``'s drives every ``interval_s`` (from the pass's start); ``meta`` takes the
    damage reports."""

    def __init__(self, meta: RemoteMeta, node: LocalStorageNode, bytes_per_s: float, interval_s: float) -> None:
        self.node = node
        self.ctx = ClientContext(meta, node.serving(), cpu=ThreadPoolExecutor(1, thread_name_prefix="scrub"))
        self.budget = RateLimiter(bytes_per_s)
        self.interval_s = interval_s

    async def run_forever(self) -> None:
        while True:
            try:
                await self.scrub_due()
            except Exception:
                log.exception("node scrub failed")
            await asyncio.sleep(min(CHECK_EVERY_S, self.interval_s))

    async def scrub_due(self) -> PassCounts:
        """Go on with every drive whose pass is under way or due; the drives' counts, summed."""
        total = PassCounts()
        self.ctx.nodes = self.node.serving()  # drives attach and detach while the node runs
        for drive_id in list(self.ctx.nodes):
            drive = self.node.drives.get(drive_id)
            if drive is None:
                continue
            state = await asyncio.to_thread(DriveScrubState.load, drive.root)
            if not state.under_way() and time.time() < state.started + self.interval_s:
                continue
            total.add(await self._scrub_drive(drive_id, drive.root, state))
        return total

    async def _scrub_drive(self, drive_id: str, root: Path, state: DriveScrubState) -> PassCounts:
        if not state.under_way():
            state = DriveScrubState(started=time.time(), finished=state.finished)
        resumed, counts = state.cursor_pg, PassCounts()
        node, saved = self.ctx.node(drive_id), time.monotonic()
        while groups := await node.list_groups(drive_id, state.cursor_pg, PAGE):
            for pg in groups:
                after = ""
                while shards := await node.list_shards(drive_id, pg, after, PAGE):
                    for shard in shards:
                        await self._scrub_shard(drive_id, pg, shard, counts)
                    after = shards[-1].segment_id
                state.cursor_pg = pg
                if time.monotonic() - saved > SAVE_EVERY_S:
                    await asyncio.to_thread(state.save, root)
                    saved = time.monotonic()
        state.finished, state.cursor_pg = time.time(), -1
        await asyncio.to_thread(state.save, root)
        log.info("node scrub of drive %s done in %.1f s%s: %d shards, %d bytes read, %d damaged", drive_id,
                 state.finished - state.started, f" (resumed after group {resumed})" if resumed >= 0 else "",
                 counts.shards, counts.bytes, counts.damaged)  # fmt: skip
        return counts

    async def _pace(self, size: int) -> None:
        await self.budget.take(size)
        metrics.scrub_bytes.inc(size)

    async def _scrub_shard(self, drive_id: str, pg: int, shard: StoredShard, counts: PassCounts) -> None:
        counts.shards += 1
        counts.bytes += shard.size
        problem = await self.check(drive_id, pg, shard)
        if problem is None or problem == MISSING:
            return
        counts.damaged += 1
        metrics.scrub_errors.inc()
        log.warning("node scrub: shard %d of segment %s on drive %s: %s", shard.index, shard.segment_id, drive_id,
                    problem)  # fmt: skip
        try:
            await self.ctx.meta.report_damage(shard.segment_id, shard.index, drive_id, problem, time.time())
        except errors.InvalidRequest:
            log.info("segment %s is not placed on drive %s: an orphan, left to the orphan sweep", shard.segment_id,
                     drive_id)  # fmt: skip
        except errors.ApolloError as exc:
            log.warning("could not report the damaged shard: %s", exc)

    async def check(self, drive_id: str, pg: int, shard: StoredShard) -> str | None:
        """None when the shard file is whole, ``MISSING`` when it went meanwhile, else what is wrong with it."""
        node, ref = self.ctx.node(drive_id), ShardRef(pg, shard.segment_id, shard.index)
        try:
            await self._pace(HEADER_BYTES + FOOTER_READ_BYTES)
            header, footer = await header_and_footer(node, drive_id, ref)
            scheme = Scheme.parse(header["scheme"])
            layout = SegmentLayout(shard.segment_id, int(header["offset"]), int(footer["length"]), scheme,
                                   int(header["cell_size"]), pg, (NO_DRIVE,) * scheme.width)  # fmt: skip
        except FileNotFoundError:
            return MISSING
        except (OSError, errors.ApolloError, ValueError, KeyError, TypeError) as exc:
            return f"header or footer unreadable: {exc.__class__.__name__}: {exc}"
        return await check_shard(self.ctx, layout, shard.index, drive_id, deep=True, pace=self._pace)
