"""The KV-cache tier (``apollo.kv.KVStore``) on a cluster (PostgreSQL) and on ``apollo server`` (SQLite), with
real processes: values read straight into a preallocated tensor, prefix hits in one metadata call, the
least recently read value evicted under the byte budget and its shards deleted from the drives, expiry,
a value larger than the budget refused with nothing left behind, and keys without the rights refused."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
import torch
from deployments import Target, deployment, metadata_calls

from apollo import errors
from apollo.client import AsyncClient
from apollo.kv import KVStore
from apollo.meta.store import SqlStore

NAMESPACE = "kv-cache"
USER, SECRET = "kv-user", "kv-user-secret-key"
VALUE = 1 << 20  # beyond the inline size: one segment, a shard file per drive of its group
BUDGET = 4 * VALUE + 1000


@pytest.fixture(params=["cluster", "server"])
def target(request, make_cluster, make_server) -> Target:
    return deployment(request.param, make_cluster, make_server, USER, SECRET, meta_args=("--gc-delay", "0"))


def run(target: Target, scenario, access_key: str = USER, secret_key: str = SECRET):
    """``scenario(async_client)`` on a native client of ``target`` with that key."""
    with target.native(access_key, secret_key) as client:
        return client.run(scenario)


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.2)


def test_values_are_read_into_tensors_the_least_recently_read_goes_and_its_shards_with_it(target, seed):
    rng = random.Random(seed)
    values = {f"chunk-{n}": rng.randbytes(VALUE) for n in range(5)}

    async def fill(client: AsyncClient) -> int:
        cache = KVStore(client, NAMESPACE)
        info = await cache.create(BUDGET)
        assert (info.budget_bytes, info.ttl_s, info.used_bytes, info.entries) == (BUDGET, 0, 0, 0)
        for key in list(values)[:4]:
            await cache.put(key, values[key], metadata={"dtype": "uint8"})
        return len(target.shard_files())

    shards_of_four = run(target, fill)
    before = metadata_calls(target, "kv_prefix_hits"), metadata_calls(target, "kv_lookup")

    async def prefix(client: AsyncClient) -> int:
        keys = [f"chunk-{n}" for n in (0, 1, 2)] + [f"other-{n}" for n in range(61)]
        return await KVStore(client, NAMESPACE).prefix_hits(keys)

    assert run(target, prefix) == 3
    assert (metadata_calls(target, "kv_prefix_hits"), metadata_calls(target, "kv_lookup")) == (before[0] + 1,
                                                                                                before[1])

    async def read_and_evict(client: AsyncClient) -> None:
        cache = KVStore(client, NAMESPACE)
        tensor = torch.empty(VALUE, dtype=torch.uint8)  # the caller's memory, e.g. pinned for a GPU copy
        assert await cache.get_into("chunk-0", tensor.numpy()) == VALUE
        assert tensor.numpy().tobytes() == values["chunk-0"]
        wide = torch.empty(VALUE // 2, dtype=torch.bfloat16)  # any dtype: the bytes land as they are
        assert await cache.get_into("chunk-2", memoryview(wide.view(torch.uint8).numpy())) == VALUE
        assert wide.view(torch.uint8).numpy().tobytes() == values["chunk-2"]
        with pytest.raises(ValueError, match="buffer"):
            await cache.get_into("chunk-3", bytearray(VALUE - 1))
        await cache.put("chunk-4", values["chunk-4"])  # over the budget: chunk-1, read least recently, goes
        buffers = [bytearray(VALUE) for _ in range(5)]
        sizes = await cache.get_many_into([f"chunk-{n}" for n in range(5)], buffers)
        assert sizes == [VALUE, None, VALUE, VALUE, VALUE]
        assert all(buffers[n] == values[f"chunk-{n}"] for n in (0, 2, 3, 4))
        assert await cache.get("chunk-1") is None and not await cache.contains("chunk-1")
        info = await cache.info()
        assert (info.used_bytes, info.entries) == (4 * VALUE, 4)
        assert [key async for key in cache.list_keys()] == ["chunk-0", "chunk-2", "chunk-3", "chunk-4"]

    run(target, read_and_evict)
    wait_for(lambda: len(target.shard_files()) == shards_of_four)  # chunk-1's shards, deleted by the GC pass

    async def too_large(client: AsyncClient) -> None:
        cache = KVStore(client, NAMESPACE)
        with pytest.raises(errors.EntityTooLarge, match="budget"):
            await cache.put("huge", rng.randbytes(BUDGET + 1))
        assert (await cache.info()).entries == 4 and await cache.get("huge") is None

    run(target, too_large)
    wait_for(lambda: len(target.shard_files()) == shards_of_four)  # the refused value's shards go at once


def test_an_expired_value_is_gone_for_lookups_at_once_and_from_the_drives_after_a_gc_pass(target):
    async def put(client: AsyncClient) -> None:
        cache = KVStore(client, NAMESPACE)
        await cache.create(BUDGET, ttl_s=2.0)
        await cache.put("short-lived", b"v" * VALUE)
        assert await cache.prefix_hits(["short-lived"]) == 1

    empty = len(target.shard_files())
    run(target, put)
    assert len(target.shard_files()) > empty
    time.sleep(2.1)

    async def gone(client: AsyncClient) -> None:
        cache = KVStore(client, NAMESPACE)
        assert await cache.get("short-lived") is None and await cache.prefix_hits(["short-lived"]) == 0

    run(target, gone)
    wait_for(lambda: len(target.shard_files()) == empty)
    store = SqlStore(target.database)
    try:
        assert (store.get_kv_namespace(NAMESPACE).used_bytes, store.get_kv_namespace(NAMESPACE).entries) == (0, 0)
    finally:
        store.close()


def test_keys_without_the_rights_cannot_change_the_budget_write_or_read(target):
    """The attack: a key that may only write into the namespace shrinks its budget to one byte, which would
    evict every other tenant's values; a read-only key writes; a key with no rights reads values."""
    store = SqlStore(target.database)
    store.put_key("kv-writer", "kv-writer-secret-key", time.time(), policies=["writeonly"])
    store.put_key("kv-reader", "kv-reader-secret-key", time.time(), policies=["readonly"])
    store.put_key("kv-nobody", "kv-nobody-secret-key", time.time(), policies=[])
    store.close()

    async def owner(client: AsyncClient) -> None:
        cache = KVStore(client, NAMESPACE)
        await cache.create(BUDGET)
        await cache.put("kept", b"k" * 5000)

    run(target, owner)

    async def writer(client: AsyncClient) -> None:
        with pytest.raises(errors.AccessDenied):
            await client.set_kv_namespace(NAMESPACE, 1)
        await KVStore(client, NAMESPACE).put("from-writer", b"w" * 100)  # what the key may do

    async def reader(client: AsyncClient) -> None:
        cache = KVStore(client, NAMESPACE)
        with pytest.raises(errors.AccessDenied):
            await cache.put("from-reader", b"r")
        with pytest.raises(errors.AccessDenied):
            await client.set_kv_namespace(NAMESPACE, BUDGET * 2)
        assert await cache.get("kept") == b"k" * 5000 and await cache.prefix_hits(["kept", "from-writer"]) == 2

    async def nobody(client: AsyncClient) -> None:
        cache = KVStore(client, NAMESPACE)
        for attempt in (cache.get("kept"), cache.prefix_hits(["kept"]), cache.info()):
            with pytest.raises(errors.AccessDenied):
                await attempt

    run(target, writer, "kv-writer", "kv-writer-secret-key")
    run(target, reader, "kv-reader", "kv-reader-secret-key")
    run(target, nobody, "kv-nobody", "kv-nobody-secret-key")

    async def unchanged(client: AsyncClient) -> None:
        info = await KVStore(client, NAMESPACE).info()
        assert (info.budget_bytes, info.entries) == (BUDGET, 2)

    run(target, unchanged)


