"""The native direct-path client against a cluster and against ``apollo server``: every call, user keys,
tokens, dead nodes. The same tests run on both (``target``): the all-in-one server serves the metadata API
and its drives' shards as a cluster's roles do. The tests marked ``WITH_TLS`` also run on a cluster whose
roles speak mutual TLS (``cluster-tls``), the client showing its certificate and trusting the cluster CA only:
every call, both read paths, failed nodes."""

from __future__ import annotations

import asyncio
import io
import os
import re
import time

import pytest
from deployments import Target, deployment, metadata_calls

from apollo import errors
from apollo.client import BatchItem
from apollo.client.remote_meta import RemoteMeta
from apollo.meta.store import SqlStore
from apollo.proto.layout import Scheme
from apollo.testing.admin import admin

BUCKET = "native"
USER, SECRET = "native-user", "native-user-secret-key"


# Also over mutual TLS: the main paths, kept few because each case starts a cluster (CI time).
WITH_TLS = pytest.mark.parametrize("cluster", ["cluster", "server", "cluster-tls"], indirect=True)


@pytest.fixture(params=["cluster", "server"])
def cluster(request, make_cluster, make_server) -> Target:
    return deployment(request.param, make_cluster, make_server, USER, SECRET)


@WITH_TLS
def test_every_call_of_the_blocking_client_with_an_ordinary_key(cluster, tmp_path):
    payload = os.urandom(11 * 1024 * 1024 + 17)
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    with cluster.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
        info = client.put(BUCKET, "from-file", source, metadata={"rank": "3"})
        assert (info.size, info.metadata) == (len(payload), {"rank": "3"})
        client.put(BUCKET, "from-bytes", b"small")
        client.put(BUCKET, "from-stream", io.BytesIO(payload[:3_000_000]))
        head = payload[:5_000_000]
        client.put(BUCKET, "from-chunks", (head[i : i + 999_999] for i in range(0, len(head), 999_999)))
        assert client.get(BUCKET, "from-file") == payload
        assert client.get(BUCKET, "from-file", 5_000_000, 5_000_123) == payload[5_000_000:5_000_123]
        assert b"".join(client.stream(BUCKET, "from-chunks")) == head
        buffer = bytearray(1_000_000)
        assert client.get_into(BUCKET, "from-stream", buffer, 2_000_000) == 1_000_000
        assert bytes(buffer) == payload[2_000_000:3_000_000]
        assert client.head(BUCKET, "from-bytes").size == 5 and client.head(BUCKET, "nothing") is None
        assert [i.key for i in client.list(BUCKET)] == ["from-bytes", "from-chunks", "from-file", "from-stream"]
        results = [r.data if r.ok else r.error for r in client.get_batch(
            [(BUCKET, "from-bytes"), (BUCKET, "missing"), (BUCKET, "from-stream", None, 5, 1_000_005)])]  # fmt: skip
        assert results[0] == b"small" and results[2] == payload[5:1_000_005]
        assert isinstance(results[1], errors.ObjectNotFound)
        with pytest.raises(errors.PreconditionFailed):
            client.put(BUCKET, "from-bytes", b"again", if_none_match=True)
        client.delete(BUCKET, "from-file")
        with pytest.raises(errors.ObjectNotFound):
            client.get(BUCKET, "from-file")


