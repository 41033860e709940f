"""``Client``: the native client for blocking code (a training script, a DataLoader worker, a notebook).

It runs an ``AsyncClient`` on an event loop of its own, on a thread of its own, and waits for each call;
``run`` hands a coroutine of many calls (``asyncio.gather``) to that loop at once. Results that stream
(``stream``, ``get_batch``) cross from the loop's thread a batch at a time.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

from apollo import errors
from apollo.client import batch
from apollo.client.batch import BatchItem, BatchResult
from apollo.client.files import PutStream, VersionReader
from apollo.client.native import READ_CHUNK_BYTES, AsyncClient, Body, ObjectInfo
from apollo.client.transaction import SyncTransaction
from apollo.proto.records import Snapshot

T = TypeVar("T")


class Client:
    """``AsyncClient`` for blocking code: its event loop runs on a thread of its own."""

    def __init__(self, meta_url: str, access_key: str, secret_key: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="apollo-client", daemon=True)
        self._thread.start()
        self._async = AsyncClient(meta_url, access_key, secret_key, **options)
        try:
            self._run(self._async.connect())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def run(self, work: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """``work(async_client)``, awaited on this client's loop: for callers that overlap many calls
        (``asyncio.gather``), where each blocking method here waits for one."""
        return self._run(work(self._async))

    def close(self) -> None:
        self._run(self._async.close())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_bucket(self, bucket: str) -> None:
        self._run(self._async.create_bucket(bucket))

    def delete_bucket(self, bucket: str) -> None:
        self._run(self._async.delete_bucket(bucket))

    def list_buckets(self) -> list[str]:
        """The names of the buckets this key may see, sorted."""
        return self._run(self._async.list_buckets())

    def put(self, bucket: str, key: str, body: Body, **options: Any) -> ObjectInfo:
        return self._run(self._async.put(bucket, key, body, **options))

    def open_writer(self, bucket: str, key: str, **options: Any) -> PutStream:
        """A writable binary file that is one streaming ``put`` (``options`` as ``put`` takes them), published
        at ``close()``; an exception in its ``with`` block, or ``abort()``, publishes nothing
        (``apollo.client.files``). :raises BucketNotFound: here, not in the middle of the caller's writes
        (a serializer would report the failed write as its own error)."""
        if not self._run(self._async.bucket_exists(bucket)):
            raise errors.BucketNotFound(f"bucket {bucket} does not exist")
        return PutStream(self._loop, lambda chunks: self._async.put(bucket, key, chunks, **options),
                         f"{bucket}/{key}")  # fmt: skip

    def open_reader(self, bucket: str, key: str, version_id: str | None = None,
                    buffer_bytes: int = 8 * 1024 * 1024) -> io.BufferedReader:  # fmt: skip
        """A seekable binary file of the latest version (or the one named), buffered ``buffer_bytes`` a read:
        looked up once, then read from that version's cells only (``apollo.client.files``).
        :raises ObjectNotFound, BucketNotFound:"""
        version = self._run(self._async._engine.head(bucket, key, version_id))
        if version is None or version.delete_marker:
            raise errors.ObjectNotFound(f"{bucket}/{key} does not exist")

        async def read_range(start: int, end: int) -> bytes:
            return b"".join([piece async for piece in self._async._engine.read(version, start, end)])

        return io.BufferedReader(VersionReader(self._run, read_range, version.size, f"{bucket}/{key}"), buffer_bytes)

    def get(self, bucket: str, key: str, start: int = 0, end: int | None = None, **options: Any) -> bytes:
        return self._run(self._async.get(bucket, key, start, end, **options))

    def get_into(self, bucket: str, key: str, buffer: bytearray | memoryview, start: int = 0, **options: Any) -> int:
        return self._run(self._async.get_into(bucket, key, buffer, start, **options))

    def stream(self, bucket: str, key: str, start: int = 0, end: int | None = None
               ) -> Iterator[bytes | memoryview]:  # fmt: skip
        """As ``AsyncClient.stream``; pieces cross from the loop's thread a batch at a time, not one by one."""
        pieces = self._async.stream(bucket, key, start, end)

        async def next_batch() -> list[bytes | memoryview]:
            batch, size = [], 0
            async for piece in pieces:
                batch.append(piece)
                size += len(piece)
                if size >= READ_CHUNK_BYTES:
                    break
            return batch

        while batch := self._run(next_batch()):
            yield from batch

    def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo | None:
        return self._run(self._async.head(bucket, key, version_id))

    def delete(self, bucket: str, key: str, version_id: str | None = None) -> None:
        self._run(self._async.delete(bucket, key, version_id))

    def rename(self, bucket: str, key: str, dest_key: str, **options: Any) -> ObjectInfo:
        return self._run(self._async.rename(bucket, key, dest_key, **options))

    def list(self, bucket: str, prefix: str = "", delimiter: str = "", snapshot: str | None = None
             ) -> list[ObjectInfo | str]:  # fmt: skip
        async def collect():
            return [entry async for entry in self._async.list(bucket, prefix, delimiter, snapshot=snapshot)]

        return self._run(collect())

    def snapshot(self, bucket: str, prefix: str = "") -> Snapshot:
        return self._run(self._async.snapshot(bucket, prefix))

    def transaction(self, bucket: str, **options: Any) -> SyncTransaction:
        """``AsyncClient.transaction``, with ``with``: committed on leaving normally, aborted on an exception."""
        return SyncTransaction(self._run, self._async.transaction(bucket, **options))

    def join_transaction(self, bucket: str, txn_id: str) -> SyncTransaction:
        return SyncTransaction(self._run, self._async.join_transaction(bucket, txn_id))

    def tar_members(self, bucket: str, key: str, version_id: str | None = None, snapshot: str | None = None
                    ) -> list[tuple[str, int, int]]:  # fmt: skip
        return self._run(self._async.tar_members(bucket, key, version_id, snapshot))

    def snapshots(self, bucket: str) -> list[Snapshot]:
        return self._run(self._async.snapshots(bucket))

    def delete_snapshot(self, bucket: str, snapshot_id: str) -> None:
        self._run(self._async.delete_snapshot(bucket, snapshot_id))

    def get_batch(self, items: Iterable[BatchItem | tuple], *, ordered: bool = True,
                  window: int = batch.WINDOW_DEFAULT) -> Iterator[BatchResult]:  # fmt: skip
        """``AsyncClient.get_batch``, blocking: results as they come, never the whole batch in memory."""
        results = self._async.get_batch(list(items), ordered=ordered, window=window)
        while True:
            try:
                yield self._run(results.__anext__())
            except StopAsyncIteration:
                return


def from_environment(**options: Any) -> Client:
    """A ``Client`` from ``APOLLO_META_URL``, ``APOLLO_ACCESS_KEY`` and ``APOLLO_SECRET_KEY`` (and, for a
    cluster with mutual TLS, ``APOLLO_CERTS``, which every client reads when not given ``certs``)."""
    return Client(os.environ["APOLLO_META_URL"], os.environ["APOLLO_ACCESS_KEY"], os.environ["APOLLO_SECRET_KEY"],
                  **options)  # fmt: skip
