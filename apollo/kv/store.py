"""``KVStore``: an inference server's KV cache tier on Apollo, values straight into the caller's buffers.

A namespace is a bucket the metadata service keeps within a byte budget and a TTL, evicting the least
recently read values (``apollo.meta.sql_kv``); values are ordinary objects, erasure-coded on the drives
(or inline when small), so any Apollo deployment serves them and S3 tools can see them. What this class
adds is the access pattern of a cache:

- a lookup of many keys is one metadata call (``kv_lookup``), which also ranks them as just read; each
  value found comes back pinned (``batch.Pinned``): its bytes are then read from the storage nodes with no
  further metadata call, and an eviction or overwrite meanwhile does not change them;
- ``get_into`` and ``get_many_into`` read straight into the caller's memory (a pinned host tensor, a
  ``bytearray``): no intermediate copy of the value;
- ``prefix_hits(keys)``: how many leading keys of a token sequence's chunk keys are cached, in one metadata
  call, which is what a prefix cache asks before every prefill.

A miss is ``None``, not an exception: a cache's callers branch on it. ::

    async with AsyncClient(meta_url, access_key, secret_key) as client:
        cache = KVStore(client, "kv-llama-8b")
        await cache.create(budget_bytes=64 << 30, ttl_s=3600)      # a new bucket (or its budget and TTL)
        await cache.put("chunk-0", tensor_bytes, metadata={"dtype": "bfloat16"})
        hits = await cache.prefix_hits(["chunk-0", "chunk-1"])      # 1
        size = await cache.get_into("chunk-0", pinned_buffer)       # None: not cached
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from apollo import errors
from apollo.client.batch import Pinned
from apollo.client.native import AsyncClient, Body
from apollo.proto.records import KVNamespace

READS_AT_ONCE = 8  # values read in parallel by ``get_many_into``: enough to keep every storage node busy


class KVStore:
    def __init__(self, client: AsyncClient, namespace: str) -> None:
        """``namespace``: the bucket that is (or :meth:`create` makes) the KV namespace."""
        self.client = client
        self.namespace = namespace

    async def create(self, budget_bytes: int, ttl_s: float | None = None) -> KVNamespace:
        """Make the namespace, a new bucket (``ttl_s`` None or 0: values never expire); or, if it exists, set its
        budget and TTL (None: keep it). :raises InvalidRequest: the bucket exists and is not a KV namespace; bounds."""
        try:
            return await self.client.create_kv_namespace(self.namespace, budget_bytes, ttl_s or 0)
        except errors.BucketExists:
            return await self.client.set_kv_namespace(self.namespace, budget_bytes, ttl_s)

    async def info(self) -> KVNamespace:
        """The budget, the TTL, and what the namespace holds now."""
        return await self.client.kv_namespace(self.namespace)

    # writes ----------------------------------------------------------------------------------

    async def put(self, key: str, value: Body, *, metadata: dict[str, str] | None = None) -> None:
        """Store ``value`` (bytes, a buffer such as a tensor's, a file or chunks) under ``key``, replacing what
        was there; less recently read values are evicted to make room, in the same metadata transaction.
        :raises EntityTooLarge: the value is larger than the namespace's whole budget."""
        await self.client.put(self.namespace, key, value, metadata=metadata)

    async def delete(self, key: str) -> None:
        """Remove the value (none: no error)."""
        await self.client.delete(self.namespace, key)

    # reads -----------------------------------------------------------------------------------

    async def lookup(self, keys: Sequence[str]) -> list[Pinned | None]:
        """Each key's value as it is now, pinned (its ``size`` and ``metadata`` known before reading), or
        None; one metadata call per 1,000 keys, and each found value counts as read now."""
        return await self.client.kv_lookup(self.namespace, keys)

    async def prefix_hits(self, keys: Sequence[str]) -> int:
        """How many of ``keys``, from the first, are cached: one metadata call per 1,000 keys."""
        return await self.client.kv_prefix_hits(self.namespace, keys)

    async def contains(self, key: str) -> bool:
        return await self.prefix_hits([key]) == 1

    async def read_into(self, value: Pinned, buffer: bytearray | memoryview) -> int:
        """The whole of a value :meth:`lookup` found, into ``buffer``; returns its size.

        :raises ValueError: ``buffer`` is smaller than the value (nothing is read)."""
        view = memoryview(buffer).cast("B")
        if len(view) < value.size:
            raise ValueError(f"{self.namespace}/{value.key} holds {value.size} bytes, the buffer {len(view)}")
        return await self.client.get_into(self.namespace, value.key, view[: value.size], pinned=value)

    async def get_into(self, key: str, buffer: bytearray | memoryview) -> int | None:
        """The value into ``buffer`` (e.g. a pinned host tensor's memory); its size, or None if not cached.

        :raises ValueError: ``buffer`` is smaller than the value."""
        (value,) = await self.lookup([key])
        return None if value is None else await self.read_into(value, buffer)

    async def get_many_into(self, keys: Sequence[str], buffers: Sequence[bytearray | memoryview]
                            ) -> list[int | None]:  # fmt: skip
        """:meth:`get_into` of each key into its buffer, for one lookup.

        :raises ValueError: a buffer smaller than its value (before any byte is read)."""
        if len(keys) != len(buffers):
            raise ValueError(f"{len(keys)} keys and {len(buffers)} buffers")
        values = await self.lookup(keys)
        for value, buffer in zip(values, buffers, strict=True):
            if value is not None and memoryview(buffer).nbytes < value.size:
                raise ValueError(f"{self.namespace}/{value.key} holds {value.size} bytes, its buffer "
                                 f"{memoryview(buffer).nbytes}")  # fmt: skip
        return await self.read_many_into(values, buffers)

    async def read_many_into(self, values: Sequence[Pinned | None], buffers: Sequence[bytearray | memoryview]
                             ) -> list[int | None]:  # fmt: skip
        """:meth:`read_into` of each value found (None for one not found), ``READS_AT_ONCE`` in parallel."""
        slots = asyncio.Semaphore(READS_AT_ONCE)

        async def read(value: Pinned | None, buffer: bytearray | memoryview) -> int | None:
            if value is None:
                return None
            async with slots:
                return await self.read_into(value, buffer)

        return list(await asyncio.gather(*(read(v, b) for v, b in zip(values, buffers, strict=True))))

    async def get(self, key: str) -> bytes | None:
        """The value, or None if not cached."""
        (value,) = await self.lookup([key])
        if value is None:
            return None
        buffer = bytearray(value.size)
        await self.read_into(value, buffer)
        return bytes(buffer)

    async def list_keys(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key in the namespace under ``prefix``, in order (values expired but not yet removed too)."""
        async for entry in self.client.list(self.namespace, prefix):
            if not isinstance(entry, str):
                yield entry.key
