"""KV namespaces in the metadata store, on SQLite and PostgreSQL: the budget holds after every put, the least
recently read value goes first (reads gathered in memory count before the ranking), expired values are
absent at once and removed by the GC pass, evicted data goes to GC, and every path that adds or drops a
version keeps the accounting (overwrite, delete, rename, transaction commit)."""

from __future__ import annotations

import pytest

from apollo import errors, limits
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import ObjectAttrs
from apollo.testing.layouts import WRITER, etag, pending
from apollo.testing.postgres import rows_filtered_out

GC_LATER = 2e12


def put(store: SqlStore, key: str, size: int, now: float, *, segments: bool = False, bucket: str = "kv"):
    """A value of ``size`` bytes: inline, or in one made-up segment (whose shards GC would delete)."""
    data = ObjectData(size, segments=[pending(store, length=size)]) if segments else \
        ObjectData(size, inline=b"v" * size)  # fmt: skip
    return store.engine.run(lambda: store.commit_version(bucket, key, size=size, etag=etag(key), attrs=ObjectAttrs(),
                                                         data=data, now=now, owner=WRITER))  # fmt: skip


def live(store: SqlStore, keys: list[str], now: float) -> list[str]:
    return [lookup.version.key for lookup in store.kv_lookup("kv", keys, now) if lookup.version is not None]


def read(store: SqlStore, keys: list[str], now: float) -> None:
    """What ``MetaService.kv_lookup`` does: look up, and gather the reads (not written yet)."""
    store.kv_touches.record([lookup.version.seq for lookup in store.kv_lookup("kv", keys, now) if lookup.version], now)


@pytest.fixture
def kv(store):
    store.create_kv_namespace("kv", 30, 0, 1.0)
    return store


def test_a_put_over_the_budget_evicts_the_least_recently_read_values(kv):
    put(kv, "a", 10, 10.0)
    put(kv, "b", 10, 11.0, segments=True)
    put(kv, "c", 10, 12.0)
    read(kv, ["a"], 13.0)  # a is now more recent than b and c, though only in memory
    put(kv, "d", 10, 14.0)
    assert live(kv, ["a", "b", "c", "d"], 15.0) == ["a", "c", "d"]
    namespace = kv.get_kv_namespace("kv")
    assert (namespace.used_bytes, namespace.entries, namespace.budget_bytes) == (30, 3, 30)
    assert len(kv.due_garbage(GC_LATER, 100)) == 1  # b's segment
    read(kv, ["a"], 15.0)
    put(kv, "e", 20, 16.0)  # room for 20: c and d go (written at 12 and 14), a (read at 15) stays
    assert live(kv, ["a", "b", "c", "d", "e"], 17.0) == ["a", "e"]
    assert kv.get_kv_namespace("kv").used_bytes == 30


def test_a_value_larger_than_the_budget_is_refused_and_changes_nothing(kv):
    put(kv, "a", 10, 10.0)
    with pytest.raises(errors.EntityTooLarge, match="budget"):
        put(kv, "huge", 31, 11.0, segments=True)
    assert live(kv, ["a", "huge"], 12.0) == ["a"]
    assert kv.get_kv_namespace("kv").used_bytes == 10
    assert kv.due_garbage(GC_LATER, 100)[0].owner == WRITER  # still the writer's pending write, which it drops


def test_expired_values_are_absent_at_once_go_first_and_the_gc_pass_removes_them(store):
    store.create_kv_namespace("kv", 30, 100.0, 1.0)
    put(store, "old", 10, 1000.0)
    put(store, "new", 10, 1050.0)
    read(store, ["old"], 1099.0)
    assert store.kv_prefix_hits("kv", ["old", "new"], 1099.0) == 2
    assert live(store, ["old", "new"], 1100.5) == ["new"]  # old expired at 1100
    assert store.kv_prefix_hits("kv", ["old", "new"], 1100.5) == 0
    put(store, "newer", 20, 1101.0)  # 40 > 30: the expired value goes, though read last
    assert live(store, ["old", "new", "newer"], 1101.0) == ["new", "newer"]
    assert store.expire_kv(1140.0, limits.kv_expired_per_pass_max) == 0  # nothing expired remains to remove...
    assert store.expire_kv(1160.0, limits.kv_expired_per_pass_max) == 1  # ...until new's TTL ends
    assert store.get_kv_namespace("kv").entries == 1


