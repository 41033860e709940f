"""Transactions over many objects in the metadata store, on SQLite and PostgreSQL: nothing staged is
visible before the commit and everything after it, abort and expiry hand the data to GC, conditional
commits, limits, identifiers, and two commits racing for one prefix (several store objects, as several
metadata processes)."""

from __future__ import annotations

import threading
import time

import pytest

from apollo import errors, ids, limits
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import ObjectAttrs
from apollo.testing.layouts import WRITER, etag, pending

GC_LATER = 2e12  # a time after every grace period: what is garbage is due
OTHER = "key:OTHER"


def stage(store: SqlStore, txn_id: str, key: str, payload: bytes = b"", *, segments: int = 0, owner: str = WRITER,
          if_none_match: bool = False, bucket: str = "b"):  # fmt: skip
    """Stage a put, inline or in made-up segments of 10 bytes each; returns its data."""
    data = ObjectData(10 * segments, segments=[pending(store, length=10, owner=owner) for _ in range(segments)]) \
        if segments else ObjectData(len(payload), inline=payload)  # fmt: skip
    store.engine.run(lambda: store.stage_put(txn_id, bucket, key, size=data.size, etag=etag(key + payload.hex()),
                                             attrs=ObjectAttrs(content_type="text/x"), data=data, now=time.time(),
                                             owner=owner, if_none_match=if_none_match))  # fmt: skip
    return data


def put(store: SqlStore, key: str, payload: bytes = b"x") -> None:
    data = ObjectData(len(payload), inline=payload)
    store.commit_version("b", key, size=data.size, etag=etag(key), attrs=ObjectAttrs(), data=data, now=time.time(),
                         owner=WRITER)  # fmt: skip


def begin(store: SqlStore, **options):
    return store.engine.run(lambda: store.begin_txn("b", time.time(), WRITER, **options))


def keys(store: SqlStore, prefix: str = "") -> list[str]:
    return [v.key for v in store.list_objects("b", prefix, "", "", 1000).entries]


def garbage(store: SqlStore) -> set[str]:
    return {g.layout.segment_id for g in store.due_garbage(GC_LATER, 100_000)}


def segment_ids(data: ObjectData) -> set[str]:
    return {s.segment_id for s in data.segments}


def test_nothing_staged_is_visible_before_the_commit_and_everything_after(store):
    put(store, "ckpt/old", b"old")
    txn = begin(store)
    ids.txn_id(txn.txn_id)
    assert (txn.state, txn.bucket, txn.owner, txn.items) == ("open", "b", WRITER, 0)
    small = stage(store, txn.txn_id, "ckpt/a", b"tiny")
    big = stage(store, txn.txn_id, "ckpt/b", segments=3)
    store.stage_delete(txn.txn_id, "b", "ckpt/old", time.time(), WRITER)
    # staged: no reader sees any of it, and the segments are out of the pending-write expiry
    assert keys(store) == ["ckpt/old"]
    assert store.get_version("b", "ckpt/a") is None and store.get_version("b", "ckpt/b") is None
    assert [lookup.error for lookup in store.get_versions([("b", "ckpt/a", None), ("b", "ckpt/b", None)])] == \
        ["ObjectNotFound", "ObjectNotFound"]  # fmt: skip
    assert not garbage(store) & segment_ids(big)
    assert store.get_txn(txn.txn_id, "b", WRITER).items == 3

    done = store.commit_txn(txn.txn_id, "b", time.time(), WRITER)
    assert (done.state, done.items) == ("committed", 3)
    assert keys(store) == ["ckpt/a", "ckpt/b"]
    a = store.get_version("b", "ckpt/a")
    assert a.data.inline == small.inline and a.attrs.content_type == "text/x"
    assert {s.segment_id for s in store.get_version("b", "ckpt/b").data.segments} == segment_ids(big)
    assert store.commit_txn(txn.txn_id, "b", time.time(), WRITER).state == "committed"  # sent again: the same
    with pytest.raises(errors.TransactionClosed):
        stage(store, txn.txn_id, "ckpt/c", b"late")
    with pytest.raises(errors.TransactionClosed):
        store.abort_txn(txn.txn_id, "b", time.time(), WRITER)
    assert not garbage(store) & segment_ids(big)


