"""Snapshots in the metadata store, on SQLite and PostgreSQL: what they pin, what deleting them frees, and
races between taking, deleting and the deletes of what they pin (several store objects, as several
metadata processes, with PostgreSQL's concurrent transactions)."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from apollo import errors, ids
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import ObjectAttrs
from apollo.testing.layouts import WRITER, etag, pending

GC_LATER = 2e12  # a time after every grace period: what is garbage is due


def put(store: SqlStore, key: str, payload: bytes = b"", *, segments: int = 0, bucket: str = "b"):
    """An object, inline or (``segments``) in made-up segments of 10 bytes each; its version with its data."""
    data = ObjectData(10 * segments, segments=[pending(store, length=10) for _ in range(segments)]) if segments \
        else ObjectData(len(payload), inline=payload)  # fmt: skip
    version = store.engine.run(lambda: store.commit_version(bucket, key, size=data.size, etag=etag(key + payload.hex()),
                                                            attrs=ObjectAttrs(), data=data, now=time.time(),
                                                            owner=WRITER))  # fmt: skip
    return dataclasses.replace(version, data=data)


def segment_ids(version) -> set[str]:
    return {s.segment_id for s in version.data.segments}


def garbage(store: SqlStore) -> set[str]:
    return {g.layout.segment_id for g in store.due_garbage(GC_LATER, 100_000)}


def pinned(store: SqlStore, snapshot_id: str, keys: list[str]) -> list:
    return [lookup.version for lookup in store.get_snapshot_versions("b", snapshot_id, keys)]


def test_a_snapshot_pins_the_latest_versions_under_its_prefix_until_it_is_deleted(store):
    small = put(store, "data/a", b"small a")
    big = put(store, "data/b", segments=2)
    put(store, "data/c", b"c")
    store.delete_object("b", "data/c", None, time.time())  # gone before: not in it
    put(store, "other/x", b"x")
    snap = store.create_snapshot("b", "data/", 100.0, owner="key:AK")
    assert (snap.objects, snap.bytes, snap.prefix, snap.owner, snap.created) == (2, 7 + 20, "data/", "key:AK", 100.0)
    ids.snapshot_id(snap.snapshot_id)

    put(store, "data/a", b"new a")  # replaced in place (unversioned): the snapshot keeps the old bytes
    store.delete_object("b", "data/b", None, time.time())
    put(store, "data/d", b"after")  # written after: not in it
    assert not garbage(store) & segment_ids(big)
    a, b, missing = store.get_snapshot_versions("b", snap.snapshot_id, ["data/a", "data/b", "data/d"])
    assert a.version.data.inline == b"small a" and a.version.etag == small.etag
    assert segment_ids(b.version) == segment_ids(store.get_snapshot_versions("b", snap.snapshot_id, ["data/b"])[0]
                                                 .version) and b.version.size == 20  # fmt: skip
    assert missing.version is None and missing.error == "ObjectNotFound"
    page = store.list_snapshot("b", snap.snapshot_id, "", "", "", 1)
    assert [v.key for v in page.entries] == ["data/a"] and page.truncated and page.next_marker == "data/a"
    page = store.list_snapshot("b", snap.snapshot_id, "", "", "data/a", 1000)
    assert [v.key for v in page.entries] == ["data/b"] and not page.truncated
    assert [s.snapshot_id for s in store.list_snapshots("b")] == [snap.snapshot_id]
    assert store.get_bucket("b") and store.get_version("b", "data/b") is None  # the live namespace: gone

    for key in ("data/a", "other/x", "data/d"):
        store.delete_object("b", key, None, time.time())
    with pytest.raises(errors.BucketNotEmpty, match="snapshots"):
        store.delete_bucket("b", time.time())
    with pytest.raises(errors.AccessDenied):
        store.delete_snapshot("b", snap.snapshot_id, time.time(), owner="key:SOMEONE-ELSE")
    store.delete_snapshot("b", snap.snapshot_id, time.time(), owner="key:AK")
    assert segment_ids(big) <= garbage(store)  # the deleted object's data goes only now
    assert store.one("SELECT COUNT(*) AS n FROM retired_versions")["n"] == 0
    assert store.one("SELECT COUNT(*) AS n FROM snapshot_objects")["n"] == 0
    with pytest.raises(errors.SnapshotNotFound):
        store.get_snapshot("b", snap.snapshot_id)
    store.delete_bucket("b", time.time())


def test_a_version_two_snapshots_pin_lives_until_both_are_deleted(store):
    kept = put(store, "k", segments=1)
    first = store.create_snapshot("b", "", 1.0)
    second = store.create_snapshot("b", "k", 2.0)
    put(store, "k", segments=1)  # replaces it
    store.delete_snapshot("b", first.snapshot_id, 3.0)
    assert not segment_ids(kept) & garbage(store)
    assert pinned(store, second.snapshot_id, ["k"])[0].etag == kept.etag
    store.delete_snapshot("b", second.snapshot_id, 4.0)
    assert segment_ids(kept) <= garbage(store)


def test_a_versioned_bucket_keeps_old_versions_live_and_deleting_one_retires_it(store):
    store.set_versioning("b", "Enabled")
    old = put(store, "k", segments=1)
    snap = store.create_snapshot("b", "", 1.0)
    put(store, "k", segments=1)  # a newer version: the pinned one stays a live, older version
    assert pinned(store, snap.snapshot_id, ["k"])[0].version_id == old.version_id
    store.delete_object("b", "k", old.version_id, 2.0)  # now deleted for good: retired, data kept
    assert store.get_version("b", "k", old.version_id) is None
    assert pinned(store, snap.snapshot_id, ["k"])[0].version_id == old.version_id
    assert not segment_ids(old) & garbage(store)
    store.delete_snapshot("b", snap.snapshot_id, 3.0)
    assert segment_ids(old) <= garbage(store)


def test_snapshot_calls_check_what_they_are_given(store):
    store.create_bucket("c", 1.0)
    snap = store.create_snapshot("c", "", 1.0)
    for call in (lambda: store.get_snapshot("b", snap.snapshot_id),  # another bucket's
                 lambda: store.list_snapshot("b", "0" * 32, "", "", "", 10),
                 lambda: store.delete_snapshot("b", snap.snapshot_id, 2.0)):  # fmt: skip
        with pytest.raises(errors.SnapshotNotFound):
            call()
    with pytest.raises(errors.BucketNotFound):
        store.get_snapshot("nope", snap.snapshot_id)
    for bad in ("../../etc", "0" * 31, snap.snapshot_id.upper(), 7):
        with pytest.raises(ids.BadIdentifier):
            store.get_snapshot_versions("c", bad, ["k"])
    with pytest.raises(errors.InvalidRequest):
        store.get_snapshot_versions("c", snap.snapshot_id, ["k"] * 1001)
    with pytest.raises(errors.InvalidRequest):
        store.create_snapshot("c", "p" * 1025, 1.0)


@pytest.fixture
def stores(meta_target):
    target = meta_target()
    opened = [SqlStore(target) for _ in range(4)]
    opened[0].create_bucket("b", 1.0)
    yield opened
    for store in opened:
        store.close()


@pytest.mark.parametrize("kept", [0.5, 0.0], ids=["snapshots-kept", "none-kept"])
def test_snapshots_racing_overwrites_and_deletes_never_lose_pinned_data(stores, seed, kept):
    """Two writers overwrite and delete keys while two others take and delete snapshots, each call through
    ``Engine.run`` as the service makes it. At every snapshot, each pinned version's segments are neither
    garbage nor gone; at the end, nothing is retired without a snapshot naming it and every segment of a
    dropped version is garbage. ``kept``: the share of snapshots kept; with none, the bucket often has no
    snapshot, so the writers skip the pin lookup (``_remove_version``) while snapshots are being taken."""
    import random

    keys = [f"k{n}" for n in range(20)]
    for key in keys:
        put(stores[0], key, segments=1)
    stop = time.monotonic() + 4.0
    failures: list[BaseException] = []
    taken: list[str] = []

    def writer(store: SqlStore, number: int) -> None:
        rng = random.Random(seed + number)
        while time.monotonic() < stop:
            key = rng.choice(keys)
            if rng.random() < 0.3:
                store.engine.run(lambda key=key: store.delete_object("b", key, None, time.time()))
            else:
                put(store, key, segments=1)  # pending() outside the retried call: allocated once

    def snapshotter(store: SqlStore, number: int) -> None:
        rng = random.Random(seed + 100 + number)
        while time.monotonic() < stop:
            snap = store.engine.run(lambda: store.create_snapshot("b", "", time.time()))
            lookups = store.get_snapshot_versions("b", snap.snapshot_id, keys)
            found = [lookup.version for lookup in lookups if lookup.version]
            assert len(found) == snap.objects
            lost = set().union(*(segment_ids(v) for v in found)) & garbage(store)
            assert not lost, f"snapshot {snap.snapshot_id} pins segments already queued for GC: {lost}"
            if rng.random() >= kept:
                store.engine.run(lambda snap=snap: store.delete_snapshot("b", snap.snapshot_id, time.time()))
            else:
                taken.append(snap.snapshot_id)
            time.sleep(0.02)  # a snapshot touches every row it pins: back to back, writers would rerun for ever

    def run(action, store: SqlStore, number: int) -> None:
        try:
            action(store, number)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(writer, stores[0], 0)),
               threading.Thread(target=run, args=(writer, stores[1], 1)),
               threading.Thread(target=run, args=(snapshotter, stores[2], 0)),
               threading.Thread(target=run, args=(snapshotter, stores[3], 1))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    store = stores[0]
    orphans = store.one("SELECT COUNT(*) AS n FROM retired_versions r WHERE NOT EXISTS "
                        "(SELECT 1 FROM snapshot_objects s WHERE s.vid = r.id)")["n"]  # fmt: skip
    assert orphans == 0
    for snapshot_id in taken:
        store.delete_snapshot("b", snapshot_id, time.time())
    live = store.all("SELECT segment_id FROM segments")
    assert store.one("SELECT COUNT(*) AS n FROM retired_versions")["n"] == 0
    assert len(live) == sum(1 for key in keys if store.get_version("b", key) is not None)
    assert not {row["segment_id"] for row in live} & garbage(store)


def test_a_tar_index_goes_with_its_version_and_stays_with_a_retired_one(store):
    def commit(key: str, members: list) -> int:
        data = ObjectData(2000, segments=[pending(store, length=2000)])
        return store.commit_version("b", key, size=2000, etag=etag(key), attrs=ObjectAttrs(), data=data,
                                    now=time.time(), owner=WRITER, members=members).seq  # fmt: skip

    gone = commit("gone.tar", [["a", 512, 10]])
    kept = commit("kept.tar", [["a", 512, 10], ["b", 1024, 20]])
    assert store.list_tar_members("b", "kept.tar") == [("a", 512, 10), ("b", 1024, 20)]
    for bad in ([["a", 1990, 20]], [["a", 0, 1], ["a", 2, 1]], [["", 0, 1]], [["a\n", 0, 1]], [["a", -1, 1]],
                [["a", 0]], "a"):  # fmt: skip
        with pytest.raises(errors.InvalidRequest):
            commit("bad.tar", bad)
    assert store.get_version("b", "bad.tar") is None
    snap = store.create_snapshot("b", "kept", 1.0)
    store.delete_object("b", "gone.tar", None, time.time())
    store.delete_object("b", "kept.tar", None, time.time())  # pinned: retired, its index with it
    assert store.get_tar_members("b", [["kept.tar", kept, "b"], ["gone.tar", gone, "a"], ["kept.tar", gone, "a"],
                                       ["kept.tar", kept, "zz"]]) == [[1024, 20], None, None, None]  # fmt: skip
    assert store.list_tar_members("b", "kept.tar", snapshot_id=snap.snapshot_id) == [("a", 512, 10), ("b", 1024, 20)]
    store.create_bucket("c", 1.0)
    with pytest.raises(errors.ObjectNotFound):
        store.list_tar_members("c", "kept.tar", snapshot_id=snap.snapshot_id)  # another bucket's snapshot
    with pytest.raises(ids.BadIdentifier):
        store.list_tar_members("b", "kept.tar", snapshot_id="'; DROP TABLE x")
    store.delete_snapshot("b", snap.snapshot_id, time.time())
    assert store.one("SELECT COUNT(*) AS n FROM tar_members")["n"] == 0