def test_a_batch_of_1000_items_answers_as_single_gets_do_in_one_lookup_per_1000(cluster, seed):
    """1,000 items over two buckets: small (inline) and multi-segment objects, ranges, missing keys and
    buckets, an old version by id, a deleted key. Each result is what a single get answers (bytes, or the
    same error), in request order; ``ordered=False`` gives the same set; the lookups take one metadata call
    per 1,000 items."""
    import random

    rng = random.Random(seed)
    objects: dict[tuple[str, str], bytes] = {}
    with cluster.native(USER, SECRET) as client:
        for bucket in (BUCKET, BUCKET + "-two"):
            client.create_bucket(bucket)
            for n in range(40):
                size = rng.choice([0, 10, 10_240, 16_384, 70_000, 1_200_000])
                objects[(bucket, f"k{n:03d}")] = body = rng.randbytes(size)
                client.put(bucket, f"k{n:03d}", body)
        client.put(BUCKET, "gone", b"deleted soon")
        client.delete(BUCKET, "gone")
        items = []
        for _ in range(1000):
            bucket, key = rng.choice([*objects, (BUCKET, "missing"), (BUCKET, "gone"), ("no-such-bucket", "k")])
            size = len(objects.get((bucket, key), b""))
            if rng.random() < 0.3 and size:
                start = rng.randrange(size)
                items.append((bucket, key, None, start, rng.randrange(start, size + 1)))
            else:
                items.append((bucket, key))

        def single(item: tuple) -> bytes | type:
            bucket, key, *rest = item
            start, end = (rest[1], rest[2]) if rest else (0, None)
            try:
                return client.get(bucket, key, start, end)
            except errors.ApolloError as exc:
                return type(exc)

        expected = [single(item) for item in items]
        before = metadata_calls(cluster, "get_versions")
        got = [r.data if r.ok else type(r.error) for r in client.get_batch(items)]
        assert metadata_calls(cluster, "get_versions") - before == 1
        assert got == expected
        unordered = [(r.item, r.data if r.ok else type(r.error)) for r in client.get_batch(items, ordered=False,
                                                                                          window=7)]  # fmt: skip
        assert sorted(unordered, key=repr) == sorted(zip(map(BatchItem.of, items), expected, strict=True), key=repr)
        assert {e for e in expected if isinstance(e, type)} == {errors.ObjectNotFound, errors.BucketNotFound}


def test_a_batch_reads_old_versions_by_id_and_refuses_a_range_outside_an_object(cluster):
    with cluster.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
        s3 = cluster.s3()
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        old = client.put(BUCKET, "k", b"old bytes").version_id
        client.put(BUCKET, "k", b"new bytes")
        results = list(client.get_batch([(BUCKET, "k", old), (BUCKET, "k"), (BUCKET, "k", None, 4, 9),
                                         (BUCKET, "k", None, 20, 30), (BUCKET, "k", "0" * 32)]))  # fmt: skip
        assert [r.data for r in results[:3]] == [b"old bytes", b"new bytes", b"bytes"]
        assert isinstance(results[3].error, errors.InvalidRequest)
        assert isinstance(results[4].error, errors.VersionNotFound)


@WITH_TLS
def test_metadata_calls_need_a_valid_signature_and_service_calls_a_root_key(cluster):
    """Under mutual TLS too: a client certificate admits a host to the cluster network, not to any call."""

    async def scenario():
        import aiohttp

        async with aiohttp.ClientSession() as session:
            tls = {"ssl_context": cluster.ssl_context}
            forged = RemoteMeta(cluster.meta_urls, USER, "not-the-secret", session, **tls)
            with pytest.raises(errors.AccessDenied, match="signature"):
                await forged.list_buckets()
            unknown = RemoteMeta(cluster.meta_urls, "nobody", SECRET, session, **tls)
            with pytest.raises(errors.AccessDenied, match="unknown"):
                await unknown.list_buckets()
            user = RemoteMeta(cluster.meta_urls, USER, SECRET, session, **tls)
            await user.list_buckets()
            for service_call in ("get_secret", "service_tokens", "node_heartbeat"):
                with pytest.raises(errors.AccessDenied):
                    await user.call(service_call, USER)

    asyncio.run(scenario())


@WITH_TLS
def test_native_reads_survive_two_dead_storage_nodes(cluster):
    if cluster.cluster is None:
        pytest.skip("the all-in-one server has no storage nodes to lose (tests/probe/test_damage.py loses drives)")
    objects = {f"o{n}": os.urandom(2_500_000 + n) for n in range(5)}
    with cluster.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
        for key, body in objects.items():
            client.put(BUCKET, key, body)
        cluster.cluster.nodes[1].kill()
        cluster.cluster.nodes[3].kill()
        for key, body in objects.items():
            assert client.get(BUCKET, key) == body
        assert {r.item.key: r.data for r in client.get_batch([(BUCKET, key) for key in objects])} == objects
    s3 = cluster.s3()
    for key, body in objects.items():
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body