def test_a_namespace_refuses_what_would_keep_evicted_values(target):
    async def scenario(client: AsyncClient) -> None:
        cache = KVStore(client, NAMESPACE)
        await cache.create(BUDGET)
        await cache.put("a", b"a")
        with pytest.raises(errors.InvalidRequest, match="KV namespace"):
            await client.snapshot(NAMESPACE)
        await client.create_bucket("plain")
        await client.put("plain", "object", b"x")
        with pytest.raises(errors.InvalidRequest, match="not a KV namespace"):
            await KVStore(client, "plain").create(BUDGET)  # a namespace is made with its bucket, never on one
        with pytest.raises(errors.InvalidRequest, match="not a KV namespace"):
            await client.kv_prefix_hits("plain", ["object"])
        with pytest.raises(errors.BucketNotFound):
            await client.kv_lookup("no-such-bucket", ["a"])
        with pytest.raises(errors.InvalidRequest):
            await client.set_kv_namespace(NAMESPACE, 0)

    run(target, scenario)


def test_concurrent_puts_keep_the_namespace_within_its_budget(target, seed):
    """Eight writers over a budget of four values: whatever commits in whatever order, the namespace never
    ends above its budget and holds exactly what it accounts for."""
    rng = random.Random(seed)

    async def scenario(client: AsyncClient) -> None:
        cache = KVStore(client, NAMESPACE)
        await cache.create(4 * 100_000)

        async def writer(n: int) -> None:
            for round_ in range(4):
                await cache.put(f"w{n}-{round_}", rng.randbytes(100_000))

        await asyncio.gather(*(writer(n) for n in range(8)))
        info = await cache.info()
        keys = [key async for key in cache.list_keys()]
        assert (info.used_bytes, info.entries, len(keys)) == (4 * 100_000, 4, 4)
        assert await cache.prefix_hits(keys) == 4

    run(target, scenario)


