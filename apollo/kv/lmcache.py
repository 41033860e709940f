"""LMCache's remote connector on Apollo: ``ApolloConnector``, for ``remote_url:
external://apollo:0/apollo.kv.lmcache/?connector_name=ApolloConnector``.

LMCache (the KV cache layer of vLLM and SGLang) keeps chunks of attention KV state (one per 256 tokens,
~32 MiB for an 8B model) in a remote store through a ``RemoteConnector``. Its S3 connector pays a HEAD
and a GET per chunk and assumes nothing is evicted. Here:

- a chunk is a value of a KV namespace (``apollo.kv.KVStore``): the budget, TTL and LRU eviction are the
  metadata service's, so a cache shared by many inference servers stays within its bytes;
- its shape, dtype and memory format ride in the value's metadata, so a lookup (one metadata call for a
  whole batch) says how much memory to allocate before any byte moves, and the bytes go straight from the
  storage nodes into LMCache's own buffer (``byte_array``), with no header to strip and no copy;
- ``batched_contains``, ``batched_async_contains`` and ``batched_get_non_blocking`` have LMCache's prefix
  semantics (the first miss ends the answer) and cost one metadata call; ``pin`` ranks the keys as just
  read, so the chunks about to be retrieved are the last a concurrent put would evict.

Configuration: the namespace from ``extra_config["apollo_namespace"]`` (else ``$APOLLO_KV_NAMESPACE``),
made with ``apollo.kv.KVStore.create`` beforehand; the metadata service and keys from ``APOLLO_META_URL``,
``APOLLO_ACCESS_KEY``, ``APOLLO_SECRET_KEY`` (and ``APOLLO_CERTS``), as every Apollo client reads them.

The connector works with duck-typed keys (``to_string()``), memory objects (``metadata.shape``,
``metadata.dtype``, ``metadata.fmt``, ``byte_array``) and an allocator
(``local_cpu_backend.allocate(shape, dtype, fmt)``): LMCache's own when it is installed, of which it is
then a ``RemoteConnector`` subclass, as LMCache's external adapter requires.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from apollo.client.batch import Pinned
from apollo.client.native import AsyncClient
from apollo.kv.store import KVStore

try:  # LMCache 0.3+: its external adapter takes only subclasses of its base
    from lmcache.v1.memory_management import MemoryFormat
    from lmcache.v1.storage_backend.connector.base_connector import RemoteConnector
except ImportError:  # it does not install on a machine without CUDA; the interface is the same
    RemoteConnector, MemoryFormat = object, None

log = logging.getLogger("apollo.kv.lmcache")
SHAPE, DTYPE, FORMAT = "lmcache-shape", "lmcache-dtype", "lmcache-format"
# The dtypes a KV chunk has: a value's metadata names one of these or the value is not read (it came from
# whoever could write the namespace, and names here become torch attributes).
DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)}  # fmt: skip
SHAPE_DIMS_MAX = 8


def chunk_metadata(memory_obj: Any) -> dict[str, str]:
    """What a value says of the chunk it holds: shape, dtype and memory format."""
    meta = memory_obj.metadata
    return {SHAPE: ",".join(str(int(n)) for n in meta.shape), DTYPE: str(meta.dtype).removeprefix("torch."),
            FORMAT: str(int(meta.fmt))}  # fmt: skip


def chunk_layout(value: Pinned) -> tuple[torch.Size, torch.dtype, Any] | None:
    """(shape, dtype, memory format) of a value written by :func:`chunk_metadata` whose size they add up to;
    None for anything else (written by another tool, or made up), which is then no hit."""
    meta = value.metadata
    try:
        dims = [int(n) for n in meta[SHAPE].split(",")]
        dtype, fmt = DTYPES[meta[DTYPE]], int(meta[FORMAT])
        fmt = MemoryFormat(fmt) if MemoryFormat is not None else fmt
    except (KeyError, ValueError):
        return None
    if not 0 < len(dims) <= SHAPE_DIMS_MAX or min(dims) < 0 or math.prod(dims) * dtype.itemsize != value.size:
        return None  # Python's integers: a product of made-up dimensions cannot wrap around
    return torch.Size(dims), dtype, fmt


class ApolloConnector(RemoteConnector):
    def __init__(self, loop: asyncio.AbstractEventLoop, local_cpu_backend: Any, config: Any = None, *,
                 namespace: str | None = None, client: AsyncClient | None = None) -> None:  # fmt: skip
        """As LMCache's external adapter makes one: ``loop``, the event loop its remote backend runs the
        async methods on (the sync ones hand their work to it); ``local_cpu_backend``, whose ``allocate``
        gives the memory a chunk is read into. ``client``: an ``AsyncClient`` of that loop (default: one from
        the environment, made on the loop at first use)."""
        extra = getattr(config, "extra_config", None) or {}
        self.namespace = namespace or extra.get("apollo_namespace") or os.environ["APOLLO_KV_NAMESPACE"]
        self.loop = loop
        self.local_cpu_backend = local_cpu_backend
        self._client = client
        self._store: KVStore | None = None

    async def _kv(self) -> KVStore:
        if self._store is None:
            if self._client is None:
                self._client = await AsyncClient(os.environ["APOLLO_META_URL"], os.environ["APOLLO_ACCESS_KEY"],
                                                 os.environ["APOLLO_SECRET_KEY"]).connect()  # fmt: skip
            self._store = KVStore(self._client, self.namespace)
        return self._store

    def _wait(self, work):
        """Run a coroutine on the connector's loop from another thread (LMCache's sync calls)."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    # LMCache's RemoteConnector ---------------------------------------------------------------

    async def exists(self, key: Any) -> bool:
        return await (await self._kv()).contains(key.to_string())

    def exists_sync(self, key: Any) -> bool:
        return self._wait(self.exists(key))

    async def get(self, key: Any) -> Any | None:
        (memory_obj,) = await self._read([key], prefix=False)
        return memory_obj

    async def put(self, key: Any, memory_obj: Any) -> None:
        await (await self._kv()).put(key.to_string(), memory_obj.byte_array, metadata=chunk_metadata(memory_obj))

    async def list(self) -> list[str]:
        return [key async for key in (await self._kv()).list_keys()]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = self._store = None

    def support_ping(self) -> bool:
        return True

    async def ping(self) -> int:
        """0 when the namespace answers, else 1 (LMCache's error code)."""
        try:
            await (await self._kv()).info()
        except Exception as exc:
            log.warning("Apollo KV namespace %s does not answer: %s", self.namespace, exc)
            return 1
        return 0

    def support_batched_get(self) -> bool:
        return True

    async def batched_get(self, keys: list[Any]) -> list[Any | None]:
        return await self._read(keys, prefix=False)

    def support_batched_put(self) -> bool:
        return True

    async def batched_put(self, keys: list[Any], memory_objs: list[Any]) -> None:
        await asyncio.gather(*(self.put(key, obj) for key, obj in zip(keys, memory_objs, strict=True)))

    def support_batched_async_contains(self) -> bool:
        return True

    async def batched_async_contains(self, lookup_id: str, keys: list[Any], pin: bool = False) -> int:
        """Leading hits, one metadata call. ``pin``: rank them as just read, so that the retrieval about to
        follow finds them (a lookup, which records reads, instead of the plain count)."""
        store = await self._kv()
        names = [key.to_string() for key in keys]
        if not pin:
            return await store.prefix_hits(names)
        values = await store.lookup(names)
        return next((n for n, value in enumerate(values) if value is None or chunk_layout(value) is None),
                    len(values))  # fmt: skip

    def support_batched_get_non_blocking(self) -> bool:
        return True

    async def batched_get_non_blocking(self, lookup_id: str, keys: list[Any]) -> list[Any]:
        return await self._read(keys, prefix=True)

    def support_batched_contains(self) -> bool:
        return True

    def batched_contains(self, keys: list[Any], stop_after_first_not_exits: bool = True) -> list[bool]:
        async def contains() -> list[bool]:
            store = await self._kv()
            names = [key.to_string() for key in keys]
            if stop_after_first_not_exits:
                hits = await store.prefix_hits(names)
                return [n < hits for n in range(len(names))]
            return [value is not None for value in await store.lookup(names)]

        return self._wait(contains())

    def remove_sync(self, key: Any) -> bool:
        async def remove() -> bool:
            store = await self._kv()
            if not await store.contains(key.to_string()):
                return False
            await store.delete(key.to_string())
            return True

        return self._wait(remove())

    # reads -----------------------------------------------------------------------------------

    async def _read(self, keys: Sequence[Any], *, prefix: bool) -> list[Any | None]:
        """Memory objects of the keys' chunks: one lookup, LMCache's memory allocated from what it says, the
        bytes read straight into it. ``prefix``: only the leading hits (a miss, a value that is no chunk, or
        memory that cannot be allocated ends the list), else None for each of those."""
        store = await self._kv()
        values = await store.lookup([key.to_string() for key in keys])
        chosen: list[tuple[Pinned, Any] | None] = []
        for value in values:
            layout = chunk_layout(value) if value is not None else None
            memory_obj = None
            if layout is not None:
                memory_obj = self.local_cpu_backend.allocate(*layout)
            if memory_obj is None and prefix:
                break
            chosen.append(None if memory_obj is None else (value, memory_obj))
        found = [pair for pair in chosen if pair is not None]
        try:
            await store.read_many_into([value for value, _ in found], [obj.byte_array for _, obj in found])
        except BaseException:
            for _, memory_obj in found:  # LMCache's memory goes back to its allocator
                memory_obj.ref_count_down()
            raise
        return [None if pair is None else pair[1] for pair in chosen]