def test_a_key_can_abandon_only_its_own_pending_writes(cluster):
    store = SqlStore(cluster.database)
    store.put_key("other-user", "other-user-secret-key", time.time(), policies=["readwrite"])

    async def scenario():
        import aiohttp

        async with aiohttp.ClientSession() as session:
            owner = await RemoteMeta(cluster.meta_urls, USER, SECRET, session, ssl_context=cluster.ssl_context).start()
            other = RemoteMeta(cluster.meta_urls, "other-user", "other-user-secret-key", session,
                               ssl_context=cluster.ssl_context)  # fmt: skip
            layout = await owner.allocate_segment(Scheme.parse("4+2"), 1 << 20, 0)
            await other.abandon_segments([layout.segment_id], time.time())
            due = store.one("SELECT due FROM garbage WHERE segment_id = ?", (layout.segment_id,))["due"]
            assert due > time.time() + 3600  # untouched: still a write in flight
            await owner.abandon_segments([layout.segment_id], time.time())
            due = store.one("SELECT due FROM garbage WHERE segment_id = ?", (layout.segment_id,))["due"]
            assert due <= time.time()
            await owner.close()

    asyncio.run(scenario())
    store.close()


def test_keys_made_with_the_admin_command_work_and_deleted_ones_stop(cluster):
    made = admin("key", "create", **cluster.where)
    access = re.search(r"access key: (\S+)", made).group(1)
    secret = re.search(r"secret key: (\S+)", made).group(1)
    with cluster.native(access, secret) as client:
        client.create_bucket("by-cli")
        client.put("by-cli", "k", b"v")
        assert client.get("by-cli", "k") == b"v"
    admin("key", "delete", access, **cluster.where)
    time.sleep(11)  # the metadata service's key cache forgets it within 10 s
    with pytest.raises(errors.AccessDenied):
        cluster.native(access, secret)


def test_etag_is_the_md5_only_when_asked_or_small_and_any_buffer_is_stored_as_its_bytes(cluster, seed):
    """MD5 is the slowest step of a write, so a large native put's ETag is a digest of its cells'
    CRC32Cs, which S3 tools read as multipart ("-<segments>") rather than check as an MD5."""
    import array
    import hashlib
    import random

    rng = random.Random(seed)
    payload = rng.randbytes(9 * 1024 * 1024 + 5)
    with cluster.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
        fast = client.put(BUCKET, "fast", payload)
        assert re.fullmatch(r"[0-9a-f]{32}-1", fast.etag) and fast.etag != hashlib.md5(payload).hexdigest()
        assert client.put(BUCKET, "fast-again", payload).etag == fast.etag  # a function of the content
        assert client.put(BUCKET, "md5", payload, md5=True).etag == hashlib.md5(payload).hexdigest()
        assert client.put(BUCKET, "small", b"tiny").etag == hashlib.md5(b"tiny").hexdigest()
        assert client.get(BUCKET, "fast") == payload

        numbers = array.array("i", range(3_000_000))  # a buffer of 4-byte items: its size is in bytes
        assert client.put(BUCKET, "ints", memoryview(numbers)).size == len(numbers) * numbers.itemsize
        assert client.get(BUCKET, "ints") == numbers.tobytes()

        def reused_buffer():  # a producer that refills one buffer: every chunk must be taken as it was
            buffer = bytearray(3 * 1024 * 1024)
            for start in range(0, len(payload), len(buffer)):
                piece = payload[start : start + len(buffer)]
                buffer[: len(piece)] = piece
                yield memoryview(buffer)[: len(piece)]

        client.put(BUCKET, "reused", reused_buffer())
        assert client.get(BUCKET, "reused") == payload
