"""``apollo.kv.lmcache.ApolloConnector`` against LMCache's remote-connector interface (``lmcache_interface``: a
faithful copy, LMCache not installing without CUDA), as LMCache drives it: built by the external adapter's
call on LMCache's own event loop thread, async calls on that loop, sync ones from another thread, chunks in
memory its allocator gives; on a cluster and on ``apollo server``."""

from __future__ import annotations

import asyncio
import inspect
import threading
from types import SimpleNamespace

import lmcache_interface as lmc
import pytest
import torch
from deployments import Target, deployment

from apollo.client import AsyncClient
from apollo.kv import KVStore
from apollo.kv.lmcache import DTYPE, FORMAT, SHAPE, ApolloConnector

NAMESPACE = "lmcache"
USER, SECRET = "lmcache-user", "lmcache-user-secret-key"
SHAPE_OF_CHUNK = torch.Size([2, 4, 256, 32])  # (K and V, layers, tokens, hidden): 256 KiB of bfloat16


@pytest.fixture(params=["cluster", "server"])
def target(request, make_cluster, make_server) -> Target:
    return deployment(request.param, make_cluster, make_server, USER, SECRET)


@pytest.fixture
def loop():
    """LMCache's remote backend loop: an event loop running on a thread of its own."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join()
    running.close()


def key(n: int) -> lmc.CacheEngineKey:
    return lmc.CacheEngineKey("vllm", "meta-llama/Llama-3.1-8B", 1, 0, 0x9E3779B97F4A7C15 * (n + 1) % 2**64)


def chunk(backend: lmc.LocalCPUBackend, n: int) -> lmc.TensorMemoryObj:
    memory_obj = backend.allocate(SHAPE_OF_CHUNK, torch.bfloat16, lmc.MemoryFormat.KV_2LTD)
    memory_obj.tensor.copy_(torch.full(SHAPE_OF_CHUNK, float(n)) + torch.arange(32) / 64)
    return memory_obj


def test_the_connector_has_every_method_of_the_interface_with_its_parameters():
    for name, method in inspect.getmembers(lmc.RemoteConnector, inspect.isfunction):
        ours = getattr(ApolloConnector, name, None)
        assert ours is not None, name
        assert list(inspect.signature(ours).parameters) == list(inspect.signature(method).parameters), name
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(method), name
        if name.startswith("support_"):
            assert ours(None) is True, name


def test_lmcache_stores_and_retrieves_chunks_with_prefix_semantics(target, loop, monkeypatch):
    monkeypatch.setenv("APOLLO_META_URL", target.meta_urls)
    monkeypatch.setenv("APOLLO_ACCESS_KEY", USER)
    monkeypatch.setenv("APOLLO_SECRET_KEY", SECRET)
    with target.native(USER, SECRET) as client:
        client.run(lambda c: KVStore(c, NAMESPACE).create(64 << 20))
    backend = lmc.LocalCPUBackend(capacity_bytes=16 << 20)
    config = SimpleNamespace(extra_config={"apollo_namespace": NAMESPACE})
    connector = ApolloConnector(loop=loop, local_cpu_backend=backend, config=config)  # the external adapter's call

    def on_loop(work):
        return asyncio.run_coroutine_threadsafe(work, loop).result(timeout=60)

    stored = {n: chunk(backend, n) for n in (0, 1, 3)}
    on_loop(connector.batched_put([key(n) for n in (0, 1)], [stored[0], stored[1]]))
    on_loop(connector.put(key(3), stored[3]))
    assert on_loop(connector.ping()) == 0
    assert on_loop(connector.exists(key(0))) and not on_loop(connector.exists(key(2)))
    assert connector.exists_sync(key(3)) and not connector.exists_sync(key(2))  # from this (another) thread
    wanted = [key(n) for n in range(4)]
    assert connector.batched_contains(wanted) == [True, True, False, False]
    assert connector.batched_contains(wanted, stop_after_first_not_exits=False) == [True, True, False, True]
    assert on_loop(connector.batched_async_contains("lookup-1", wanted)) == 2
    assert on_loop(connector.batched_async_contains("lookup-1", wanted, pin=True)) == 2

    prefix = on_loop(connector.batched_get_non_blocking("lookup-1", wanted))
    assert len(prefix) == 2
    every = on_loop(connector.batched_get(wanted))
    assert [obj is None for obj in every] == [False, False, True, False]
    for n, memory_obj in [(0, prefix[0]), (1, prefix[1]), (0, every[0]), (3, every[3])]:
        assert memory_obj.metadata.shape == SHAPE_OF_CHUNK and memory_obj.metadata.dtype == torch.bfloat16
        assert memory_obj.metadata.fmt == lmc.MemoryFormat.KV_2LTD
        assert torch.equal(memory_obj.tensor, stored[n].tensor)
    assert on_loop(connector.get(key(2))) is None
    assert sorted(on_loop(connector.list())) == sorted(key(n).to_string() for n in (0, 1, 3))
    assert connector.remove_sync(key(3)) and not connector.remove_sync(key(3))
    on_loop(connector.close())


def test_a_value_that_is_not_a_chunk_is_no_hit_and_allocates_nothing(target, loop):
    """Whoever may write the namespace may plant values: a shape that does not add up to the value's size (2 MiB
    of memory for 32 bytes), a dtype that is no tensor's, no metadata at all. None of them reaches the
    allocator, and a retrieval stops there."""
    with target.native(USER, SECRET) as client:
        async def plant(c: AsyncClient) -> None:
            cache = KVStore(c, NAMESPACE)
            await cache.create(64 << 20)
            planted = {"huge": {SHAPE: "1024,1024", DTYPE: "bfloat16", FORMAT: "1"},
                       "object": {SHAPE: "16", DTYPE: "object", FORMAT: "1"},
                       "nonsense": {SHAPE: "-4,-8", DTYPE: "bfloat16", FORMAT: "x"}, "bare": {}}  # fmt: skip
            for name, metadata in planted.items():
                await cache.put(key_of(name).to_string(), b"\0" * 32, metadata=metadata)

        client.run(plant)
        backend = lmc.LocalCPUBackend(capacity_bytes=1 << 40)
        keys = [key_of(name) for name in ("huge", "object", "nonsense", "bare")]

        async def retrieve(c: AsyncClient) -> tuple:
            connector = ApolloConnector(loop=asyncio.get_running_loop(), local_cpu_backend=backend,
                                        namespace=NAMESPACE, client=c)  # fmt: skip
            return await connector.batched_get(keys), await connector.batched_get_non_blocking("l", keys)

        every, prefix = client.run(retrieve)
    assert every == [None] * 4 and prefix == [] and backend.allocated_bytes == 0


def key_of(name: str) -> lmc.CacheEngineKey:
    return lmc.CacheEngineKey("vllm", name, 1, 0, 1)
