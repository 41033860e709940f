"""Concurrent lookups of latest versions share ``get_versions`` calls (``apollo.client.lookups``) and each
still gets exactly what ``get_version`` alone answers: a version, None, a delete marker, an error. The calls
go to a real metadata service in process (SQLite), through a recorder of which calls were made."""

from __future__ import annotations

import asyncio
import time

import pytest

from apollo import errors
from apollo.client.context import ClientContext
from apollo.client.engine import ObjectEngine
from apollo.client.lookups import IN_FLIGHT_MAX, LatestLookups
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.layout import Scheme
from apollo.proto.records import ObjectAttrs


class Recorded:
    """The service's calls, each recorded by method and item count; ``fail`` makes batch calls raise."""

    def __init__(self, meta: MetaService) -> None:
        self.meta, self.calls, self.fail = meta, [], None

    async def __call__(self, method: str, *args):
        self.calls.append((method, len(args[0]) if method == "get_versions" else 1))
        await asyncio.sleep(0.005)  # a network round trip: lookups arriving meanwhile queue
        if self.fail is not None and method == "get_versions":
            raise self.fail
        return await getattr(self.meta, method)(*args)


@pytest.fixture
def meta(tmp_path):
    service = MetaService(SqlStore(tmp_path / "meta.db"))
    engine = ObjectEngine(ClientContext(service, {}), Scheme.parse("4+2"))

    async def fill():
        await service.create_bucket("b", time.time())
        await service.create_bucket("v", time.time())
        await service.set_versioning("v", "Enabled")
        for n in range(20):
            await engine.put_object("b", f"k{n}", _body(b"x%d" % n), ObjectAttrs())
        await engine.put_object("v", "gone", _body(b"old"), ObjectAttrs())
        await engine.delete_object("v", "gone")  # a delete marker is now its latest version

    asyncio.run(fill())
    yield service
    service.close()


async def _body(data: bytes):
    yield data


def test_concurrent_lookups_share_calls_and_each_gets_what_it_alone_would(meta):
    recorded = Recorded(meta)
    lookups = LatestLookups(recorded)
    names = [("b", f"k{n}") for n in range(20)] + [("b", "missing"), ("v", "gone"), ("nobucket", "k")]

    async def alone(bucket, key):
        try:
            return await meta.get_version(bucket, key)
        except errors.ApolloError as exc:
            return type(exc)

    async def coalesced(bucket, key):
        try:
            return await lookups.get(bucket, key)
        except errors.ApolloError as exc:
            return type(exc)

    async def both():
        expected = [await alone(*name) for name in names]
        got = await asyncio.gather(*(coalesced(*name) for name in names))
        return expected, got

    expected, got = asyncio.run(both())
    assert got == expected
    assert got[-3:] == [None, got[-2], errors.BucketNotFound] and got[-2].delete_marker
    # Made together, they went together: a call of ``share_min`` and one of the rest; the missing object, the
    # delete marker and the missing bucket were then each asked alone.
    shared = [n for method, n in recorded.calls if method == "get_versions"]
    assert shared == [lookups.share_min, len(names) - lookups.share_min]
    assert [method for method, _ in recorded.calls].count("get_version") == 3


def test_a_lone_lookup_is_asked_alone(meta):
    recorded = Recorded(meta)
    version = asyncio.run(LatestLookups(recorded).get("b", "k3"))
    assert version.data.inline == b"x3" and recorded.calls == [("get_version", 1)]


def test_a_failed_shared_call_fails_each_of_its_lookups(meta):
    recorded = Recorded(meta)
    recorded.fail = errors.MetadataUnavailable("the metadata service is unavailable; retry later")
    lookups = LatestLookups(recorded)

    async def run():
        return await asyncio.gather(*(lookups.get("b", f"k{n}") for n in range(10)), return_exceptions=True)

    outcomes = asyncio.run(run())
    assert all(isinstance(o, errors.MetadataUnavailable) for o in outcomes)
    assert {method for method, _ in recorded.calls} == {"get_versions"}


def test_callers_that_keep_looking_up_share_calls_evenly_turn_after_turn(meta):
    """32 callers, each making a lookup as soon as its last answered (a data loader's workers): the callers a
    call answers wake together and go together, and each call takes its share, so every call carries about half
    of them. (Sending the first of them at once made a call of 1 and one of 31, turn after turn.)"""
    recorded = Recorded(meta)
    lookups = LatestLookups(recorded)

    async def caller(n: int) -> None:
        for turn in range(10):
            assert (await lookups.get("b", f"k{(n + turn) % 20}")).key == f"k{(n + turn) % 20}"

    async def run():
        await asyncio.gather(*(caller(n) for n in range(32)))

    asyncio.run(run())
    sizes = [n for _, n in recorded.calls]
    assert sum(sizes) == 320 and max(sizes) <= 32 // IN_FLIGHT_MAX  # no call carries more than its share
    assert sum(n for n in sizes if n >= 12) >= 0.75 * 320, sizes  # and most carry about that
