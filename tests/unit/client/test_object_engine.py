"""ObjectEngine over a real metadata store and real directory drives: what it checks, in which order,
which metadata calls each operation makes (the front doors' round trips) and which clock it stamps."""

from __future__ import annotations

import asyncio
import random

import pytest

from apollo import errors, limits
from apollo.client.context import ClientContext
from apollo.client.engine import ObjectEngine
from apollo.meta.service import MetaService
from apollo.proto.layout import Scheme
from apollo.proto.records import Conditions, ObjectAttrs

CELL = 64 * 1024
NOW = 1_700_000_000.5
SMALL = b"inline bytes"  # stored in the metadata row: no segment
LARGE = random.Random(7).randbytes(3 * CELL * 4 + 11)  # one segment, several stripes


class CountingMeta:
    """The metadata service, recording the name of every coroutine called on it; ``fail`` makes a call raise."""

    def __init__(self, meta: MetaService) -> None:
        self._meta = meta
        self.calls: list[str] = []
        self.fail: dict[str, Exception] = {}

    def __getattr__(self, name: str):
        attr = getattr(self._meta, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def counted(*args, **kwargs):
            self.calls.append(name)
            if name in self.fail:
                raise self.fail.pop(name)
            return await attr(*args, **kwargs)

        return counted


@pytest.fixture
def engine(drives):
    ctx, _ = drives
    counting = CountingMeta(ctx.meta)
    engine = ObjectEngine(ClientContext(counting, ctx.nodes), Scheme.parse("4+2"), CELL, clock=lambda: NOW)
    asyncio.run(engine.create_bucket("b"))
    counting.calls.clear()
    return engine, counting


async def _chunks(data: bytes):
    for start in range(0, len(data), 100_000):
        yield data[start : start + 100_000]


async def _put(engine: ObjectEngine, key: str, data: bytes, **options):
    version, _ = await engine.put_object("b", key, _chunks(data), ObjectAttrs("application/x-test"), **options)
    return version


async def _get(engine: ObjectEngine, key: str, version_id: str | None = None) -> bytes:
    version = await engine.head("b", key, version_id)
    return b"".join([bytes(piece) async for piece in engine.read(version)])


def test_metadata_calls_per_operation(engine):
    """The round trips each front door pays: a PUT checks the bucket and commits, a GET is one lookup."""
    engine, meta = engine

    def calls(coroutine) -> list[str]:
        meta.calls.clear()
        asyncio.run(coroutine)
        return meta.calls

    assert calls(_put(engine, "small", SMALL)) == ["get_bucket", "commit_version"]
    assert calls(_put(engine, "large", LARGE)) == ["get_bucket", "allocate_segment", "commit_version"]
    assert calls(_put(engine, "new", SMALL, conditions=Conditions(if_none_match_star=True))) == [
        "get_bucket", "get_version", "commit_version"
    ]  # fmt: skip
    assert calls(_get(engine, "large")) == ["get_version"]
    assert calls(engine.delete_object("b", "small")) == ["delete_object"]
    assert calls(engine.list_objects("b")) == ["list_objects"]


def test_a_put_is_refused_before_any_byte_moves(engine):
    engine, meta = engine
    with pytest.raises(errors.BucketNotFound):
        asyncio.run(engine.put_object("nope", "k", _chunks(LARGE), ObjectAttrs("t")))
    assert meta.calls == ["get_bucket"]
    asyncio.run(_put(engine, "k", SMALL))
    meta.calls.clear()
    with pytest.raises(errors.PreconditionFailed):
        asyncio.run(_put(engine, "k", LARGE, conditions=Conditions(if_none_match_star=True)))
    assert meta.calls == ["get_bucket", "get_version"]  # no segment allocated


def test_if_match_is_checked_in_the_commit_and_the_written_bytes_go_to_gc(engine):
    engine, meta = engine
    asyncio.run(_put(engine, "k", SMALL))
    meta.calls.clear()
    with pytest.raises(errors.PreconditionFailed):
        asyncio.run(_put(engine, "k", LARGE, conditions=Conditions(if_match='"not-the-etag"')))
    assert meta.calls == ["get_bucket", "allocate_segment", "commit_version", "abandon_segments"]
    assert asyncio.run(_get(engine, "k")) == SMALL


def test_refused_bytes_are_never_committed(engine):
    engine, meta = engine

    def refuse(result) -> None:
        raise errors.BadDigest(f"not {result.etag}")

    with pytest.raises(errors.BadDigest):
        asyncio.run(_put(engine, "k", LARGE, verify=refuse))
    assert meta.calls == ["get_bucket", "allocate_segment", "abandon_segments"]
    assert asyncio.run(engine.head("b", "k")) is None


def test_the_engine_stamps_every_record_with_its_clock(engine):
    engine, _ = engine

    async def scenario():
        bucket = await engine.get_bucket("b")
        version = await _put(engine, "k", SMALL)
        upload_id = await engine.create_upload("b", "mp", ObjectAttrs("t"))
        part = await engine.upload_part("b", "mp", upload_id, 1, _chunks(SMALL))
        upload = await engine.get_upload("b", "mp", upload_id)
        return bucket.created, version.last_modified, upload.created, part.last_modified

    assert asyncio.run(scenario()) == (NOW, NOW, NOW, NOW)


def test_versioned_deletes_leave_markers_and_versions_stay_readable(engine):
    engine, _ = engine

    async def scenario():
        assert await engine.get_versioning("b") == ""
        await engine.set_versioning("b", "Enabled")
        assert await engine.get_versioning("b") == "Enabled"
        first = await _put(engine, "k", LARGE)
        deleted = await engine.delete_object("b", "k")
        assert deleted.delete_marker and deleted.version_id != first.version_id
        marker = await engine.head("b", "k")
        assert marker.delete_marker and marker.version_id == deleted.version_id
        assert (await engine.list_objects("b")).entries == []
        page = await engine.list_versions("b", "", "", "", "", 10)
        assert [(v.version_id, v.delete_marker) for v in page.entries] == [
            (deleted.version_id, True), (first.version_id, False)
        ]  # fmt: skip
        assert await _get(engine, "k", first.version_id) == LARGE
        assert (await engine.head("b", "k", first.version_id, with_data=False)).data is None

    asyncio.run(scenario())


def test_delete_objects_checks_the_bucket_once_and_reports_each_key(engine):
    engine, meta = engine
    with pytest.raises(errors.BucketNotFound):
        asyncio.run(engine.delete_objects("nope", [("a", None)]))
    asyncio.run(_put(engine, "a", SMALL))
    asyncio.run(_put(engine, "c", SMALL))
    meta.calls.clear()
    meta.fail["delete_object"] = errors.MetadataUnavailable("cut")  # the first key's delete fails
    results = asyncio.run(engine.delete_objects("b", [("a", None), ("c", None)]))
    assert meta.calls == ["get_bucket", "delete_object", "delete_object"]
    assert isinstance(results[0], errors.MetadataUnavailable) and results[1].delete_marker is False
    assert asyncio.run(engine.head("b", "a")) is not None and asyncio.run(engine.head("b", "c")) is None


def test_tags_are_set_and_cleared(engine):
    engine, _ = engine

    async def scenario():
        await _put(engine, "k", SMALL)
        assert await engine.set_tags("b", "k", None, {"team": "ml"}) == "null"
        assert (await engine.head("b", "k")).attrs.tags == {"team": "ml"}
        assert await engine.clear_tags("b", "k", None) == "null"
        assert (await engine.head("b", "k")).attrs.tags == {}
        with pytest.raises(errors.ObjectNotFound):
            await engine.clear_tags("b", "missing", None)

    asyncio.run(scenario())


def test_copy_object_writes_its_own_bytes(engine):
    engine, _ = engine

    async def scenario():
        await _put(engine, "src", LARGE)
        source = await engine.head("b", "src")
        copy, _ = await engine.copy_object(source, "b", "dst", ObjectAttrs("text/copy"))
        assert copy.etag == source.etag and copy.attrs.content_type == "text/copy"
        await engine.delete_object("b", "src")
        assert await _get(engine, "dst") == LARGE

    asyncio.run(scenario())


def test_multipart_upload_with_a_copied_part(engine):
    engine, meta = engine
    first = random.Random(1).randbytes(limits.part_size_bytes_min)

    async def scenario():
        await _put(engine, "src", LARGE)
        source = await engine.head("b", "src")
        upload_id = await engine.create_upload("b", "mp", ObjectAttrs("t"))
        one = await engine.upload_part("b", "mp", upload_id, 1, _chunks(first))
        upload = await engine.get_upload("b", "mp", upload_id)
        meta.calls.clear()
        two = await engine.copy_part(source, upload, 2, 100, 5000)
        assert meta.calls == ["allocate_segment", "commit_part"]  # the upload is not looked up again
        parts, truncated = await engine.list_parts(upload, 0, 1)
        assert [p.part_number for p in parts] == [1] and truncated
        parts, truncated = await engine.list_parts(upload, 1, 10)
        assert [(p.part_number, p.etag, p.size) for p in parts] == [(2, two.etag, 4900)] and not truncated
        listed = await engine.list_uploads("b", "", "", "", "", 10)
        assert [u.upload_id for u in listed.entries] == [upload_id]
        version = await engine.complete_upload("b", "mp", upload_id, [(1, one.etag), (2, two.etag)])
        assert version.size == len(first) + 4900 and version.parts == [len(first), 4900]
        assert await _get(engine, "mp") == first + LARGE[100:5000]
        with pytest.raises(errors.UploadNotFound):
            await engine.get_upload("b", "mp", upload_id)

    asyncio.run(scenario())


def test_an_upload_belongs_to_its_key_and_an_aborted_one_is_gone(engine):
    engine, _ = engine

    async def scenario():
        upload_id = await engine.create_upload("b", "mp", ObjectAttrs("t"), checksum_algorithm="CRC32C",
                                               checksum_type="COMPOSITE")  # fmt: skip
        upload = await engine.get_upload("b", "mp", upload_id)
        assert (upload.checksum_algorithm, upload.checksum_type) == ("CRC32C", "COMPOSITE")
        with pytest.raises(errors.UploadNotFound):
            await engine.upload_part("b", "other", upload_id, 1, _chunks(SMALL))
        await engine.abort_upload("b", "mp", upload_id)
        with pytest.raises(errors.UploadNotFound):
            await engine.get_upload("b", "mp", upload_id)
        with pytest.raises(errors.BucketNotFound):
            await engine.create_upload("nope", "mp", ObjectAttrs("t"))

    asyncio.run(scenario())


def test_buckets(engine):
    engine, _ = engine

    async def scenario():
        with pytest.raises(errors.BucketExists):
            await engine.create_bucket("b")
        await engine.create_bucket("a")
        assert [b.name for b in await engine.list_buckets()] == ["a", "b"]
        await _put(engine, "k", SMALL)
        with pytest.raises(errors.BucketNotEmpty):
            await engine.delete_bucket("b")
        await engine.delete_bucket("a")
        with pytest.raises(errors.BucketNotFound):
            await engine.get_bucket("a")

    asyncio.run(scenario())