def test_an_abort_leaves_nothing_and_hands_the_data_to_gc(store):
    txn = begin(store)
    data = stage(store, txn.txn_id, "ckpt/a", segments=2)
    stage(store, txn.txn_id, "ckpt/b", b"small")
    store.abort_txn(txn.txn_id, "b", time.time(), WRITER)
    store.abort_txn(txn.txn_id, "b", time.time(), WRITER)  # again: no error
    assert keys(store) == []
    assert segment_ids(data) <= garbage(store)
    assert store.one("SELECT COUNT(*) AS n FROM segments")["n"] == 0
    with pytest.raises(errors.TransactionClosed):
        store.commit_txn(txn.txn_id, "b", time.time(), WRITER)
    with pytest.raises(errors.TransactionClosed):
        stage(store, txn.txn_id, "ckpt/c", b"late")


def test_an_expired_transaction_is_aborted_by_the_collector_and_its_data_reclaimed(store):
    txn = begin(store, ttl_s=1)  # clamped to the minimum the service grants
    assert txn.expires - txn.created == limits.txn_ttl_s_min
    long = begin(store, ttl_s=10**9)
    assert long.expires - long.created == limits.txn_ttl_s_max
    data = stage(store, txn.txn_id, "ckpt/a", segments=2)
    assert store.expire_txns(time.time(), 10) == []
    later = txn.expires + 1
    with pytest.raises(errors.TransactionClosed):
        store.commit_txn(txn.txn_id, "b", later, WRITER)
    expired = store.expire_txns(later, 10)
    assert [t.txn_id for t in expired] == [txn.txn_id]
    assert segment_ids(data) <= garbage(store)
    with pytest.raises(errors.TransactionNotFound):
        store.get_txn(txn.txn_id, "b", WRITER)
    assert store.get_txn(long.txn_id, "b", WRITER).state == "open"
    assert keys(store) == []


def test_a_commit_conditioned_on_an_absent_prefix_applies_nothing_when_objects_exist(store):
    txn = begin(store, if_prefix_absent="ckpt/step-100/")
    stage(store, txn.txn_id, "ckpt/step-100/a", b"a")
    stage(store, txn.txn_id, "other/b", b"b")
    put(store, "ckpt/step-1000", b"not under the prefix")
    put(store, "ckpt/step-100/x", b"another job's")
    with pytest.raises(errors.PreconditionFailed):
        store.commit_txn(txn.txn_id, "b", time.time(), WRITER)
    assert keys(store) == ["ckpt/step-100/x", "ckpt/step-1000"]
    assert store.get_txn(txn.txn_id, "b", WRITER).state == "committing"  # no more stagings: the caller aborts it
    with pytest.raises(errors.TransactionClosed):
        stage(store, txn.txn_id, "ckpt/step-100/b", b"b")
    store.delete_object("b", "ckpt/step-100/x", None, time.time())  # a deleted object does not count
    store.commit_txn(txn.txn_id, "b", time.time(), WRITER)
    assert keys(store) == ["ckpt/step-100/a", "ckpt/step-1000", "other/b"]


def test_a_staged_put_with_if_none_match_fails_the_commit_if_the_key_exists(store):
    txn = begin(store)
    stage(store, txn.txn_id, "fresh", b"1", if_none_match=True)
    stage(store, txn.txn_id, "taken", b"2", if_none_match=True)
    put(store, "taken", b"first")
    with pytest.raises(errors.PreconditionFailed):
        store.commit_txn(txn.txn_id, "b", time.time(), WRITER)
    assert keys(store) == ["taken"] and store.get_version("b", "taken").data.inline == b"first"


def test_the_last_staging_of_a_key_wins_and_the_earlier_data_goes_to_gc(store):
    txn = begin(store)
    first = stage(store, txn.txn_id, "k", segments=1)
    second = stage(store, txn.txn_id, "k", segments=2)
    assert segment_ids(first) <= garbage(store) and not segment_ids(second) & garbage(store)
    store.stage_delete(txn.txn_id, "b", "gone", time.time(), WRITER)
    stage(store, txn.txn_id, "gone", b"staged after the delete")
    assert store.get_txn(txn.txn_id, "b", WRITER).items == 2
    store.commit_txn(txn.txn_id, "b", time.time(), WRITER)
    assert {s.segment_id for s in store.get_version("b", "k").data.segments} == segment_ids(second)
    assert store.get_version("b", "gone").data.inline == b"staged after the delete"


