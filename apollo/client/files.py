"""File objects over one object, for code that reads and writes files (``torch.save``/``torch.load``,
``pickle``, ``tarfile``, compressors): ``Client.open_writer`` and ``Client.open_reader``.

``PutStream`` is one streaming native put: the bytes go to the storage nodes as they come, through the same
erasure-coded writer as ``put`` (its shard streams in parallel, no multipart protocol). Nothing is visible
until ``close()``, which commits the put in one metadata transaction; ``abort()``, leaving a ``with`` block
by an exception, dropping the writer unclosed, or a process that dies publishes nothing, and the shards
written go to GC::

    with client.open_writer("ckpt", "step-100/model.pt") as f:   # the put starts on the client's loop
        f.write(...)         # buffered to CHUNK_BYTES, then handed to the put (blocks while QUEUED_CHUNKS wait)
    f.info                   # ObjectInfo of the version close() published

Memory: at most ``CHUNK_BYTES * (QUEUED_CHUNKS + 1)`` is held besides what the writer has in flight.

``VersionReader`` is a seekable reader of one version: its layout is looked up once at open, and every read
after that is a range read of that version's cells, with no metadata call, so an overwrite meanwhile (even
on an unversioned bucket, whose versions all have the id ``null``) never tears what is read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

CHUNK_BYTES = 8 * 1024 * 1024
QUEUED_CHUNKS = 4
_END = None


async def _run_put(start: Callable[[AsyncIterator[bytes]], Coroutine[Any, Any, Any]],
                   queue: asyncio.Queue[bytes | None], handle: dict[str, asyncio.Task]) -> Any:  # fmt: skip
    handle["task"] = asyncio.current_task()  # made on the loop's thread: only that thread runs or ends it
    return await start(_drained(queue))


async def _drained(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while (chunk := await queue.get()) is not _END:
        yield chunk


class PutStream(io.RawIOBase):
    """See the module's docstring. ``start`` makes the put coroutine from the chunks' async iterator."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 start: Callable[[AsyncIterator[bytes]], Coroutine[Any, Any, Any]], name: str) -> None:  # fmt: skip
        super().__init__()
        self.name = name
        self.info: Any = None  # the put's result, once closed
        self._loop = loop
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUED_CHUNKS)
        self._buffer = bytearray()
        # The put's task holds the queue and its own handle, not this file: a writer dropped unclosed is then
        # finalized (and aborted) at once, not whenever the cycle collector runs.
        self._handle: dict[str, asyncio.Task] = {}
        self._put = asyncio.run_coroutine_threadsafe(_run_put(start, self._queue, self._handle), loop)

    async def _cancel(self) -> None:
        """Cancel the put and wait until it has let go of what it wrote (its segments handed to GC)."""
        task = self._handle.get("task")
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError(f"{self.name}: write to a closed writer")
        view = memoryview(data).cast("B")
        self._buffer += view
        while len(self._buffer) >= CHUNK_BYTES:
            chunk = bytes(self._buffer[:CHUNK_BYTES])
            del self._buffer[:CHUNK_BYTES]
            self._hand(chunk)
        return len(view)

    def _hand(self, chunk: bytes | None) -> None:
        """Queue a chunk for the put, waiting while the queue is full; a put that failed (or was aborted) is
        raised here rather than waited on forever."""
        queued = asyncio.run_coroutine_threadsafe(self._queue.put(chunk), self._loop)
        concurrent.futures.wait([queued, self._put], return_when=concurrent.futures.FIRST_COMPLETED)
        if not queued.done():
            queued.cancel()
            self._put.result()  # raises the put's error
            raise RuntimeError(f"{self.name}: the put ended before its body did")  # a bug if reached

    def close(self) -> None:
        """Publish the object: the last bytes, then the put's commit. :raises: the put's error (nothing is
        published then)."""
        if self.closed:
            return
        try:
            if self._buffer:
                self._hand(bytes(self._buffer))
                self._buffer = bytearray()
            self._hand(_END)
            self.info = self._put.result()
        except BaseException:
            self.abort()
            raise
        finally:
            super().close()

    def abort(self) -> None:
        """Publish nothing: the put is cancelled, and has handed the shards it wrote to GC when this returns."""
        self._buffer = bytearray()
        if not self._put.done():
            asyncio.run_coroutine_threadsafe(self._cancel(), self._loop).result()
        with contextlib.suppress(concurrent.futures.CancelledError, Exception):  # the abort is the outcome
            self._put.result()
        super().close()

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        """A writer dropped unclosed was not finished: it publishes nothing (``IOBase`` would close it)."""
        if not self.closed:
            try:
                self.abort()
            except RuntimeError:  # the client's loop is gone (interpreter exit): the shards expire as pending
                pass


class VersionReader(io.RawIOBase):
    """See the module's docstring. ``read_range(start, end)`` runs on the client's loop and returns the bytes."""

    def __init__(self, run: Callable[[Coroutine[Any, Any, Any]], Any],
                 read_range: Callable[[int, int], Coroutine[Any, Any, bytes]], size: int,
                 name: str) -> None:  # fmt: skip
        super().__init__()
        self.name = name
        self.size = size
        self._run = run
        self._read_range = read_range
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"{self.name}: seek to {base + offset}, before the start")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self.size, self._position + len(view))
        if end <= self._position:
            return 0
        data = self._run(self._read_range(self._position, end))
        view[: len(data)] = data
        self._position += len(data)
        return len(data)
