"""Re-placing the shards a write lost: rebuilt from the shards it finished, onto spare drives, before the ack.

A shard stream can fail mid-write: its node died, its link went silent, its drive failed. The bytes
it missed are gone from the writer, which holds only the batch in flight, but the segment's other
shards hold them: once those are finished, any k of them give back every lost shard's cells. So the
writer rebuilds the lost shards on spare drives and the write is acknowledged with its full
redundancy, instead of one or two shards short until background repair comes round, or failing
outright when fewer than the write quorum were left (a rack that goes silent mid-write takes two
shards of every 4+2 segment spread over three racks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from apollo.client.context import ClientContext
from apollo.errors import ApolloError
from apollo.proto.layout import SegmentLayout
from apollo.storage.geometry import ShardGeometry
from apollo.storage.node import ShardSink

log = logging.getLogger(__name__)

# Opens shard ``index`` on the next spare that takes it: (drive, sink), or None when none would.
OpenSpare = Callable[[int], Awaitable[tuple[str, ShardSink] | None]]


async def rebuild_lost(ctx: ClientContext, layout: SegmentLayout, lost: list[int], open_spare: OpenSpare,
                       footer: bytes) -> dict[int, str]:  # fmt: skip
    """Rebuild shards ``lost`` of the finished segment ``layout`` on spares; {index: drive} of those rebuilt.

    A shard whose spares all refuse, or whose new stream fails too, is left out (the caller counts
    what it has); too few readable sources fail the whole rebuild.

    :raises InsufficientFragments: a stripe of which fewer than k finished shards could be read.
    """
    geometry = ShardGeometry(layout)
    sources = [i for i in range(layout.scheme.width) if i not in lost]
    sinks: dict[int, ShardSink] = {}
    placed: dict[int, str] = {}
    for index in lost:
        opened = await open_spare(index)
        if opened is not None:
            placed[index], sinks[index] = opened
    if not sinks:
        return placed
    try:
        for s0, s1 in geometry.batches():
            records = await _rebuilt_batch(ctx, layout, geometry, sources, list(sinks), s0, s1)
            failed = await asyncio.gather(*(sinks[i].append(records[i]) for i in sinks), return_exceptions=True)
            await _drop_failed(sinks, placed, failed, "append")
        failed = await asyncio.gather(*(sink.finish(footer) for sink in sinks.values()), return_exceptions=True)
        await _drop_failed(sinks, placed, failed, "finish")
    except BaseException:
        await asyncio.gather(*(sink.abort() for sink in sinks.values()), return_exceptions=True)
        raise
    return placed


async def _drop_failed(sinks: dict[int, ShardSink], placed: dict[int, str], outcomes: list, step: str) -> None:
    """Give up the spares whose ``step`` raised (their temp files removed where the node still answers)."""
    for index, outcome in zip(list(sinks), outcomes, strict=True):
        if isinstance(outcome, Exception):
            log.warning("rebuilding shard %d on spare %s: %s failed: %s", index, placed[index], step, outcome)
            sink = sinks.pop(index)
            del placed[index]
            if step == "append":
                await asyncio.gather(sink.abort(), return_exceptions=True)


async def decodable_cells(read: Callable[[int], Awaitable[list | None]], sources: list[int], cells: dict[int, list],
                          k: int, stripes: int) -> dict[int, list]:  # fmt: skip
    """``cells`` (shard -> verified fragment per stripe, None where one failed) topped up with ``read`` of
    ``sources`` in order, until every one of ``stripes`` stripes has k good cells or no source is left: as
    many read at once as could suffice, more only where some failed. The writer's rebuild of a lost shard
    and the repair's both read survivors this way."""
    pending = [i for i in sources if i not in cells]
    while pending and not all(sum(c[n] is not None for c in cells.values()) >= k for n in range(stripes)):
        wanted = max(1, k - len(cells))
        batch, pending = pending[:wanted], pending[wanted:]
        got = await asyncio.gather(*(read(i) for i in batch))
        cells.update({i: g for i, g in zip(batch, got, strict=True) if g is not None})
    return cells


async def _rebuilt_batch(ctx: ClientContext, layout: SegmentLayout, geometry: ShardGeometry, sources: list[int],
                         missing: list[int], s0: int, s1: int) -> dict[int, list[bytes]]:  # fmt: skip
    """Cell records of stripes ``[s0, s1)`` for shards ``missing``, from the finished ones.

    :raises InsufficientFragments: a stripe with fewer than k good cells (``rebuild_records``)."""
    offset, length = geometry.span(s0, s1)

    async def cells_of(index: int) -> list | None:
        drive = layout.drives[index]
        try:
            raw = await ctx.node(drive).read(drive, layout.shard(index), offset, length)
        except (OSError, ApolloError):
            return None
        return await ctx.cpu_run(geometry.split, raw, s0, s1)

    cells = await decodable_cells(cells_of, sources, {}, layout.scheme.k, s1 - s0)
    return await ctx.cpu_run(geometry.rebuild_records, cells, missing, s1 - s0)
