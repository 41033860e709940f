"""Several metadata processes on one database: racing commits, leases, a database restart.

Each thread has a store object of its own (its own connections), as separate metadata
processes would, and runs every call through ``Engine.run`` as the metadata service does.
On SQLite the writers queue on the write lock; on PostgreSQL they really run at once and
the losers of a race rerun.
"""

from __future__ import annotations

import threading
import time

import pytest

from apollo import errors
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData, SegmentLayout
from apollo.proto.records import Conditions, ObjectAttrs
from apollo.testing.layouts import WRITER, etag, pending, segment_id
from apollo.testing.postgres import TempPostgres, find_bindir

WRITERS = 6


def race(stores: list[SqlStore], action) -> list[object]:
    """Run ``action(store, index)`` on every store at once; returns each one's result or exception."""
    barrier = threading.Barrier(len(stores))
    results: list[object] = [None] * len(stores)

    def run(index: int) -> None:
        store = stores[index]
        barrier.wait()
        try:
            results[index] = store.engine.run(lambda: action(store, index))
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def stores(meta_target):
    target = meta_target()
    opened = [SqlStore(target) for _ in range(WRITERS)]
    opened[0].create_bucket("b", 1.0)
    yield opened
    for store in opened:
        store.close()


def put(store: SqlStore, key: str, payload: bytes, **kw):
    return store.commit_version("b", key, size=len(payload), etag=etag(payload.hex()), attrs=ObjectAttrs(),
                                data=ObjectData(len(payload), inline=payload), now=time.time(), owner=WRITER,
                                **kw)  # fmt: skip


def segment(store: SqlStore, name: str) -> SegmentLayout:
    return pending(store, name, length=10)


def test_exactly_one_if_none_match_wins(stores):
    for round_ in range(5):
        key = f"k{round_}"
        results = race(
            stores, lambda s, i, key=key: put(s, key, bytes([i]), conditions=Conditions(if_none_match_star=True))
        )
        winners = [r for r in results if not isinstance(r, Exception)]
        assert len(winners) == 1, results
        assert all(isinstance(r, errors.PreconditionFailed) for r in results if isinstance(r, Exception)), results
        assert stores[0].get_version("b", key).etag == winners[0].etag


def test_if_match_race_has_one_winner(stores):
    first = put(stores[0], "k", b"\x00")
    results = race(stores, lambda s, i: put(s, "k", bytes([i + 1]), conditions=Conditions(if_match=first.etag)))
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1 and all(isinstance(r, errors.PreconditionFailed) for r in results if r not in winners)
    assert stores[0].get_version("b", "k").etag == winners[0].etag


def test_racing_overwrites_keep_one_version_and_lose_track_of_no_segment(stores):
    layouts = [segment(stores[0], f"seg{i}") for i in range(WRITERS)]
    results = race(stores, lambda s, i: s.commit_version(
        "b", "k", size=10, etag=etag(f"e{i}"), attrs=ObjectAttrs(), data=ObjectData(10, segments=[layouts[i]]),
        now=time.time(), owner=WRITER))  # fmt: skip
    assert not [r for r in results if isinstance(r, Exception)], results
    store = stores[0]
    versions = store.list_versions("b", "", "", "", "", 100).entries
    assert len(versions) == 1 and versions[0].is_latest
    live = {s.segment_id for s in store.get_version("b", "k").data.segments}
    collected = {g.layout.segment_id for g in store.due_garbage(2e12, 100)}
    assert len(live) == 1 and live | collected == {segment_id(f"seg{i}") for i in range(WRITERS)}
    assert not live & collected


def test_versioned_racing_writes_keep_every_version_and_one_latest(stores):
    stores[0].set_versioning("b", "Enabled")
    results = race(stores, lambda s, i: put(s, "k", bytes([i])))
    assert not [r for r in results if isinstance(r, Exception)], results
    versions = stores[0].list_versions("b", "", "", "", "", 100).entries
    assert sorted(v.version_id for v in versions) == sorted(r.version_id for r in results)
    assert [v.is_latest for v in versions].count(True) == 1


def test_bucket_delete_racing_a_commit_never_orphans_a_version(stores):
    for round_ in range(5):
        name = f"c{round_}"
        stores[0].create_bucket(name, 1.0)

        def act(store: SqlStore, index: int, name: str = name):
            if index == 0:
                return store.delete_bucket(name, 1.0)
            return store.commit_version(name, f"k{index}", size=1, etag=etag("e"), attrs=ObjectAttrs(),
                                        data=ObjectData(1, inline=b"x"), now=1.0, owner=WRITER)  # fmt: skip

        results = race(stores, act)
        orphans = stores[0].one("SELECT COUNT(*) AS n FROM versions v WHERE NOT EXISTS "
                                "(SELECT 1 FROM buckets b WHERE b.name = v.bucket)")["n"]  # fmt: skip
        assert orphans == 0, results
        if results[0] is None:  # the delete won: every commit found no bucket
            assert all(isinstance(r, errors.BucketNotFound) for r in results[1:]), results
        else:
            assert isinstance(results[0], errors.BucketNotEmpty), results


