"""Group commit on a real SQLite database: calls share a commit, yet fail alone."""

from __future__ import annotations

import threading

import pytest

from apollo import errors, faults
from apollo.meta.groupcommit import GroupCommitExecutor
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import Conditions, ObjectAttrs
from apollo.testing.layouts import WRITER, etag


def _hold_writer(executor: GroupCommitExecutor) -> threading.Event:
    """Keep the writer thread busy so the calls submitted next queue up and form one batch."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    executor.submit(hold)
    started.wait(10)
    return release


def _create(store: SqlStore, key: str, payload: bytes, **kw):
    return store.commit_version("b", key, size=len(payload), etag=etag(payload.hex()), attrs=ObjectAttrs(),
                                data=ObjectData(len(payload), inline=payload), now=2.0, owner=WRITER,
                                **kw)  # fmt: skip


def test_queued_calls_share_one_commit_and_a_failing_one_rolls_back_alone(store):
    executor = GroupCommitExecutor(store)
    release = _hold_writer(executor)
    futures = [
        executor.submit(store.create_bucket, "first", 1.0),
        executor.submit(store.create_bucket, "first", 1.0),  # BucketExists: only this call fails
        executor.submit(store.create_bucket, "second", 1.0),
    ]
    release.set()
    assert futures[0].result(10) is None and futures[2].result(10) is None
    with pytest.raises(errors.BucketExists):
        futures[1].result(10)
    assert executor.batches == 2 and executor.calls == 4  # the holder, then the three together
    assert {b.name for b in store.list_buckets()} == {"b", "first", "second"}
    executor.shutdown()


def test_racing_conditional_creates_in_one_batch_have_one_winner(store):
    executor = GroupCommitExecutor(store)
    release = _hold_writer(executor)
    create_only = Conditions(if_none_match_star=True)
    futures = [executor.submit(_create, store, "k", bytes([n]), conditions=create_only) for n in range(16)]
    release.set()
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result(10))
        except errors.PreconditionFailed:
            outcomes.append(None)
    winners = [v for v in outcomes if v is not None]
    assert len(winners) == 1
    stored = store.get_version("b", "k")
    assert stored.etag == winners[0].etag == etag("00")  # arrival order is kept: the first call wins
    executor.shutdown()


def test_a_failed_commit_fails_every_call_of_the_batch(store):
    executor = GroupCommitExecutor(store)
    release = _hold_writer(executor)
    futures = [executor.submit(store.create_bucket, f"bucket-{n}", 1.0) for n in range(3)]
    with faults.enabled(meta__batch__before_commit="error"):
        release.set()
        for future in futures:
            with pytest.raises(faults.InjectedFault):
                future.result(10)
    assert {b.name for b in store.list_buckets()} == {"b"}  # nothing of the batch is visible
    executor.submit(store.create_bucket, "after", 1.0).result(10)  # and the writer carries on
    assert {b.name for b in store.list_buckets()} == {"b", "after"}
    executor.shutdown()