def test_versioned_buckets_keep_older_versions_and_deletes_leave_markers(store):
    store.set_versioning("b", "Enabled")
    put(store, "k", b"v1")
    txn = begin(store)
    stage(store, txn.txn_id, "k", b"v2")
    store.stage_delete(txn.txn_id, "b", "d", time.time(), WRITER)
    put(store, "d", b"d1")
    store.commit_txn(txn.txn_id, "b", time.time(), WRITER)
    versions = store.list_versions("b", "", "", "", "", 100).entries
    assert [(v.key, v.delete_marker) for v in versions] == [("d", True), ("d", False), ("k", False), ("k", False)]
    assert store.get_version("b", "k").data.inline == b"v2"


def test_only_the_key_that_began_a_transaction_may_use_it(store):
    txn = begin(store)
    with pytest.raises(errors.AccessDenied):
        stage(store, txn.txn_id, "k", b"x", owner=OTHER)
    for call in (store.commit_txn, store.abort_txn):
        with pytest.raises(errors.AccessDenied):
            call(txn.txn_id, "b", time.time(), OTHER)
    with pytest.raises(errors.AccessDenied):
        store.get_txn(txn.txn_id, "b", OTHER)
    with pytest.raises(errors.AccessDenied):  # segments another key allocated are not this key's to stage
        data = ObjectData(10, segments=[pending(store, length=10, owner=OTHER)])
        store.stage_put(txn.txn_id, "b", "k", size=10, etag=etag("k"), attrs=ObjectAttrs(), data=data,
                        now=time.time(), owner=WRITER)  # fmt: skip
    store.create_bucket("c", 1.0)
    with pytest.raises(errors.TransactionNotFound):  # named with another bucket
        store.commit_txn(txn.txn_id, "c", time.time(), WRITER)
    assert store.get_txn(txn.txn_id, "b", WRITER).items == 0


@pytest.mark.parametrize("bad", ["", "../../etc", "A" * 32, "0" * 31, "0" * 33, 7, None, "0" * 32 + "\n"])
def test_a_malformed_transaction_id_is_refused_before_any_query(store, bad):
    for call in (lambda: store.get_txn(bad, "b", WRITER), lambda: store.commit_txn(bad, "b", 1.0, WRITER),
                 lambda: store.abort_txn(bad, "b", 1.0, WRITER),
                 lambda: store.stage_delete(bad, "b", "k", 1.0, WRITER)):  # fmt: skip
        with pytest.raises(ids.BadIdentifier):
            call()


def test_limits_on_keys_staged_open_transactions_and_arguments(store, monkeypatch):
    monkeypatch.setattr(limits, "txn_items_max", 3)
    txn = begin(store)
    for key in "abc":
        stage(store, txn.txn_id, key, b"x")
    stage(store, txn.txn_id, "a", b"again")  # the same key again: no new item
    with pytest.raises(errors.InvalidRequest, match="holds 3 keys"):
        store.stage_delete(txn.txn_id, "b", "d", time.time(), WRITER)
    monkeypatch.setattr(limits, "txns_open_per_key_max", 2)
    begin(store)
    with pytest.raises(errors.InvalidRequest, match="SlowDown"):
        begin(store)
    store.abort_txn(txn.txn_id, "b", time.time(), WRITER)
    begin(store)  # an aborted one is not open
    store.begin_txn("b", time.time(), OTHER)  # another key's count is its own
    for options in ({"ttl_s": "60"}, {"ttl_s": float("nan")}, {"if_prefix_absent": ""}, {"if_prefix_absent": 3},
                    {"if_prefix_absent": "p" * 1025}):  # fmt: skip
        with pytest.raises(errors.InvalidRequest):
            store.begin_txn("b", time.time(), OTHER, **options)
    with pytest.raises(errors.BucketNotFound):
        store.begin_txn("nope", time.time(), OTHER)
    txn = store.begin_txn("b", time.time(), OTHER)
    with pytest.raises(errors.InvalidRequest):
        store.stage_delete(txn.txn_id, "b", "k" * 1025, time.time(), OTHER)


