"""The storage-node seam: what clients need from whatever holds the drives.

Call sequence for a write (one per shard of a segment)::

    sink = await node.open_shard(drive_id, shard, header)   # 1) create temp file, write header
    await sink.append(records)                               # 2) ... cell records, in stripe order
    await sink.finish(footer)                                # 3) fsync + rename: now durable
    # or await sink.abort() on any failure: the temp file is removed

Reads are positional (``read``) so a range GET touches only the cells it needs; ``read_many``
takes a batch of them (a remote node in one request).
Listing (``list_groups``, then ``list_shards`` per group) pages through a drive's
shard files for the orphan sweep, which needs no metadata to find them.
``LocalStorageNode`` serves drives of this process (file I/O on threads, no
loopback HTTP); a remote implementation speaks the same interface over the
network in cluster mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from apollo import ids, metrics
from apollo.errors import ChecksumMismatch, DriveError
from apollo.proto.layout import ShardRef
from apollo.storage.drive import Drive, ShardFileWriter
from apollo.storage.sendfile import send_owned
from apollo.storage.shardfile import open_record

log = logging.getLogger(__name__)
SENDERS_MAX = 64  # shard sends in progress at once; more wait for a thread
LIST_LIMIT_MAX = 1000  # groups, or segments, of one listing page: bounds a node's answer and what its caller holds
_GROUP_DIR = re.compile(r"[0-9a-f]+")
# Files Apollo writes (segment id, shard index below 32); anything else is left alone.
_SHARD_FILE = re.compile(rf"({ids.SEGMENT_ID.pattern})\.([0-9]|[12][0-9]|3[01])")


class ShardRead(NamedTuple):
    """One positional read of a batch (``read_many``).

    With ``part``, the read is of one cell record, and what comes back is only its bytes ``[lo, hi)``, once the
    node has checked the record's CRC32C: 4 KiB of a 256 KiB cell costs a disk read of the cell, not a network
    transfer and a buffer of it (``cut``)."""

    drive_id: str
    shard: ShardRef
    offset: int
    length: int
    part: tuple[int, int] | None = None

    @property
    def answer_bytes(self) -> int:
        """The bytes this read answers with: what a batch's byte limits count."""
        return self.length if self.part is None else self.part[1] - self.part[0]


def cut(read: ShardRead, record: ReadOutcome) -> ReadOutcome:
    """A read's outcome as it is sent back: a ``part`` read's bytes of its record, a copy, once the whole
    record came off the drive and its CRC32C holds (else ``ChecksumMismatch``); any other outcome as it is."""
    if read.part is None or isinstance(record, Exception):
        return record
    if len(record) != read.length:
        return ChecksumMismatch(f"short read: {len(record)} of the {read.length} bytes of a cell record")
    try:
        open_record(record)
    except ChecksumMismatch as exc:
        return exc
    lo, hi = read.part
    return bytes(memoryview(record)[lo:hi])


ReadOutcome = bytes | bytearray | memoryview | Exception  # a read's bytes (short past the end), or its own failure


class StoredShard(NamedTuple):
    """A committed shard file as listed. ``age_s`` is measured on the node's own clock, so clock skew
    between hosts cannot make a fresh file look old to whoever decides to delete it."""

    segment_id: str
    index: int
    age_s: float
    size: int


def check_listing(pg: int, limit: int, lowest_pg: int = 0) -> None:
    """Checks listing arguments where they are given, so a remote node refuses them as a local one does.

    :raises ValueError: a placement group below ``lowest_pg`` (-1 for the cursor before the first group),
        a limit outside 1..``LIST_LIMIT_MAX``.
    """
    if pg < lowest_pg:
        raise ValueError(f"bad placement group {pg}")
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"listing limit {limit} is outside 1..{LIST_LIMIT_MAX}")


class ShardSink(ABC):
    @abstractmethod
    async def append(self, records: list[bytes]) -> None: ...

    @abstractmethod
    async def finish(self, footer: bytes) -> None:
        """Make the shard durable; :raises OSError: when the drive fails."""

    @abstractmethod
    async def abort(self) -> None: ...


