"""Byte ranges of many objects read with one request per storage node, not one per shard.

A batch of a thousand 100 KiB samples on a 4+2 layout is a few thousand shard reads of a few dozen KiB:
one HTTP request each costs more than the bytes it moves. ``start_reads`` plans the healthy reads of every
range of a wave (the data shards its stripes need, as ``SegmentReader.shard_reads`` names them), groups
them by the node serving each drive and sends each node its whole group in one ``read_many``. Each range
is then assembled by its ``SegmentReader`` from the outcomes, CRC-checked cell by cell: a read that
failed, came up short or holds a bad cell sends that range down the ordinary degraded path (the other
shards read one by one, decoded from parity, the damage reported for repair), and only that range.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

from apollo.client.context import ClientContext
from apollo.client.reader import SegmentReader
from apollo.errors import ApolloError
from apollo.invariant import invariant
from apollo.proto.layout import ObjectData
from apollo.storage.node import ReadOutcome, ShardRead, StorageNode


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
    """Shard reads gathered per node, then sent: one ``read_many`` per node."""

    def __init__(self, ctx: ClientContext) -> None:
        self.ctx = ctx
        self.nodes: dict[int, tuple[StorageNode, list[ShardRead]]] = {}  # by id(node)
        self.unserved: list[ReadOutcome] = []  # drives no node serves: outcomes known without a request
        self.results: dict[int, asyncio.Future[list[ReadOutcome]]] = {}

    def add(self, read: ShardRead) -> tuple[int, int]:
        try:
            node = self.ctx.node(read.drive_id)
        except ApolloError as exc:
            self.unserved.append(exc)
            return -1, len(self.unserved) - 1
        _, reads = self.nodes.setdefault(id(node), (node, []))
        reads.append(read)
        return id(node), len(reads) - 1

    def send(self) -> None:
        for key, (node, reads) in self.nodes.items():
            self.results[key] = asyncio.ensure_future(_read_many(node, reads))

    async def outcomes(self, slots: list[tuple[int, int]]) -> list[ReadOutcome]:
        return [self.unserved[at] if key == -1 else (await self.results[key])[at] for key, at in slots]

    def cancel(self) -> None:
        for result in self.results.values():
            result.cancel()


async def _read_many(node: StorageNode, reads: list[ShardRead]) -> list[ReadOutcome]:
    try:
        return await node.read_many(reads)
    except (OSError, ApolloError) as exc:  # the whole request failed: every read of it did
        return [exc] * len(reads)


def start_reads(ctx: ClientContext, ranges: list[tuple[ObjectData, int, int]]) -> list[Awaitable[bytes]]:
    """Start reading bytes ``[start, end)`` of each object's data (segments, not inline); one awaitable of
    each range's bytes, in order, raising what that range alone failed with (``InsufficientFragments``)."""
    groups = _Groups(ctx)
    plans = [_plan(ctx, groups, data, start, end) for data, start, end in ranges]
    groups.send()
    assembled = [asyncio.ensure_future(_assemble(groups, pieces)) for pieces in plans]
    if assembled:  # the requests live as long as some range still waits on them
        gathered = asyncio.gather(*assembled, return_exceptions=True)
        gathered.add_done_callback(lambda _: groups.cancel())
    return assembled


def read_bytes(data: ObjectData, start: int, end: int) -> int:
    """The bytes a range costs to read: the whole cells it touches (each is read, and checked, whole); a
    small object's cells are small, the last stripe's being cut to its length."""
    if data.inline is not None:
        return 0
    total = 0
    for segment in data.segments:
        lo = max(start, segment.offset) - segment.offset
        hi = min(end, segment.offset + segment.length) - segment.offset
        for stripe in range(lo // segment.stripe_bytes, (hi - 1) // segment.stripe_bytes + 1 if lo < hi else 0):
            base, payload = stripe * segment.stripe_bytes, segment.cell_payload(stripe)
            first = (max(lo, base) - base) // payload
            last = (min(hi, base + segment.stripe_bytes) - 1 - base) // payload
            total += (last - first + 1) * payload
    return total


def _plan(ctx: ClientContext, groups: _Groups, data: ObjectData, start: int, end: int) -> list[_Piece]:
    invariant(data.inline is None, "inline data comes with its lookup: there is nothing to read")
    pieces = []
    for segment in data.segments:
        lo = max(start, segment.offset) - segment.offset
        hi = min(end, segment.offset + segment.length) - segment.offset
        if lo >= hi:
            continue
        reader = SegmentReader(ctx, segment)
        s0, s1 = lo // segment.stripe_bytes, (hi - 1) // segment.stripe_bytes + 1
        slots = [groups.add(read) for read in reader.shard_reads(s0, s1, lo, hi)]
        pieces.append(_Piece(reader, s0, s1, lo, hi, slots))
    return pieces


async def _assemble(groups: _Groups, pieces: list[_Piece]) -> bytes:
    parts: list[bytes | memoryview] = []
    for piece in pieces:
        fetched = await groups.outcomes(piece.slots)
        parts.extend(await piece.reader.read_batch(piece.s0, piece.s1, piece.lo, piece.hi, fetched))
    return b"".join(parts)
