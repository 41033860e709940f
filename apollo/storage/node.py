"""The storage-node seam: what clients need from whatever holds the drives.

Call sequence for a write (one per shard of a segment)::

    sink = await node.open_shard(drive_id, shard, header)   # 1) create temp file, write header
    await sink.append(records)                               # 2) ... cell records, in stripe order
    await sink.finish(footer)                                # 3) fsync + rename: now durable
    # or await sink.abort() on any failure: the temp file is removed

Reads are positional (``read``) so a range GET touches only the cells it needs.
``LocalStorageNode`` serves drives of this process (file I/O on threads, no
loopback HTTP); a remote implementation speaks the same interface over the
network in cluster mode.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from apollo.errors import DriveError
from apollo.storage.drive import Drive, ShardFileWriter
from apollo.types import ShardRef

log = logging.getLogger(__name__)


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

    @abstractmethod
    async def open_shard(self, drive_id: str, shard: ShardRef, header: bytes) -> ShardSink:
        """:raises DriveError: unknown or unhealthy drive. :raises OSError: I/O failure."""

    @abstractmethod
    async def read(self, drive_id: str, shard: ShardRef, offset: int, length: int) -> bytes:
        """:raises FileNotFoundError: no such shard. :raises DriveError, OSError."""

    @abstractmethod
    async def read_tail(self, drive_id: str, shard: ShardRef, length: int) -> bytes: ...

    @abstractmethod
    async def size(self, drive_id: str, shard: ShardRef) -> int:
        """Bytes in a committed shard file. :raises FileNotFoundError: no such shard."""

    @abstractmethod
    async def delete(self, drive_id: str, shard: ShardRef) -> bool: ...


class _LocalSink(ShardSink):
    def __init__(self, node: LocalStorageNode, writer: ShardFileWriter) -> None:
        self._node = node
        self._writer = writer

    async def append(self, records: list[bytes]) -> None:
        await self._node.run(self._writer.append, records)

    async def finish(self, footer: bytes) -> None:
        await self._node.run(self._writer.finish, footer)

    async def abort(self) -> None:
        await self._node.run(self._writer.abort)


class LocalStorageNode(StorageNode):
    """Drives of this process; blocking file I/O runs on a bounded thread pool."""

    def __init__(self, drives: list[Drive], threads: int = 16) -> None:
        self.drives = {drive.drive_id: drive for drive in drives}
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="drive-io")

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
        return _LocalSink(self, writer)

    async def read(self, drive_id: str, shard: ShardRef, offset: int, length: int) -> bytes:
        return await self.run(self._drive(drive_id).read, shard, offset, length)

    async def read_tail(self, drive_id: str, shard: ShardRef, length: int) -> bytes:
        return await self.run(self._drive(drive_id).read_tail, shard, length)

    async def size(self, drive_id: str, shard: ShardRef) -> int:
        return await self.run(self._drive(drive_id).size, shard)

    async def delete(self, drive_id: str, shard: ShardRef) -> bool:
        return await self.run(self._drive(drive_id).delete, shard)

    def attach(self, drive: Drive) -> None:
        """Serve a drive added while running (``apollo admin drive add|replace``)."""
        self.drives[drive.drive_id] = drive

    def detach(self, drive_id: str) -> bool:
        """Stop serving a drive whose directory no longer holds it; reads of it then fail over to parity."""
        return self.drives.pop(drive_id, None) is not None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
