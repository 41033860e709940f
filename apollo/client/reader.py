"""Range reader: fetch only the cells a range needs; decode from parity only on damage.

A healthy read issues one positional read per needed data shard per batch of
stripes, checks every cell's CRC32C and slices the payload out: no decoding.
Any failure (missing file, I/O error, CRC mismatch, short read) turns that
batch into a degraded read: the other shards are fetched, each stripe is
decoded from any k good cells, and the bad shard is reported for repair.
A range within one stripe that needs at most half of its cells' bytes asks for
parts of cells instead (``cell_parts``): each node checks the whole cell's CRC32C
and sends the part with a CRC32C of its own.
Batches are read ahead (``READ_AHEAD_BATCHES``) while earlier ones are being consumed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

from apollo.client.context import ClientContext, Damage
from apollo.errors import ApolloError, InsufficientFragments
from apollo.proto.layout import ObjectData, SegmentLayout
from apollo.storage.ec import StripeCodec
from apollo.storage.geometry import ShardGeometry
from apollo.storage.node import ReadOutcome, ShardRead

Raw = bytes | bytearray | memoryview | None  # a shard read's bytes, or None when it failed (reported as damage)
READ_AHEAD_BATCHES = 2  # batches in flight beyond the one being yielded, across segment boundaries


async def read_range(ctx: ClientContext, data: ObjectData, start: int, end: int
                     ) -> AsyncIterator[bytes | memoryview]:  # fmt: skip
    """Yield the bytes ``[start, end)`` of an object's data in order, a batch of stripes at a time.

    Pieces are read-only views of the verified cells as they came off the network (at most a
    cell each), not copies: joining them into one buffer per batch cost a quarter of a reader's
    CPU, and every consumer (a socket, a file, a hash, ``b"".join``) takes a buffer as it is.

    The next batches, of this segment or the next, are read while one is yielded: a reader
    never waits for a round trip to the nodes between batches, and holds at most
    ``READ_AHEAD_BATCHES + 1`` of them.
    """
    if data.inline is not None:
        if start < end:
            yield data.inline[start:end]
        return
    window: deque[asyncio.Task] = deque()
    try:
        for segment in data.segments:
            lo = max(start, segment.offset) - segment.offset  # the range within this segment
            hi = min(end, segment.offset + segment.length) - segment.offset
            if lo >= hi:
                continue
            reader = SegmentReader(ctx, segment)
            for s0, s1 in reader.batches(lo, hi):
                window.append(asyncio.ensure_future(reader.read_batch(s0, s1, lo, hi)))
                if len(window) > READ_AHEAD_BATCHES:
                    for piece in await window.popleft():
                        yield piece
        while window:
            for piece in await window.popleft():
                yield piece
    finally:
        for task in window:
            task.cancel()


def needed_shards(layout: SegmentLayout, s0: int, s1: int, start: int, end: int) -> list[int]:
    """Data shards holding any byte of segment bytes ``[start, end)`` within stripes ``[s0, s1)``: each is
    read over all those stripes (one positional read per shard)."""
    if s1 - s0 > 2:
        return list(range(layout.scheme.k))
    needed: set[int] = set()
    for stripe in (s0, s1 - 1):
        base = stripe * layout.stripe_bytes
        payload = layout.cell_payload(stripe)
        lo, hi = max(start, base) - base, min(end, base + layout.stripe_length(stripe)) - base
        needed.update(range(lo // payload, (hi - 1) // payload + 1))
    return sorted(needed)


def cell_parts(layout: SegmentLayout, s0: int, s1: int, start: int, end: int) -> list[tuple[int, int]] | None:
    """For a range within one stripe that needs at most half of its cells' bytes: the bytes ``[a, b)`` of
    each needed data cell it covers, in shard order (the range's bytes in order), for reads of a part of a
    cell (``ShardRead.part``); None when whole cells are read (the range is larger, or spans stripes)."""
    if s1 - s0 != 1:
        return None
    base, payload = s0 * layout.stripe_bytes, layout.cell_payload(s0)
    lo, hi = start - base, min(end - base, layout.stripe_length(s0))
    parts = [(max(lo, i * payload) - i * payload, min(hi, (i + 1) * payload) - i * payload)
             for i in range(lo // payload, (hi - 1) // payload + 1)]  # fmt: skip
    return parts if 2 * (hi - lo) <= len(parts) * payload else None


def stripes_of(layout: SegmentLayout, start: int, end: int) -> tuple[int, int]:
    """The stripes ``[s0, s1)`` holding segment bytes ``[start, end)``."""
    return start // layout.stripe_bytes, (end - 1) // layout.stripe_bytes + 1


class SegmentReader:
    def __init__(self, ctx: ClientContext, layout: SegmentLayout) -> None:
        self.ctx = ctx
        self.layout = layout
        self.geometry = ShardGeometry(layout)
        self.codec: StripeCodec = self.geometry.codec
        self.batch_stripes = self.geometry.batch_stripes
        self._reported: set[int] = set()

    def batches(self, start: int, end: int) -> list[tuple[int, int]]:
        """Stripe ranges ``[s0, s1)`` covering segment bytes ``[start, end)``, one per read batch."""
        first, last = start // self.layout.stripe_bytes, (end - 1) // self.layout.stripe_bytes
        return [(s, min(s + self.batch_stripes, last + 1)) for s in range(first, last + 1, self.batch_stripes)]

    def _needed_shards(self, s0: int, s1: int, start: int, end: int) -> list[int]:
        return needed_shards(self.layout, s0, s1, start, end)

    def shard_reads(self, s0: int, s1: int, start: int, end: int) -> list[ShardRead]:
        """The reads of a healthy ``read_batch``, for a caller that batches them (``apollo.client.node_batches``)
        and hands their outcomes back as its ``fetched``: whole cell records, or the parts of them a small
        range needs (``cell_parts``), each checked by the node against its record's CRC32C."""
        offset, length = self.geometry.span(s0, s1)
        drives, shard = self.layout.drives, self.layout.shard
        needed = self._needed_shards(s0, s1, start, end)
        parts = cell_parts(self.layout, s0, s1, start, end)
        if parts is None:
            return [ShardRead(drives[i], shard(i), offset, length) for i in needed]
        header = self.codec.header_bytes
        return [ShardRead(drives[i], shard(i), offset, length, (header + a, header + b))
                for i, (a, b) in zip(needed, parts, strict=True)]  # fmt: skip

    async def _fetch(self, index: int, s0: int, s1: int) -> bytes | bytearray | memoryview | None:
        drive = self.layout.drives[index]
        offset, length = self.geometry.span(s0, s1)
        started = time.monotonic()
        try:
            raw = await self.ctx.node(drive).read(drive, self.layout.shard(index), offset, length)
        except (OSError, ApolloError) as exc:
            raw = exc
        else:
            self.ctx.latency.record(time.monotonic() - started)
        return await self._checked(index, raw, length)

    async def _fetch_part(self, read: ShardRead) -> ReadOutcome:
        """A part of a cell (a small range GET of a large object): the node checks the whole cell and sends the
        part, so 4 KiB of a 256 KiB cell crosses the network as 4 KiB."""
        started = time.monotonic()
        try:
            (outcome,) = await self.ctx.node(read.drive_id).read_many([read])
        except (OSError, ApolloError) as exc:
            outcome = exc
        if not isinstance(outcome, Exception):
            self.ctx.latency.record(time.monotonic() - started)
        return outcome

    async def _checked(self, index: int, raw: ReadOutcome, length: int) -> bytes | bytearray | memoryview | None:
        """A shard read's bytes, or None (reported as damage) if it failed or came up short."""
        if isinstance(raw, Exception):
            await self._damaged(index, f"read failed: {raw.__class__.__name__}: {raw}")
            return None
        if len(raw) != length:
            await self._damaged(index, f"short read: {len(raw)} of {length} bytes")
            return None
        return raw

    async def read_batch(self, s0: int, s1: int, start: int, end: int, fetched: list[ReadOutcome] | None = None
                         ) -> list[bytes | memoryview]:  # fmt: skip
        """Segment bytes ``[start, end)`` within stripes ``[s0, s1)``; degraded from parity if need be.
        ``fetched``: the outcomes of ``shard_reads``, read by the caller; else the shards are read here."""
        needed = self._needed_shards(s0, s1, start, end)
        parts = cell_parts(self.layout, s0, s1, start, end)
        if parts is not None:
            if fetched is None:
                fetched = await self._fetch_parts(s0, s1, start, end)
                if fetched is None:  # slow: hedged
                    return await self._degraded(s0, s1, start, end, {})
            return await self._read_parts(s0, s1, start, end, needed, parts, fetched)
        running: dict[asyncio.Future, int] = {}
        if fetched is None:
            raws, running = await self._fetch_hedged(needed, s0, s1)
        else:
            length = self.geometry.span(s0, s1)[1]
            raws = {i: await self._checked(i, raw, length) for i, raw in zip(needed, fetched, strict=True)}
        cells = await self.ctx.cpu_run(self._split, raws, s0, s1)
        for index, shard_cells in cells.items():
            if any(c is None for c in shard_cells):
                await self._damaged(index, "cell CRC32C mismatch")
        bad = [i for i in needed if i not in cells or any(c is None for c in cells[i])]
        if bad:
            return await self._degraded(s0, s1, start, end, cells, running)
        return self._assemble(s0, s1, start, end, cells)  # views only: cheaper than a hop to a thread

    def _hedge_wait(self, drives: list[str]) -> float:
        """How long to wait for healthy reads before reading parity too: not at all when one of the drives was
        slow lately and enough others are not (read around it), else the threshold learned from recent reads."""
        latency = self.ctx.latency
        around = latency.read_around(drives, self.layout.drives, self.layout.scheme.k)
        return 0.0 if around else latency.hedge_after()

    async def _fetch_hedged(self, needed: list[int], s0: int, s1: int
                            ) -> tuple[dict[int, Raw], dict[asyncio.Future, int]]:  # fmt: skip
        """The needed shards' reads that answered within the hedge threshold, and those still running (their
        drives marked slow), for the degraded path to wait on alongside parity: whichever k answer first."""
        tasks = {asyncio.ensure_future(self._fetch(i, s0, s1)): i for i in needed}
        wait_s = self._hedge_wait([self.layout.drives[i] for i in needed])
        done, running = await asyncio.wait(tasks, timeout=wait_s) if wait_s > 0 else (set(), set(tasks))
        if running and wait_s > 0:
            for task in running:
                self.ctx.latency.note_slow(self.layout.drives[tasks[task]])
        return {tasks[task]: task.result() for task in done}, {task: tasks[task] for task in running}

    async def _fetch_parts(self, s0: int, s1: int, start: int, end: int) -> list[ReadOutcome] | None:
        """The parts a small range needs; None when they did not all answer within the hedge threshold (the
        slow drives are marked, and the caller decodes the stripe from whichever shards answer first)."""
        reads = self.shard_reads(s0, s1, start, end)
        tasks = [asyncio.ensure_future(self._fetch_part(read)) for read in reads]
        wait_s = self._hedge_wait([read.drive_id for read in reads])
        if wait_s > 0:
            done, running = await asyncio.wait(tasks, timeout=wait_s)
            if not running:
                return [task.result() for task in tasks]
        for task, read in zip(tasks, reads, strict=True):
            if not task.done():
                task.cancel()
                if wait_s > 0:
                    self.ctx.latency.note_slow(read.drive_id)
        return None

    async def _read_parts(self, s0: int, s1: int, start: int, end: int, needed: list[int],
                          parts: list[tuple[int, int]], fetched: list[ReadOutcome]
                          ) -> list[bytes | memoryview]:  # fmt: skip
        """The range from the parts of cells the node checked; any part missing or wrong (a failed read, a
        record whose CRC32C failed on the node, a part changed on the way) reads the stripe's cells whole and
        decodes it, as a failed read of whole cells does."""
        good = True
        for index, (a, b), raw in zip(needed, parts, fetched, strict=True):
            if isinstance(raw, Exception) or len(raw) != b - a:
                await self._checked(index, raw, b - a)
                good = False
        if good:
            return list(fetched)  # type: ignore[arg-type]  # no exception among them
        return await self._degraded(s0, s1, start, end, {})

    def _split(self, raws: dict[int, bytes | None], s0: int, s1: int) -> dict[int, list[memoryview | None]]:
        """Every fetched shard's cells, CRC-checked (None where a cell is bad), in one worker-thread hop."""
        return {index: self.geometry.split(raw, s0, s1) for index, raw in raws.items() if raw is not None}

    def _assemble(self, s0: int, s1: int, start: int, end: int, cells: dict) -> list[memoryview]:
        pieces: list[memoryview] = []
        header = self.codec.header_bytes
        for n, stripe in enumerate(range(s0, s1)):
            base = stripe * self.layout.stripe_bytes
            payload = self.layout.cell_payload(stripe)
            lo = max(start, base) - base
            hi = min(end, base + self.layout.stripe_length(stripe)) - base
            for index in range(lo // payload, (hi - 1) // payload + 1):
                cell = cells[index][n][header : header + payload]
                cell_lo = index * payload
                pieces.append(cell[max(lo, cell_lo) - cell_lo : min(hi, cell_lo + payload) - cell_lo])
        return pieces

    async def _degraded(self, s0: int, s1: int, start: int, end: int, cells: dict,
                        running: dict[asyncio.Future, int] | None = None) -> list[bytes]:  # fmt: skip
        """Decode the stripes from any k good cells each: the other shards are read (with the reads still
        ``running``) until every stripe has k, and whatever is still out then is cancelled, so a hung or slow
        node costs the hedge threshold, not its timeout."""
        pending = dict(running or {})
        unasked = [i for i in range(self.layout.scheme.width) if i not in cells and i not in pending.values()]
        unasked.sort(key=lambda i: self.ctx.latency.is_slow(self.layout.drives[i]))  # slow drives last
        try:
            while not self._decodable(cells, s1 - s0):
                # As many more shards as k still needs, counting the reads out on drives not known slow: a
                # slow data shard costs one parity read, not m.
                hopeful = sum(not self.ctx.latency.is_slow(self.layout.drives[i]) for i in pending.values())
                for _ in range(min(len(unasked), self.layout.scheme.k - self._good_shards(cells) - hopeful)):
                    index = unasked.pop(0)
                    pending[asyncio.ensure_future(self._fetch(index, s0, s1))] = index
                if not pending:
                    break
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    index, raw = pending.pop(task), task.result()
                    if raw is None:
                        continue
                    cells[index] = await self.ctx.cpu_run(self.geometry.split, raw, s0, s1)
                    if any(c is None for c in cells[index]):
                        await self._damaged(index, "cell CRC32C mismatch")
        finally:
            for task in pending:
                task.cancel()
        self.ctx.decoded(s1 - s0)
        return await self.ctx.cpu_run(self._decode_batch, s0, s1, start, end, cells)

    @staticmethod
    def _good_shards(cells: dict) -> int:
        return sum(all(c is not None for c in shard_cells) for shard_cells in cells.values())

    def _decodable(self, cells: dict, stripes: int) -> bool:
        k = self.layout.scheme.k
        return all(sum(c[n] is not None for c in cells.values()) >= k for n in range(stripes))

    def _decode_batch(self, s0: int, s1: int, start: int, end: int, cells: dict) -> list[bytes]:
        pieces = []
        for n, stripe in enumerate(range(s0, s1)):
            good = {i: bytes(c[n]) for i, c in cells.items() if c[n] is not None}
            if len(good) < self.layout.scheme.k:
                raise InsufficientFragments(
                    f"segment {self.layout.segment_id} stripe {stripe}: {len(good)} good cells, "
                    f"need {self.layout.scheme.k}"
                )
            data = self.codec.decode(
                dict(list(good.items())[: self.layout.scheme.k]), self.layout.stripe_length(stripe)
            )
            base = stripe * self.layout.stripe_bytes
            pieces.append(data[max(start, base) - base : min(end, base + len(data)) - base])
        return [b"".join(pieces)]

    async def _damaged(self, index: int, reason: str) -> None:
        if index in self._reported:  # one report per shard per read, not one per batch
            return
        self._reported.add(index)
        await self.ctx.report(Damage(self.layout.segment_id, index, self.layout.drives[index], reason))