def test_prefix_hits_count_the_leading_keys_that_hold_values(kv):
    for key in ("k0", "k1", "k3"):
        put(kv, key, 1, 10.0)
    assert kv.kv_prefix_hits("kv", ["k0", "k1", "k2", "k3"], 11.0) == 2
    assert kv.kv_prefix_hits("kv", ["k2", "k0"], 11.0) == 0
    assert kv.kv_prefix_hits("kv", [], 11.0) == 0
    assert kv.kv_prefix_hits("kv", [f"k{n}" for n in (0, 1)] * 400, 11.0) == 800  # over one IN list


def test_every_path_that_adds_or_drops_a_version_keeps_the_accounting(kv):
    put(kv, "a", 10, 10.0)
    put(kv, "a", 4, 11.0)  # an overwrite replaces the value's size
    assert (kv.get_kv_namespace("kv").used_bytes, kv.get_kv_namespace("kv").entries) == (4, 1)
    kv.rename_object("kv", "a", "b", 12.0)
    assert live(kv, ["a", "b"], 13.0) == ["b"]
    put(kv, "c", 6, 14.0)
    kv.delete_object("kv", "c", None, 15.0)
    assert (kv.get_kv_namespace("kv").used_bytes, kv.get_kv_namespace("kv").entries) == (4, 1)
    txn = kv.begin_txn("kv", 16.0, WRITER)
    for key in ("t1", "t2"):
        kv.stage_put(txn.txn_id, "kv", key, size=13, etag=etag(key), attrs=ObjectAttrs(),
                     data=ObjectData(13, inline=b"t" * 13), now=16.0, owner=WRITER)  # fmt: skip
    kv.stage_delete(txn.txn_id, "kv", "b", 16.0, WRITER)
    kv.commit_txn(txn.txn_id, "kv", 17.0, WRITER)
    assert (kv.get_kv_namespace("kv").used_bytes, kv.get_kv_namespace("kv").entries) == (26, 2)
    kv.set_kv_namespace("kv", 20, None, 18.0)  # a smaller budget evicts at once
    assert (kv.get_kv_namespace("kv").used_bytes, live(kv, ["t1", "t2"], 19.0)) == (13, ["t2"])
    kv.delete_object("kv", "t2", None, 20.0)
    kv.delete_bucket("kv", 21.0)
    with pytest.raises(errors.BucketNotFound):
        kv.get_kv_namespace("kv")


def test_what_a_namespace_refuses(store):
    with pytest.raises(errors.BucketNotFound):
        store.set_kv_namespace("missing", 10, None, 1.0)
    with pytest.raises(errors.BucketExists):
        store.create_kv_namespace("b", 10, 0, 1.0)  # a namespace is made with its bucket, never on one
    with pytest.raises(errors.InvalidRequest, match="not a KV namespace"):
        store.set_kv_namespace("b", 10, None, 2.0)
    with pytest.raises(errors.InvalidRequest, match="not a KV namespace"):
        store.kv_prefix_hits("b", ["x"], 2.0)
    for budget, ttl in ((0, 0), (-1, 0), (True, 0), ("10", 0), (1.5, 0), (limits.kv_budget_bytes_max + 1, 0),
                        (10, -1), (10, "1"), (10, True), (10, None), (10, limits.kv_ttl_s_max + 1)):  # fmt: skip
        with pytest.raises(errors.InvalidRequest):
            store.create_kv_namespace("kv", budget, ttl, 2.0)
    with pytest.raises(errors.BucketNotFound):
        store.get_bucket("kv")  # a refused namespace leaves no bucket behind
    store.create_kv_namespace("kv", 10, 60.0, 2.0)
    assert store.set_kv_namespace("kv", 20, None, 2.5).ttl_s == 60.0  # None keeps the TTL
    with pytest.raises(errors.InvalidRequest):
        store.set_kv_namespace("kv", 0, None, 2.5)
    with pytest.raises(errors.InvalidRequest, match="KV namespace"):
        store.set_versioning("kv", "Enabled")
    with pytest.raises(errors.InvalidRequest, match="KV namespace"):
        store.create_snapshot("kv", "", 3.0)
    too_long, too_many = "k" * (limits.key_length_bytes_max + 1), ["k"] * (limits.batch_lookup_items_max + 1)
    for keys in ("k", [1], [""], [too_long], too_many):
        with pytest.raises(errors.InvalidRequest):
            store.kv_lookup("kv", keys, 3.0)
    assert store.kv_lookup("b", [], 3.0) == []  # nothing asked, nothing said (not even "not a namespace")