class StorageNode(ABC):
    @abstractmethod
    def drive_ids(self) -> list[str]: ...

    def serving(self) -> dict[str, StorageNode]:
        """{drive id: this node} for every drive it serves now: the drive-to-node map the garbage
        collector and the orphan sweep take, as a cluster's node directory gives it."""
        return dict.fromkeys(self.drive_ids(), self)

    @abstractmethod
    async def open_shard(self, drive_id: str, shard: ShardRef, header: bytes) -> ShardSink:
        """:raises DriveError: unknown or unhealthy drive. :raises OSError: I/O failure."""

    @abstractmethod
    async def read(self, drive_id: str, shard: ShardRef, offset: int, length: int) -> bytes | bytearray:
        """A remote node's answer is the buffer it was received into. :raises FileNotFoundError: no such shard.
        :raises DriveError, OSError."""

    async def read_many(self, reads: list[ShardRead]) -> list[ReadOutcome]:
        """Each read's bytes (``cut``) or the exception it alone raised, in order: one read failing fails no other.
        This default reads them one by one, at once; a remote node takes the whole batch in one request."""
        records = await asyncio.gather(*(self.read(*read[:4]) for read in reads), return_exceptions=True)
        return [cut(read, record) for read, record in zip(reads, records, strict=True)]

    @abstractmethod
    async def read_tail(self, drive_id: str, shard: ShardRef, length: int) -> bytes | bytearray: ...

    @abstractmethod
    async def size(self, drive_id: str, shard: ShardRef) -> int:
        """Bytes in a committed shard file. :raises FileNotFoundError: no such shard."""

    @abstractmethod
    async def delete(self, drive_id: str, shard: ShardRef) -> bool: ...

    @abstractmethod
    async def list_groups(self, drive_id: str, after: int = -1, limit: int = LIST_LIMIT_MAX) -> list[int]:
        """Placement groups with a directory on the drive, ascending, the first ``limit`` after ``after``.

        :raises ValueError: bad arguments (``check_listing``). :raises DriveError, OSError.
        """

    @abstractmethod
    async def list_shards(self, drive_id: str, pg: int, after: str = "", limit: int = LIST_LIMIT_MAX
                          ) -> list[StoredShard]:  # fmt: skip
        """Shard files of the first ``limit`` segments after segment id ``after`` in group ``pg``, by segment id.

        A page ends on a whole segment (its few shard files on this drive), so the last segment id listed
        is the next page's cursor; a page of fewer than ``limit`` segments is the group's last (files
        deleted while it was being listed are left out, which can end a full page early).
        :raises ValueError: bad arguments (``check_listing``). :raises DriveError, OSError.
        """


def _groups_of(drive: Drive, after: int, limit: int) -> list[int]:
    groups = []
    with os.scandir(drive.shards_dir) as entries:
        for entry in entries:
            pg = int(entry.name, 16) if _GROUP_DIR.fullmatch(entry.name) else -1
            if pg > after and drive.group_dir(pg).name == entry.name and entry.is_dir():  # only names we write
                groups.append(pg)
    return heapq.nsmallest(limit, groups)


def _shards_of(drive: Drive, pg: int, after: str, limit: int) -> list[StoredShard]:
    try:
        names = os.listdir(drive.group_dir(pg))
    except FileNotFoundError:
        return []
    files = sorted((m[1], int(m[2])) for m in map(_SHARD_FILE.fullmatch, names) if m and m[1] > after)
    now = time.time()  # before any stat: a file written meanwhile gets a negative age, never too old a one
    listed: list[StoredShard] = []
    segments = 0
    for n, (segment_id, index) in enumerate(files):
        if n == 0 or files[n - 1][0] != segment_id:
            if segments == limit:
                break
            segments += 1
        try:
            stat = drive.shard_path(ShardRef(pg, segment_id, index)).stat()
        except FileNotFoundError:  # deleted meanwhile (GC, repair)
            continue
        listed.append(StoredShard(segment_id, index, now - stat.st_mtime, stat.st_size))
    return listed


class _LocalSink(ShardSink):
    def __init__(self, node: LocalStorageNode, drive_id: str, writer: ShardFileWriter) -> None:
        self._node = node
        self._drive_id = drive_id
        self._writer = writer

    async def append(self, records: list[bytes]) -> None:
        started = time.perf_counter()
        await self._node.run(self._writer.append, records)
        _count_io(self._drive_id, "write", sum(len(r) for r in records), started)

    async def finish(self, footer: bytes) -> None:
        started = time.perf_counter()
        await self._node.run(self._writer.finish, footer)  # the footer, fsync and rename: a drive's slowest step
        _count_io(self._drive_id, "write", len(footer), started)

    async def abort(self) -> None:
        await self._node.run(self._writer.abort)


