"""Byte ranges of many objects read with one request per storage node, not one per shard.

A batch of a thousand 100 KiB samples on a 4+2 layout is a few thousand shard reads of a few dozen KiB:
one HTTP request each costs more than the bytes it moves. ``NodeReads`` plans the healthy reads of every
range of a wave (the data shards its stripes need, as ``SegmentReader.shard_reads`` names them), groups
them by the node serving each drive, the same read asked for by several ranges (members of one tar shard,
overlapping ranges) once, and sends each node its whole group in one ``read_many``. Each range is then
assembled by its ``SegmentReader`` from the outcomes, CRC-checked cell by cell: a read that failed, came up
short or holds a bad cell sends that range down the ordinary degraded path (the other shards read one by
one, decoded from parity, the damage reported for repair), and only that range.

A node that is alive but slow must not hold a whole wave: a node's request not answered within the
threshold learned from recent batch requests (``ClientContext.batch_latency``) marks its drives slow, and
every range waiting on it is read on its own, around the slow drives (``SegmentReader.read_batch``'s hedged
path: parity in their place). Ranges of later waves that need a drive marked slow skip the batch and go that
way at once. Only while the late nodes are at most half of the wave's (``_Groups._few_late``): when most are
late, the whole cluster is behind, and reading every range on its own would only multiply its requests.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from apollo.client.context import ClientContext
from apollo.client.reader import SegmentReader, cell_parts, needed_shards, stripes_of
from apollo.errors import ApolloError
from apollo.invariant import invariant
from apollo.proto.layout import ObjectData, SegmentLayout
from apollo.storage.node import ReadOutcome, ShardRead, StorageNode

_UNSERVED = -1  # the group of reads no node serves: their outcomes are known without a request
# A node's request is hedged after the learned threshold plus its answer's bytes at this rate: a request of
# many megabytes is not slow for taking longer than one of a few cells.
HEDGE_BYTES_PER_S = 50e6


@dataclass
class _Piece:
    """The part of a range in one segment: its stripes ``[s0, s1)``, its bytes ``[lo, hi)`` of the segment,
    and where its shard reads are in their node's group."""

    reader: SegmentReader
    s0: int
    s1: int
    lo: int
    hi: int
    slots: list[tuple[int, int]] | None  # (node group, position in it), one per shard read; None: read alone


class _Groups:
    """Shard reads gathered per node, each distinct read once, then sent: one ``read_many`` per node."""

    def __init__(self, ctx: ClientContext) -> None:
        self.ctx = ctx
        self.nodes: dict[int, tuple[StorageNode, list[ShardRead]]] = {}  # by id(node)
        self.slots: dict[ShardRead, tuple[int, int]] = {}
        self.unserved: list[ReadOutcome] = []
        self.results: dict[int, asyncio.Future[list[ReadOutcome]]] = {}
        self.deadlines: dict[int, float] = {}  # when a node's request not answered yet is given up on (hedged)

    def add(self, read: ShardRead) -> tuple[int, int]:
        slot = self.slots.get(read)
        if slot is not None:
            return slot
        try:
            node = self.ctx.node(read.drive_id)
        except ApolloError as exc:
            self.unserved.append(exc)
            return _UNSERVED, len(self.unserved) - 1
        _, reads = self.nodes.setdefault(id(node), (node, []))
        reads.append(read)
        self.slots[read] = slot = (id(node), len(reads) - 1)
        return slot

    def send(self) -> None:
        sent, threshold = time.monotonic(), self.ctx.batch_latency.hedge_after()
        for key, (node, reads) in self.nodes.items():
            answer = sum(read.answer_bytes for read in reads)
            self.deadlines[key] = sent + threshold + answer / HEDGE_BYTES_PER_S
            self.results[key] = asyncio.ensure_future(self._read_many(node, reads))

    async def _read_many(self, node: StorageNode, reads: list[ShardRead]) -> list[ReadOutcome]:
        started = time.monotonic()
        try:
            outcomes = await node.read_many(reads)
        except (OSError, ApolloError) as exc:  # the whole request failed: every read of it did
            return [exc] * len(reads)
        self.ctx.batch_latency.record(time.monotonic() - started)
        return outcomes

    async def outcomes(self, slots: list[tuple[int, int]]) -> list[ReadOutcome] | None:
        """The reads' outcomes; None if a node they wait on has not answered by the deadline (its drives are
        then marked slow, for this range to be read around them)."""
        waiting = {key for key, _ in slots if key != _UNSERVED and not self.results[key].done()}
        if waiting:
            left = max(0.0, max(self.deadlines[key] for key in waiting) - time.monotonic())
            await asyncio.wait([self.results[key] for key in waiting], timeout=left)
            late = [key for key in waiting if not self.results[key].done()]
            if late and self._few_late():
                for key in late:
                    for read in self.nodes[key][1]:
                        self.ctx.latency.note_slow(read.drive_id)
                return None
            if late:  # every node is slow (a loaded cluster, or one process serving every drive): wait
                await asyncio.wait([self.results[key] for key in late])
        return [self.unserved[at] if key == _UNSERVED else self.results[key].result()[at] for key, at in slots]

    def _few_late(self) -> bool:
        """Whether the nodes of this wave still out past their deadlines are at most half of its nodes. Only then
        is reading around them worth it: the others answered, and the parity the reads around them need is on
        nodes that answer. When most are late the slowness is everyone's, and reading each range on its own
        would multiply the requests into a cluster that is already behind (on the all-in-one server, whose one
        process serves every drive, that is every time it is busy)."""
        now = time.monotonic()
        late = sum(not result.done() and now >= self.deadlines[key] for key, result in self.results.items())
        return late * 2 <= len(self.results)  # one node alone is never read around: its drives hold the parity