def test_reads_gathered_stay_until_a_transaction_that_commits_writes_them(kv):
    """A put's eviction writes the gathered reads inside its own transaction; when that transaction is undone
    (here: a commit refused after its version was inserted), the reads are not lost with it."""
    put(kv, "a", 10, 10.0)
    put(kv, "b", 10, 11.0)
    put(kv, "c", 10, 12.0)
    read(kv, ["a"], 13.0)
    with pytest.raises(errors.InvalidRequest, match="twice"):
        kv.commit_version("kv", "d", size=10, etag=etag("d"), attrs=ObjectAttrs(),
                          data=ObjectData(10, inline=b"d" * 10), now=14.0, owner=WRITER,
                          members=[["m", 0, 1], ["m", 0, 1]])  # fmt: skip
    assert len(kv.kv_touches) == 1
    put(kv, "d", 10, 15.0)  # b, written at 11 and never read, goes; a's read still counts
    assert live(kv, ["a", "b", "c", "d"], 16.0) == ["a", "c", "d"]
    assert kv.apply_kv_touches() == 1 and len(kv.kv_touches) == 0


def test_a_multipart_completion_is_accounted_and_evicts(kv):
    put(kv, "a", 10, 10.0)
    put(kv, "b", 10, 11.0)
    upload = kv.create_upload("kv", "multi", ObjectAttrs(), "", 12.0)
    for number in (1, 2):
        kv.commit_part(upload, number, size=10, etag=f"{number:032x}", checksums={},
                       data=ObjectData(10, segments=[pending(kv, length=10)]), now=12.0, owner=WRITER)  # fmt: skip
    kv.complete_upload("kv", "multi", upload, [(1, f"{1:032x}"), (2, f"{2:032x}")], part_size_min=0, now=13.0)
    assert live(kv, ["a", "b", "multi"], 14.0) == ["b", "multi"]
    assert (kv.get_kv_namespace("kv").used_bytes, kv.get_kv_namespace("kv").entries) == (30, 2)


def test_reconcile_repairs_entries_and_counts_after_a_lossy_recovery(kv):
    put(kv, "a", 10, 10.0)
    put(kv, "b", 10, 11.0)
    with kv.tx() as db:  # what a journal with gaps can leave: an entry of no value, a value of no entry
        db.execute("DELETE FROM kv_entries WHERE vid = (SELECT id FROM versions WHERE key = 'b')")
        db.execute("INSERT INTO kv_entries (vid, bucket, size, atime, expires) VALUES (999999, 'kv', 20, 1, 1e18)")
        db.execute("UPDATE kv_namespaces SET used_bytes = 7, entries = 9")
    with kv.tx() as db:
        fixes = kv.reconcile_kv(db, 20.0)
    assert list(fixes.values()) == [1, 1]
    assert (kv.get_kv_namespace("kv").used_bytes, kv.get_kv_namespace("kv").entries) == (20, 2)
    assert live(kv, ["a", "b"], 21.0) == ["a", "b"]


def test_a_batch_lookup_probes_each_key_even_in_a_namespace_never_analyzed(postgres):
    """On PostgreSQL, a namespace just filled (autovacuum has not analyzed it yet) is read an index probe per
    key. As ``key = ANY(?)`` its plan scanned every value of the namespace: 7.6 ms for 16 keys of 20,000."""
    url = postgres.create_database("kv_lookup_plan")
    store = SqlStore(url)
    store.create_kv_namespace("kv", 1 << 30, 0, 1.0)
    value = {"size": 1, "etag": etag("v"), "attrs": ObjectAttrs(), "data": ObjectData(1, inline=b"v")}
    for n in range(100):
        store.commit_versions([{"bucket": "kv", "key": f"k{n}-{i}", **value} for i in range(32)], owner=WRITER, now=2.0)
    keys = [f"k{n}-0" for n in range(16)]
    assert live(store, keys, 3.0) == keys
    removed, plan = rows_filtered_out(url, *store._live_statement("kv", keys, 3.0))
    store.close()
    assert "actual time" in plan and removed < 100, plan
