"""Byte ranges of many objects read with one request per storage node, not one per shard.

A batch of a thousand 100 KiB samples on a 4+2 layout is a few thousand shard reads of a few dozen KiB:
one HTTP request each costs more than the bytes it moves. ``NodeReads`` plans the healthy reads of every
range of a wave (the data shards its stripes need, as ``SegmentReader.shard_reads`` names them), groups
them by the node serving each drive, the same read asked for by several ranges (members of one tar shard,
overlapping ranges) once, and sends each node its whole group in one ``read_many``. Each range is then
assembled by its ``SegmentReader`` from the outcomes, CRC-checked cell by cell: a read that failed, came up
short or holds a bad cell sends that range down the ordinary degraded path (the other shards read one by
one, decoded from parity, the damage reported for repair), and only that range.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from apollo.client.context import ClientContext
from apollo.client.reader import SegmentReader, cell_parts, needed_shards, stripes_of
from apollo.errors import ApolloError
from apollo.invariant import invariant
from apollo.proto.layout import ObjectData, SegmentLayout
from apollo.storage.node import ReadOutcome, ShardRead, StorageNode

_UNSERVED = -1  # the group of reads no node serves: their outcomes are known without a request


@dataclass
class _Piece:
    """The part of a range in one segment: its stripes ``[s0, s1)``, its bytes ``[lo, hi)`` of the segment,
    and where its shard reads are in their node's group."""

    reader: SegmentReader
    s0: int
    s1: int
    lo: int
    hi: int
    slots: list[tuple[int, int]]  # (node group, position in it), one per shard read


class _Groups:
    """Shard reads gathered per node, each distinct read once, then sent: one ``read_many`` per node."""

    def __init__(self, ctx: ClientContext) -> None:
        self.ctx = ctx
        self.nodes: dict[int, tuple[StorageNode, list[ShardRead]]] = {}  # by id(node)
        self.slots: dict[ShardRead, tuple[int, int]] = {}
        self.unserved: list[ReadOutcome] = []
        self.results: dict[int, asyncio.Future[list[ReadOutcome]]] = {}

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
        for key, (node, reads) in self.nodes.items():
            self.results[key] = asyncio.ensure_future(_read_many(node, reads))

    async def outcomes(self, slots: list[tuple[int, int]]) -> list[ReadOutcome]:
        return [self.unserved[at] if key == _UNSERVED else (await self.results[key])[at] for key, at in slots]


async def _read_many(node: StorageNode, reads: list[ShardRead]) -> list[ReadOutcome]:
    try:
        return await node.read_many(reads)
    except (OSError, ApolloError) as exc:  # the whole request failed: every read of it did
        return [exc] * len(reads)


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
        slots = [groups.add(read) for read in reader.shard_reads(s0, s1, lo, hi)]
        pieces.append(_Piece(reader, s0, s1, lo, hi, slots))
    return pieces


async def _assemble(groups: _Groups, pieces: list[_Piece]) -> bytes:
    parts: list[bytes | memoryview] = []
    for piece in pieces:
        fetched = await groups.outcomes(piece.slots)
        parts.extend(await piece.reader.read_batch(piece.s0, piece.s1, piece.lo, piece.hi, fetched))
    return b"".join(parts)