class NodeReads:
    """Reads of bytes ``[start, end)`` of objects' data (segments, not inline), started at once: ``results``
    holds each range's bytes as a future, in order, failing with what that range alone failed with
    (``InsufficientFragments``, a layout this client cannot read); ``cancel`` drops whatever is left."""

    def __init__(self, ctx: ClientContext, ranges: list[tuple[ObjectData, int, int]]) -> None:
        self._groups = _Groups(ctx)
        plans: list[list[_Piece] | Exception] = []
        for data, start, end in ranges:
            try:
                plans.append(_plan(ctx, self._groups, data, start, end))
            except (ApolloError, ValueError) as exc:
                plans.append(exc)
        self._groups.send()
        self.results: list[asyncio.Future[bytes]] = [
            _failed(plan) if isinstance(plan, Exception) else asyncio.ensure_future(_assemble(self._groups, plan))
            for plan in plans
        ]

    def cancel(self) -> None:
        for future in [*self.results, *self._groups.results.values()]:
            if future.done() and not future.cancelled():
                future.exception()  # seen: a range nobody waits for any more logs no "never retrieved"
            future.cancel()


def _failed(exc: Exception) -> asyncio.Future[bytes]:
    future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


def read_bytes(data: ObjectData, start: int, end: int) -> int:
    """What reading a range costs in bytes: its shard reads' answers (whole cells, each checked by its CRC32C,
    of every data shard the first and last stripes need, or the parts of cells a small range needs), as
    ``SegmentReader.shard_reads`` will ask for them."""
    if data.inline is not None:
        return 0
    total = 0
    for segment, lo, hi in _overlaps(data, start, end):
        s0, s1 = stripes_of(segment, lo, hi)
        parts = cell_parts(segment, s0, s1, lo, hi)
        if parts is not None:
            total += sum(b - a for a, b in parts)
            continue
        cells = sum(segment.cell_payload(stripe) for stripe in range(s0, s1))
        total += len(needed_shards(segment, s0, s1, lo, hi)) * cells
    return total


def _overlaps(data: ObjectData, start: int, end: int) -> list[tuple[SegmentLayout, int, int]]:
    """(segment, lo, hi): the bytes ``[lo, hi)`` of each segment that ``[start, end)`` of the object covers."""
    overlaps = []
    for segment in data.segments:
        lo = max(start, segment.offset) - segment.offset
        hi = min(end, segment.offset + segment.length) - segment.offset
        if lo < hi:
            overlaps.append((segment, lo, hi))
    return overlaps


def _plan(ctx: ClientContext, groups: _Groups, data: ObjectData, start: int, end: int) -> list[_Piece]:
    invariant(data.inline is None, "inline data comes with its lookup: there is nothing to read")
    pieces = []
    for segment, lo, hi in _overlaps(data, start, end):
        reader = SegmentReader(ctx, segment)
        s0, s1 = stripes_of(segment, lo, hi)
        reads = reader.shard_reads(s0, s1, lo, hi)
        if ctx.latency.read_around([read.drive_id for read in reads], segment.drives, segment.scheme.k):
            pieces.append(_Piece(reader, s0, s1, lo, hi, None))  # around the slow drive, not in its node's batch
            continue
        pieces.append(_Piece(reader, s0, s1, lo, hi, [groups.add(read) for read in reads]))
    return pieces


async def _assemble(groups: _Groups, pieces: list[_Piece]) -> bytes:
    parts: list[bytes | memoryview] = []
    for piece in pieces:
        fetched = None if piece.slots is None else await groups.outcomes(piece.slots)
        # None: read here, hedged around the slow drives
        parts.extend(await piece.reader.read_batch(piece.s0, piece.s1, piece.lo, piece.hi, fetched))
    return b"".join(parts)