def test_of_two_commits_on_one_absent_prefix_exactly_one_wins(meta_target):
    """Two jobs, each on its own store (its own metadata process), write step N: each stages different
    keys under one prefix and commits at the same moment; one commit wins, the other applies nothing."""
    target = meta_target()
    stores = [SqlStore(target) for _ in range(2)]
    try:
        stores[0].create_bucket("b", 1.0)
        for round_number in range(5):
            prefix = f"ckpt/step-{round_number}/"
            txns = [begin(store, if_prefix_absent=prefix) for store in stores]
            for job, (store, txn) in enumerate(zip(stores, txns, strict=True)):
                for rank in range(20):
                    stage(store, txn.txn_id, f"{prefix}job{job}-rank{rank}", b"shard")
            barrier = threading.Barrier(2)
            outcomes: list[object] = [None, None]

            def commit(job: int, txns=txns, barrier=barrier, outcomes=outcomes) -> None:
                store, txn = stores[job], txns[job]
                barrier.wait()
                try:
                    store.engine.run(lambda: store.commit_txn(txn.txn_id, "b", time.time(), WRITER))
                    outcomes[job] = "won"
                except errors.PreconditionFailed:
                    outcomes[job] = "lost"
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    outcomes[job] = exc

            threads = [threading.Thread(target=commit, args=(job,)) for job in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(map(str, outcomes)) == ["lost", "won"], outcomes
            winner = outcomes.index("won")
            assert keys(stores[0], prefix) == sorted(f"{prefix}job{winner}-rank{rank}" for rank in range(20))
    finally:
        for store in stores:
            store.close()


def test_deleting_a_bucket_aborts_its_transactions_and_hands_their_data_to_gc(store):
    store.create_bucket("doomed", 1.0)
    txn = store.begin_txn("doomed", time.time(), WRITER)
    data = stage(store, txn.txn_id, "k", segments=2, bucket="doomed")
    store.delete_bucket("doomed", time.time())
    assert segment_ids(data) <= garbage(store)
    store.create_bucket("doomed", 2.0)  # the same name again: the old transaction is gone, not revived
    with pytest.raises(errors.TransactionNotFound):
        store.commit_txn(txn.txn_id, "doomed", time.time(), WRITER)


def test_every_staging_acknowledged_before_a_racing_commit_is_in_it(meta_target):
    """Three stagers (each its own store, as ranks reaching different metadata processes) stage keys as fast
    as they can while a fourth store commits: every staging that returned is visible after the commit, and
    every staging that did not return was refused as TransactionClosed; nothing is lost in between."""
    target = meta_target()
    stores = [SqlStore(target) for _ in range(4)]
    try:
        stores[0].create_bucket("b", 1.0)
        txn = begin(stores[0])
        acknowledged: list[str] = []
        failures: list[BaseException] = []
        lock = threading.Lock()

        def stager(number: int) -> None:
            store = stores[number]
            try:
                for serial in range(10_000):
                    key = f"r{number}/{serial:05d}"
                    try:
                        stage(store, txn.txn_id, key, b"s", segments=0)
                    except errors.TransactionClosed:
                        return
                    with lock:
                        acknowledged.append(key)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failures.append(exc)

        threads = [threading.Thread(target=stager, args=(number,)) for number in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        done = stores[3].engine.run(lambda: stores[3].commit_txn(txn.txn_id, "b", time.time(), WRITER))
        for thread in threads:
            thread.join()
        assert not failures, failures
        visible = []
        after = ""
        while True:
            page = stores[0].list_objects("b", "", "", after, 1000)
            visible += [v.key for v in page.entries]
            if not page.truncated:
                break
            after = page.next_marker
        assert sorted(visible) == sorted(acknowledged) and done.items == len(acknowledged) > 10
    finally:
        for store in stores:
            store.close()


def test_an_operator_lists_live_transactions_with_their_staged_bytes_and_may_abort_any(store):
    store.create_bucket("other", 1.0)
    first, second = begin(store), begin(store)
    third = store.engine.run(lambda: store.begin_txn("other", time.time(), OTHER))
    stage(store, first.txn_id, "a", b"12345")
    stage(store, first.txn_id, "b", segments=2)
    stage(store, second.txn_id, "c", b"x")
    store.engine.run(lambda: store.commit_txn(second.txn_id, "b", time.time(), WRITER))
    listed = {info.txn_id: (info.state, info.items, staged) for info, staged in store.list_txns()}
    assert listed == {first.txn_id: ("open", 2, 25), third.txn_id: ("open", 0, 0)}
    assert [info.txn_id for info, _ in store.list_txns("other")] == [third.txn_id]
    assert second.txn_id in {info.txn_id for info, _ in store.list_txns(finished=True)}
    store.engine.run(lambda: store.abort_txn(third.txn_id, "other", time.time()))  # no owner: any key's
    assert [info.txn_id for info, _ in store.list_txns()] == [first.txn_id]
