"""Rebuilding shards of one segment from its surviving shards: what a repair does with the bytes.

``ShardRebuilder.rebuild`` reads the surviving shards batch by batch (copying a moving shard's cells
where they read whole, decoding the rest from any k), writes the target shard files, pipelined so a
batch is read and rebuilt while the one before it is written, and reads every target back before it
returns. It decides nothing about the metadata: the repair worker chooses the targets and commits.

It runs wherever the bytes should flow: on the metadata service holding the manager lease (the
all-in-one server, where every drive is local anyway), or, in a cluster, on the storage node that
holds a target drive (``roles/storage.py``), so the rebuild of a failed drive is spread over
the nodes that take its shards instead of passing through one process's network link.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from apollo.client.context import ClientContext
from apollo.client.replace import decodable_cells
from apollo.cluster.ratelimit import RateLimiter
from apollo.cluster.shardcheck import check_shard, header_and_footer
from apollo.errors import ApolloError, InsufficientFragments
from apollo.proto.layout import SegmentLayout
from apollo.storage.geometry import ShardGeometry
from apollo.storage.node import ShardSink
from apollo.storage.shardfile import encode_footer, encode_header, seal_record


class RebuiltBadly(ApolloError):
    """A rebuilt shard did not read back whole: what was written must not be pointed at."""


class ShardRebuilder:
    """Rebuilds shards through ``ctx``'s nodes, paced by byte and operation budgets (0: unpaced)."""

    def __init__(self, ctx: ClientContext, bytes_budget: RateLimiter | None = None,
                 ops_budget: RateLimiter | None = None) -> None:  # fmt: skip
        self.ctx = ctx
        self.bytes_budget = bytes_budget or RateLimiter(0)
        self.ops_budget = ops_budget or RateLimiter(0)

    async def rebuild(self, layout: SegmentLayout, targets: dict[int, str], copy_from: dict[int, str]) -> int:
        """Write shards ``targets`` (index -> drive) from the surviving ones; returns bytes written."""
        geometry = ShardGeometry(layout)
        sources = [i for i in range(layout.scheme.width) if i not in targets]
        header, footer = await self._header_and_footer(layout, sources + list(copy_from))
        sinks: dict[int, ShardSink] = {}
        written = 0
        appending: asyncio.Future | None = None  # the previous batch's appends, still going
        try:
            for index, drive in targets.items():
                await self.ops_budget.take(1)
                shard_header = encode_header({**header, "shard": index, "drive": drive})
                sinks[index] = await self.ctx.node(drive).open_shard(drive, layout.shard(index), shard_header)
            # Pipelined: a batch is read and rebuilt while the one before it is written (each shard's stream
            # still takes its batches in order: a batch's appends start once the previous ones are done).
            for s0, s1 in geometry.batches():
                records = await self._batch_records(layout, geometry, s0, s1, sources, targets, copy_from)
                if appending is not None:
                    await appending
                await self.ops_budget.take(len(sinks))
                appending = asyncio.gather(*(sinks[i].append(records[i]) for i in sinks))
                batch_bytes = sum(len(r) for rs in records.values() for r in rs)
                await self.bytes_budget.take(batch_bytes)
                written += batch_bytes
            if appending is not None:
                await appending
            await asyncio.gather(*(sink.finish(footer) for sink in sinks.values()))
        except BaseException:
            if appending is not None:
                appending.cancel()
                await asyncio.gather(appending, return_exceptions=True)
            await asyncio.gather(*(sink.abort() for sink in sinks.values()), return_exceptions=True)
            raise
        for index, drive in targets.items():  # read back what was written before pointing readers at it
            problem = await check_shard(self.ctx, layout, index, drive, deep=True, pace=self.bytes_budget.take)
            if problem is not None:  # what was written is the repair worker's to discard: it knows what is in use
                raise RebuiltBadly(f"rebuilt shard {index} on {drive} does not verify: {problem}")
        return written

    async def _header_and_footer(self, layout: SegmentLayout, sources: list[int]) -> tuple[dict, bytes]:
        """The header fields and the footer bytes, taken from the first shard that yields them intact."""
        problems = []
        for index in sources:
            drive = layout.drives[index]
            try:
                header, footer = await header_and_footer(self.ctx.node(drive), drive, layout.shard(index))
                return header, encode_footer(footer)
            except (OSError, ApolloError, ValueError) as exc:
                problems.append(f"shard {index}: {exc}")
        raise InsufficientFragments(f"no intact shard header/footer in segment {layout.segment_id}: {problems}")

    async def _read_cells(
        self, layout: SegmentLayout, geometry: ShardGeometry, index: int, drive: str, s0: int, s1: int
    ) -> list | None:
        offset, length = geometry.span(s0, s1)
        await self.ops_budget.take(1)
        await self.bytes_budget.take(length)
        try:
            raw = await self.ctx.node(drive).read(drive, layout.shard(index), offset, length)
        except (OSError, ApolloError):
            return None
        return await self.ctx.cpu_run(geometry.split, raw, s0, s1)

    async def _batch_records(
        self,
        layout: SegmentLayout,
        geometry: ShardGeometry,
        s0: int,
        s1: int,
        sources: list[int],
        targets: dict[int, str],
        copy_from: dict[int, str],
    ) -> dict[int, list[bytes]]:
        """Cell records of stripes ``[s0, s1)`` for every target shard: copied where possible, else rebuilt.

        Shards being moved still read fine, so their cells also count as decode sources: a segment
        with a lost shard and two planned moves must not run short of k sources.
        """
        stripes = s1 - s0
        moved = await asyncio.gather(*(self._read_cells(layout, geometry, i, d, s0, s1) for i, d in copy_from.items()))
        cells = {i: got for i, got in zip(copy_from, moved, strict=True) if got is not None}
        records = {i: [seal_record(c) for c in got] for i, got in cells.items() if all(c is not None for c in got)}
        missing = [i for i in targets if i not in records]
        if not missing:
            return records

        def read(index: int) -> Awaitable[list | None]:
            return self._read_cells(layout, geometry, index, layout.drives[index], s0, s1)

        await decodable_cells(read, sources, cells, layout.scheme.k, stripes)  # data shards first
        rebuilt = await self.ctx.cpu_run(geometry.rebuild_records, cells, missing, stripes)
        records.update(rebuilt)
        return records
