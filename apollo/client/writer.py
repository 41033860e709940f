"""Streaming erasure-coded writer: bytes in, committed-ready segments out.

The body is cut into batches of whole stripes. While batch N is hashed
(MD5 + requested checksums) and encoded on worker threads and its cell
records are appended to the k+m shard files, batch N+1 is being received:
a two-deep pipeline with memory bounded by about three batches per upload.
Segments are recorded as pending in the metadata store before their first
byte is written, so a crash at any point leaves only collectable garbage.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import crc32c

from apollo import faults, limits
from apollo.client.context import ClientContext, Damage
from apollo.client.replace import rebuild_lost
from apollo.errors import InsufficientFragments, InsufficientStorage
from apollo.proto.layout import ObjectData, Scheme, SegmentLayout, batch_bytes, segment_bytes_max
from apollo.proto.placement import FailureDomains, rank, spares
from apollo.storage.ec import codec_for
from apollo.storage.node import ShardSink
from apollo.storage.shardfile import encode_footer, encode_header

log = logging.getLogger(__name__)
_U32 = struct.Struct("<I")
_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)
SPARES_TRIED = 3  # per shard that could not be opened where placement put it


@dataclass
class WriteResult:
    size: int
    etag: str  # the MD5 in hex, or (``md5=False``) a digest of the cells' CRC32Cs and "-<segments>"
    data: ObjectData
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64


@dataclass
class _OpenSegment:
    layout: SegmentLayout
    sinks: list[ShardSink | None]
    length: int = 0
    stripes: int = 0
    lost: list[str] = field(default_factory=list)  # why each missing shard is missing, for the error message


def write_quorum(scheme: Scheme, requested: int | None = None) -> int:
    """Shards that must be durable before a write is acknowledged: ``requested``, else k+1 (or all if narrower).

    Never below k+1: a write acknowledged with only k shards would be lost with the next drive.
    :raises ValueError: a requested quorum outside [k+1, k+m].
    """
    floor = min(scheme.width, scheme.k + 1)
    if requested is None:
        return floor
    if not floor <= requested <= scheme.width:
        raise ValueError(f"write quorum of {scheme} must be between {floor} and {scheme.width}, not {requested}")
    return requested


class ObjectWriter:
    """Writes one object (or part); call :meth:`write` once."""

    def __init__(
        self,
        ctx: ClientContext,
        scheme: Scheme,
        cell_size: int,
        identity: dict,
        inline_max: int = limits.inline_object_bytes_max,
        checksummers: dict | None = None,
        quorum: int | None = None,
        md5: bool = True,
        txn: tuple[str, str] | None = None,
    ) -> None:
        """``md5=False`` skips the slowest step of a write (MD5 runs at ~0.7 GB/s a core) for callers that
        need no S3 ETag of the content: the ETag is then a digest of the CRC32C every cell gets anyway.
        ``txn``: (bucket, transaction id) a staged put writes for: its segments end with the transaction."""
        self.ctx = ctx
        self.scheme = scheme
        self.cell_size = cell_size
        self.identity = identity  # bucket, key, upload: written into every shard header
        self.inline_max = inline_max
        self.checksummers = checksummers or {}
        self.quorum = write_quorum(scheme, quorum)
        self.codec = codec_for(scheme)
        self.batch_bytes = batch_bytes(scheme.k * cell_size)
        self.segment_bytes = segment_bytes_max(scheme.k * cell_size)
        self._md5 = hashlib.md5() if md5 else None
        self._cell_crcs = hashlib.md5()  # of every cell's CRC32C, in stripe order: the ETag without ``md5``
        self._segments: list[SegmentLayout] = []
        self._current: _OpenSegment | None = None
        self._size = 0
        self._allocation = {} if txn is None else {"txn": list(txn)}

    async def write(self, chunks: AsyncIterator[bytes]) -> WriteResult:
        try:
            return await self._write(chunks)
        except BaseException:
            await self._abandon()
            raise

    async def _write(self, chunks: AsyncIterator[bytes | memoryview]) -> WriteResult:
        pending: list[bytes | memoryview] = []
        pending_bytes = 0
        in_flight: asyncio.Task | None = None
        async for chunk in chunks:
            if not isinstance(chunk, bytes):
                chunk = memoryview(chunk).cast("B")  # len() in bytes, whatever the buffer's item type
                if not isinstance(chunk.obj, bytes):
                    chunk = bytes(chunk)  # a producer may refill its buffer once it has handed it over
            if not chunk:
                continue
            pending.append(chunk)
            pending_bytes += len(chunk)
            while pending_bytes >= self.batch_bytes:
                batch = self._take_batch(pending)
                pending_bytes -= len(batch)
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.ensure_future(self._process(batch))
        if in_flight is not None:
            await in_flight
        tail = b"".join(pending)
        if not self._segments and self._current is None and len(tail) <= self.inline_max:
            self._md5 = self._md5 or hashlib.md5()  # a small object's MD5 costs next to nothing
            await self.ctx.cpu_run(self._hash, tail)
            self._size = len(tail)
            return self._result(ObjectData(size=len(tail), inline=tail))
        if tail:
            await self._process(tail)
        await self._finish_segment()
        return self._result(ObjectData(size=self._size, segments=list(self._segments)))

    def _take_batch(self, pending: list[bytes | memoryview]) -> bytes | memoryview:
        """The first ``batch_bytes`` of ``pending`` (bytes, or views of bytes), removed from it: a view
        when one chunk holds them (a caller's bytes are encoded where they lie), else a joined copy."""
        first = pending[0]
        if len(first) >= self.batch_bytes:
            view = memoryview(first)
            if len(view) > self.batch_bytes:
                pending[0] = view[self.batch_bytes :]
            else:
                pending.pop(0)
            return view[: self.batch_bytes]
        joined = memoryview(b"".join(pending))
        pending[:] = [joined[self.batch_bytes :]] if len(joined) > self.batch_bytes else []
        return joined[: self.batch_bytes]

    def _result(self, data: ObjectData) -> WriteResult:
        sums = {name: c.b64digest() for name, c in self.checksummers.items()}
        # Without MD5 the ETag ends in "-<segments>", which S3 tools read as "not an MD5 of the content".
        crcs_etag = f"{self._cell_crcs.hexdigest()}-{len(data.segments)}"
        etag = self._md5.hexdigest() if self._md5 is not None else crcs_etag
        return WriteResult(self._size, etag, data, sums)

    def _hash(self, data: bytes) -> None:
        if self._md5 is not None:
            self._md5.update(data)
        for checksummer in self.checksummers.values():
            checksummer.update(data)

    def _encode(self, data: bytes | memoryview) -> list[bytes]:
        """Per shard, the cell records (fragment, CRC32C) of every stripe in ``data``, joined into one
        buffer here on a worker thread rather than on the event loop that sends them."""
        stripe = self.scheme.k * self.cell_size
        records: list[list[bytes]] = [[] for _ in range(self.scheme.width)]
        crcs: list[bytes] = []
        view = memoryview(data)
        for start in range(0, len(data), stripe):
            for index, fragment in enumerate(self.codec.encode(view[start : start + stripe])):
                crcs.append(_U32.pack(crc32c.crc32c(fragment)))
                records[index] += (fragment, crcs[-1])
        self._cell_crcs.update(b"".join(crcs))
        return [b"".join(shard) for shard in records]

    async def _process(self, batch: bytes | memoryview) -> None:
        segment = self._current or await self._open_segment()
        _, buffers = await asyncio.gather(self.ctx.cpu_run(self._hash, batch), self.ctx.cpu_run(self._encode, batch))
        await asyncio.gather(*(self._append(segment, i, [buffers[i]]) for i in range(self.scheme.width)))
        self._require_quorum(segment, self.scheme.k)  # lost shards are rebuilt at the end while k remain
        segment.length += len(batch)
        segment.stripes += -(-len(batch) // (self.scheme.k * self.cell_size))
        self._size += len(batch)
        faults.point("client.write.after_batch")
        if segment.length >= self.segment_bytes:
            await self._finish_segment()

    async def _open_segment(self) -> _OpenSegment:
        """Allocate a segment and open its k+m shards; a shard whose drive refuses goes to a spare drive.

        Opening before any byte is sent is the last moment a shard can still move: a drive the
        placement could not avoid (its node died moments ago, it just filled up) costs a spare,
        not a lost shard, and the write keeps its full redundancy.
        """
        layout = await self.ctx.meta.allocate_segment(self.scheme, self.cell_size, self._size, **self._allocation)
        segment = self._current = _OpenSegment(layout, [None] * self.scheme.width)
        self._segments.append(layout)  # from here on, failures must abandon it (and abort its open shards)
        failures = await asyncio.gather(*(self._open_shard(segment, i, layout.drives[i])
                                          for i in range(self.scheme.width)))  # fmt: skip
        moved = False
        for index, failure in enumerate(failures):
            if failure is None:
                continue
            for spare in self._spares(segment.layout, index):
                if await self._open_shard(segment, index, spare) is None:
                    drives = list(segment.layout.drives)
                    drives[index] = spare
                    segment.layout = replace(segment.layout, drives=tuple(drives))
                    moved = True
                    break
            else:
                await self._lose(segment, index, failure)
        if moved:
            self._segments[-1] = segment.layout
            await self.ctx.meta.repoint_segment(segment.layout)
        self._require_quorum(segment)
        return segment

    def _spares(self, layout: SegmentLayout, index: int, avoid: frozenset[str] = frozenset()) -> list[str]:
        """Writable drives that may take shard ``index`` instead, best first (``placement.spares``: the spread
        rule first, the refusing drive's own domain last, over-limit domains only rather than lose it).
        ``avoid``: drives that failed this segment already, though no longer in its layout."""
        candidates, writable = self.ctx.placement.candidates, self.ctx.placement.writable
        ranked = [c.drive_id for c in rank(layout.pg, candidates) if c.drive_id in writable and c.drive_id not in avoid]
        return spares(layout.drives, index, FailureDomains.of(candidates), ranked, SPARES_TRIED)

    async def _open_shard(self, segment: _OpenSegment, index: int, drive: str) -> str | None:
        """Open shard ``index`` on ``drive``; None on success, else why it could not be opened."""
        if drive not in self.ctx.placement.writable:  # a filler: placement had too few writable drives
            return "drive not writable (offline or below its free-space reserve)"
        layout = segment.layout
        header = encode_header({
            **self.identity, "segment_id": layout.segment_id, "shard": index, "scheme": str(self.scheme),
            "cell_size": self.cell_size, "pg": layout.pg, "offset": layout.offset, "drive": drive,
        })  # fmt: skip
        try:
            segment.sinks[index] = await self.ctx.node(drive).open_shard(drive, layout.shard(index), header)
        except Exception as exc:
            self._leave_if_full(drive, exc)
            return f"open failed on {drive}: {exc}"
        return None

    async def _append(self, segment: _OpenSegment, index: int, buffers: list[bytes]) -> None:
        sink = segment.sinks[index]
        if sink is None:
            return
        try:
            await sink.append(buffers)
        except Exception as exc:
            await self._failed(segment, index, "write", exc)

    async def _failed(self, segment: _OpenSegment, index: int, step: str, exc: Exception) -> None:
        """A shard's write or finish raised: it is lost to this write, and reported for repair."""
        self._leave_if_full(segment.layout.drives[index], exc)
        await self._lose(segment, index, f"{step} failed: {exc}")

    def _leave_if_full(self, drive: str, exc: Exception) -> None:
        """A full drive leaves placement at once: the free-space probe runs only every few seconds,
        and a burst of writes can fill a drive before it notices."""
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_SPACE and drive in self.ctx.placement.writable:
            log.warning("drive %s is full: no new shards on it until a probe finds free space again", drive)
            self.ctx.placement.leave_out(drive)

    async def _lose(self, segment: _OpenSegment, index: int, reason: str) -> None:
        sink, segment.sinks[index] = segment.sinks[index], None
        segment.lost.append(f"shard {index} on drive {segment.layout.drives[index]}: {reason}")
        if sink is not None:
            try:
                await sink.abort()
            except Exception:
                log.exception("abort of shard %d failed", index)
        layout = segment.layout
        await self.ctx.report(Damage(layout.segment_id, index, layout.drives[index], reason))

    def _require_quorum(self, segment: _OpenSegment, need: int | None = None) -> None:
        """``need`` shards still being written (the write quorum unless given), else the write fails."""
        alive, need = sum(sink is not None for sink in segment.sinks), need or self.quorum
        if alive < need:
            raise InsufficientStorage(
                f"only {alive} of {self.scheme.width} shards writable, need {need} ({'; '.join(segment.lost)})"
            )

    async def _finish_segment(self) -> None:
        segment, self._current = self._current, None
        if segment is None:
            return
        footer = encode_footer({"segment_id": segment.layout.segment_id, "length": segment.length,
                                "stripes": segment.stripes})  # fmt: skip

        async def finish_one(index: int) -> None:
            sink = segment.sinks[index]
            if sink is None:
                return
            try:
                await sink.finish(footer)
            except Exception as exc:
                await self._failed(segment, index, "finish", exc)

        await asyncio.gather(*(finish_one(i) for i in range(self.scheme.width)))
        segment.layout = replace(segment.layout, length=segment.length)
        lost = [i for i, sink in enumerate(segment.sinks) if sink is None]
        if lost and len(lost) <= self.scheme.m:
            await self._replace_lost(segment, lost, footer)
        self._require_quorum(segment)
        self._segments[-1] = segment.layout

    async def _replace_lost(self, segment: _OpenSegment, lost: list[int], footer: bytes) -> None:
        """Rebuild the shards this write lost on spare drives, from the finished ones (``apollo.client.replace``),
        and point the pending segment at them; a shard no spare took stays lost (queued for repair)."""
        failed = frozenset(segment.layout.drives[i] for i in lost)

        async def open_spare(index: int) -> tuple[str, ShardSink] | None:
            for spare in self._spares(segment.layout, index, failed):
                if await self._open_shard(segment, index, spare) is None:
                    drives = list(segment.layout.drives)
                    drives[index] = spare
                    segment.layout = replace(segment.layout, drives=tuple(drives))
                    return spare, segment.sinks[index]
            return None

        try:
            placed = await rebuild_lost(self.ctx, segment.layout, lost, open_spare, footer)
        except InsufficientFragments as exc:
            log.warning("lost shards of segment %s not rebuilt: %s", segment.layout.segment_id, exc)
            placed = {}
        drives = list(segment.layout.drives)
        for index in lost:
            if index not in placed:  # opened on a spare whose stream then failed: still lost
                segment.sinks[index] = None
                drives[index] = self._segments[-1].drives[index]
        segment.layout = replace(segment.layout, drives=tuple(drives))
        if placed:
            log.info("segment %s: shards %s rebuilt on spares %s", segment.layout.segment_id, sorted(placed),
                     sorted(placed.values()))  # fmt: skip
            await self.ctx.meta.repoint_segment(replace(self._segments[-1], drives=segment.layout.drives))

    async def _abandon(self) -> None:
        """Remove temp files now; finished shards are collected by GC right away."""
        segment, self._current = self._current, None
        if segment is not None:
            for sink in segment.sinks:
                if sink is not None:
                    try:
                        await sink.abort()
                    except Exception:
                        log.exception("abort failed")
        if self._segments:
            try:
                await self.ctx.meta.abandon_segments([s.segment_id for s in self._segments], time.time())
            except Exception:
                log.exception("could not mark abandoned segments for GC")