class LocalStorageNode(StorageNode):
    """Drives of this process; blocking file I/O runs on a bounded thread pool."""

    def __init__(self, drives: list[Drive], threads: int = 16) -> None:
        self.drives = {drive.drive_id: drive for drive in drives}
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="drive-io")
        # A send waits on the client's socket, not on the drive: threads of its own, so clients that
        # stop reading (each held up to its stall timeout) cannot take the threads disk I/O needs.
        self._senders = ThreadPoolExecutor(max_workers=SENDERS_MAX, thread_name_prefix="shard-send")

    @classmethod
    def open(cls, roots: list[Path], deployment_id: str) -> LocalStorageNode:
        return cls([Drive(root, deployment_id) for root in roots])

    def drive_ids(self) -> list[str]:
        return list(self.drives)

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _drive(self, drive_id: str) -> Drive:
        drive = self.drives.get(drive_id)
        if drive is None:
            raise DriveError(f"drive {drive_id} is not attached to this node")
        return drive

    async def open_shard(self, drive_id: str, shard: ShardRef, header: bytes) -> ShardSink:
        writer = await self.run(self._drive(drive_id).open_writer, shard, header)
        return _LocalSink(self, drive_id, writer)

    async def read(self, drive_id: str, shard: ShardRef, offset: int, length: int) -> bytes:
        started = time.perf_counter()
        data = await self.run(self._drive(drive_id).read, shard, offset, length)
        _count_io(drive_id, "read", len(data), started)
        return data

    async def read_many(self, reads: list[ShardRead]) -> list[ReadOutcome]:
        """One hop to a drive thread per drive, the drives at once: a batch's reads are small, and a hop each
        would cost more than the read; one drive's reads never wait behind another's."""
        by_drive: dict[str, list[int]] = {}
        for number, read in enumerate(reads):
            by_drive.setdefault(read.drive_id, []).append(number)
        outcomes: list[ReadOutcome] = [b""] * len(reads)
        done = await asyncio.gather(*(self.run(self._read_all, [reads[n] for n in numbers])
                                      for numbers in by_drive.values()))  # fmt: skip
        for numbers, results in zip(by_drive.values(), done, strict=True):
            for number, result in zip(numbers, results, strict=True):
                outcomes[number] = result
        return outcomes

    def _read_all(self, reads: list[ShardRead]) -> list[ReadOutcome]:
        outcomes: list[ReadOutcome] = []
        for read in reads:
            started = time.perf_counter()
            try:
                data = self._drive(read.drive_id).read(read.shard, read.offset, read.length)
            except (OSError, DriveError, ValueError) as exc:
                outcomes.append(exc)
                continue
            _count_io(read.drive_id, "read", len(data), started)
            outcomes.append(cut(read, data))  # a part's record is dropped here: a drive's reads hold parts only
        return outcomes

    async def read_tail(self, drive_id: str, shard: ShardRef, length: int) -> bytes:
        started = time.perf_counter()
        data = await self.run(self._drive(drive_id).read_tail, shard, length)
        _count_io(drive_id, "read", len(data), started)
        return data

    @contextlib.asynccontextmanager
    async def opened(self, drive_id: str, shard: ShardRef) -> AsyncIterator[tuple[int, int]]:
        """``(fd, size)`` of a committed shard file, to send a range of it (``send``) and close after.

        :raises FileNotFoundError: no such shard. :raises DriveError, OSError."""
        fd, size = await self.run(self._drive(drive_id).open_for_sending, shard)
        try:
            yield fd, size
        finally:
            os.close(fd)

    async def send(self, drive_id: str, fd: int, offset: int, count: int, sock_fd: int, stall_s: float) -> None:
        """``count`` bytes of an ``opened`` shard from ``offset`` to a socket, on a send thread. Its time counts
        as the drive's, though a slow reader makes it longer: a send is a read the kernel does for us."""
        started = time.perf_counter()
        await send_owned(self._senders, sock_fd, fd, offset, count, stall_s)
        _count_io(drive_id, "read", count, started)

    async def size(self, drive_id: str, shard: ShardRef) -> int:
        return await self.run(self._drive(drive_id).size, shard)

    async def delete(self, drive_id: str, shard: ShardRef) -> bool:
        return await self.run(self._drive(drive_id).delete, shard)

    async def list_groups(self, drive_id: str, after: int = -1, limit: int = LIST_LIMIT_MAX) -> list[int]:
        check_listing(after, limit, lowest_pg=-1)
        return await self.run(_groups_of, self._drive(drive_id), after, limit)

    async def list_shards(self, drive_id: str, pg: int, after: str = "", limit: int = LIST_LIMIT_MAX
                          ) -> list[StoredShard]:  # fmt: skip
        check_listing(pg, limit)
        return await self.run(_shards_of, self._drive(drive_id), pg, after, limit)

    def attach(self, drive: Drive) -> None:
        """Serve a drive added while running (``apollo admin drive add|replace``)."""
        self.drives[drive.drive_id] = drive

    def detach(self, drive_id: str) -> bool:
        """Stop serving a drive whose directory no longer holds it; reads of it then fail over to parity."""
        return self.drives.pop(drive_id, None) is not None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._senders.shutdown(wait=True)


def _count_io(drive_id: str, op: str, size: int, started: float) -> None:
    """One read or write of a drive, for its I/O metrics (rates, sizes and latency per drive)."""
    metrics.drive_io_bytes.labels(drive_id, op).inc(size)
    metrics.drive_io_seconds.labels(drive_id, op).observe(time.perf_counter() - started)
