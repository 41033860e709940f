"""Lookups run on the service's event loop on PostgreSQL (``apollo.meta.async_sql``), against a real server:
the plan answers what the store's own method answers, errors are the same, and a database that goes away
and comes back mid-lookup costs a wait, not an error."""

from __future__ import annotations

import asyncio
import time

import pytest

from apollo import errors
from apollo.meta.async_sql import AsyncSql
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import ObjectAttrs
from apollo.testing.layouts import WRITER, etag, pending
from apollo.testing.postgres import TempPostgres, find_bindir

pytestmark = pytest.mark.skipif(find_bindir() is None, reason="PostgreSQL server binaries not installed")


def _filled(url: str) -> SqlStore:
    store = SqlStore(url)
    store.create_bucket("b", 1.0)
    for n in range(6):
        if n % 2:
            data = ObjectData(20, segments=[pending(store, length=10), pending(store, length=10)])
        else:
            data = ObjectData(2, inline=b"%02d" % n)
        store.commit_version("b", f"k{n}", size=data.size, etag=etag(str(n)), attrs=ObjectAttrs(), data=data,
                             now=time.time(), owner=WRITER)  # fmt: skip
    return store


def test_a_lookup_on_the_event_loop_answers_what_the_store_does(postgres):
    store = _filled(postgres.create_database("async_sql_same"))
    items = [("b", f"k{n}", None) for n in range(6)] + [("b", "missing", None), ("nope", "k0", None)]

    async def lookups():
        reads = AsyncSql(store.engine)
        try:
            one = await reads.run(lambda: store.get_version_plan("b", "k1"))
            batch = await reads.run(lambda: store.get_versions_plan(items))
            with pytest.raises(errors.BucketNotFound):
                await reads.run(lambda: store.get_version_plan("nope", "k0"))
            with pytest.raises(errors.InvalidRequest):
                await reads.run(lambda: store.get_versions_plan("not a list"))
            return one, batch
        finally:
            await reads.close()

    one, batch = asyncio.run(lookups())
    assert one == store.get_version("b", "k1") and len(one.data.segments) == 2
    assert batch == store.get_versions(items)
    store.close()


def test_the_service_runs_its_lookups_on_the_loop_when_given_async_sql(postgres):
    store = _filled(postgres.create_database("async_sql_service"))

    async def lookups():
        meta = MetaService(store, async_sql=AsyncSql(store.engine))
        ran = []
        real = meta.async_sql.run
        meta.async_sql.run = lambda make_plan: ran.append(1) or real(make_plan)
        try:
            return await meta.get_version("b", "k3"), await meta.get_versions([("b", "k0", None)]), ran
        finally:
            await meta.aclose()

    version, lookups, ran = asyncio.run(lookups())
    assert version.key == "k3" and lookups[0].version.data.inline == b"00" and ran == [1, 1]


def test_a_lookup_waits_out_a_database_restart():
    with TempPostgres(durable=False) as pg:
        store = _filled(pg.create_database("async_sql_restart"))

        async def scenario():
            reads = AsyncSql(store.engine)
            try:
                assert (await reads.run(lambda: store.get_version_plan("b", "k0"))).key == "k0"
                pg.stop("immediate")  # the pooled connection is now broken
                asking = asyncio.ensure_future(reads.run(lambda: store.get_versions_plan([("b", "k1", None)])))
                await asyncio.sleep(2)
                assert not asking.done()
                pg.start()
                return await asyncio.wait_for(asking, 30)
            finally:
                await reads.close()

        lookups = asyncio.run(scenario())
        assert lookups[0].version.key == "k1" and len(lookups[0].version.data.segments) == 2
        store.close()