def test_complete_racing_new_parts_leaves_no_part_or_segment_behind(stores):
    store = stores[0]
    upload = store.create_upload("b", "big", ObjectAttrs(), "", 1.0)
    first = segment(store, "part1")
    store.commit_part(upload, 1, size=10, etag="1" * 32, checksums={}, data=ObjectData(10, segments=[first]), now=1.0,
                      owner=WRITER)
    late = [segment(store, f"late{i}") for i in range(WRITERS)]

    def act(s: SqlStore, index: int):
        if index == 0:
            return s.complete_upload("b", "big", upload, [(1, "1" * 32)], part_size_min=1, now=2.0)
        return s.commit_part(upload, index + 1, size=10, etag=f"{index:032x}", checksums={},
                             data=ObjectData(10, segments=[late[index]]), now=2.0, owner=WRITER)  # fmt: skip

    race(stores, act)
    assert store.one("SELECT COUNT(*) AS n FROM parts")["n"] == 0
    committed = {s.segment_id for s in store.get_version("b", "big").data.segments}
    assert committed == {segment_id("part1")}
    pending_or_garbage = {r["segment_id"] for r in store.all("SELECT segment_id FROM garbage")}
    in_segments = {r["segment_id"] for r in store.all("SELECT segment_id FROM segments")}
    assert in_segments == committed  # parts that lost the race were refused or sent to GC, never left dangling
    assert {segment_id(f"late{i}") for i in range(1, WRITERS)} <= pending_or_garbage


def test_lease_has_one_holder_and_passes_on_expiry(stores):
    a, b = stores[0], stores[1]
    results = race(stores, lambda s, i: s.acquire_lease("manager", f"p{i}", 30.0).holder)
    assert len(set(results)) == 1  # everyone agrees on the single winner
    holder = results[0]
    first = a.acquire_lease("manager", holder, 0.3)
    assert first.holder == holder
    assert b.acquire_lease("manager", "other", 30.0).holder == holder
    time.sleep(0.01)  # SQLite's clock has millisecond resolution
    renewed = a.acquire_lease("manager", holder, 0.3)
    assert renewed.expires > first.expires and renewed.acquired == first.acquired
    time.sleep(0.4)
    taken = b.acquire_lease("manager", "other", 30.0)
    assert taken.holder == "other" and taken.acquired >= renewed.expires
    a.release_lease("manager", holder)  # not the holder any more: changes nothing
    assert a.leases()[0].holder == "other"
    b.release_lease("manager", "other")
    assert a.acquire_lease("manager", holder, 30.0).holder == holder


@pytest.mark.skipif(find_bindir() is None, reason="PostgreSQL server binaries not installed")
def test_postgres_restart_mid_workload_loses_no_acknowledged_commit():
    """Calls retry while the database is down; the one whose COMMIT was cut off says its outcome is unknown."""
    with TempPostgres(durable=True) as pg:
        store = SqlStore(pg.create_database("restart"))
        store.create_bucket("b", 1.0)
        acknowledged, unknown, stop = [], [], threading.Event()

        def workload() -> None:
            n = 0
            while not stop.is_set():
                key = f"k{n:05d}"
                try:
                    store.engine.run(lambda key=key: put(store, key, key.encode()))
                    acknowledged.append(key)
                except errors.MetadataUnavailable:
                    unknown.append(key)
                n += 1

        thread = threading.Thread(target=workload)
        thread.start()
        time.sleep(0.5)
        for mode in ("immediate", "kill"):
            before = len(acknowledged)
            pg.kill() if mode == "kill" else pg.stop("immediate")
            time.sleep(1.0)
            pg.start()
            deadline = time.monotonic() + 20
            while len(acknowledged) < before + 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(acknowledged) >= before + 20, f"no progress after the {mode} restart: {pg.log_tail()}"
        stop.set()
        thread.join()
        listed = {v.key for v in store.list_objects("b", "", "", "", 100000).entries}
        assert set(acknowledged) <= listed
        assert listed <= set(acknowledged) | set(unknown)
        assert len(unknown) <= 2
        store.close()