def test_a_key_cannot_keep_values_it_may_not_read_from_eviction(target):
    """The attack: a key allowed to read only ``public/*`` looks up a private value, so that the lookup ranks it
    as just read and the next put evicts a public value instead. The lookup is refused whole, before it runs:
    the private value, written first and never read, is the one evicted."""
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ["kv-peer"]}, "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{NAMESPACE}/public/*"},
        {"Effect": "Allow", "Principal": {"AWS": ["kv-peer"]}, "Action": "s3:ListBucket",
         "Resource": f"arn:aws:s3:::{NAMESPACE}"}]}  # fmt: skip
    store = SqlStore(target.database)
    store.put_key("kv-peer", "kv-peer-secret-key", time.time(), policies=[])
    store.close()

    async def owner_fills(client: AsyncClient) -> None:
        cache = KVStore(client, NAMESPACE)
        await cache.create(2 * 5000)
        await cache.put("private/b", b"b" * 5000)
        await cache.put("public/a", b"a" * 5000)

    async def peer(client: AsyncClient) -> None:
        cache = KVStore(client, NAMESPACE)
        assert await cache.get("public/a") == b"a" * 5000  # what it may do: the policy is in force
        with pytest.raises(errors.AccessDenied):
            await cache.lookup(["private/b"])

    async def owner_puts(client: AsyncClient) -> list[str]:
        cache = KVStore(client, NAMESPACE)
        await cache.put("public/c", b"c" * 5000)
        return [key async for key in cache.list_keys()]

    run(target, owner_fills)
    target.s3().put_bucket_policy(Bucket=NAMESPACE, Policy=json.dumps(policy))
    time.sleep(2.5)  # the metadata service caches a bucket's policy for 2 s
    run(target, peer, "kv-peer", "kv-peer-secret-key")
    assert run(target, owner_puts) == ["public/a", "public/c"]
