"""Commits sharing one call and one transaction (``SqlStore.commit_versions``), on SQLite and PostgreSQL: they
land together, and when any fails each gets exactly what its own ``commit_version`` answers."""

from __future__ import annotations

import time

import pytest

from apollo import errors, faults, limits
from apollo.meta.sqlbase import SqlBase
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import Conditions, ObjectAttrs
from apollo.testing.layouts import WRITER, etag, pending


def commit(key: str, body: bytes = b"", *, bucket: str = "b", **extra) -> dict:
    body = body or key.encode()
    return {"bucket": bucket, "key": key, "size": len(body), "etag": etag(body.hex()), "attrs": ObjectAttrs(),
            "data": ObjectData(len(body), inline=body), **extra}  # fmt: skip


@pytest.fixture
def commits_made(monkeypatch) -> list[int]:
    """Every COMMIT the store makes, counted."""
    made = []
    real = SqlBase._commit

    def counted(self, conn, fault_point):
        real(self, conn, fault_point)
        made.append(1)

    monkeypatch.setattr(SqlBase, "_commit", counted)
    return made


def test_the_commits_of_a_batch_land_together_in_one_transaction(store: SqlStore, commits_made):
    store.commit_version(**commit("old", b"before"), now=time.time(), owner=WRITER)
    segment = pending(store, length=10)
    segmented = {**commit("big"), "size": 10, "data": ObjectData(10, segments=[segment])}
    commits_made.clear()
    outcomes = store.commit_versions([commit(f"k{n}") for n in range(4)] + [commit("old", b"after"), segmented],
                                     owner=WRITER, now=time.time())  # fmt: skip
    assert len(commits_made) == 1
    assert [o.version.key for o in outcomes] == ["k0", "k1", "k2", "k3", "old", "big"]
    assert not any(o.error for o in outcomes)
    for n in range(4):
        assert store.get_version("b", f"k{n}").data.inline == f"k{n}".encode()
    assert store.get_version("b", "old").data.inline == b"after"
    assert store.get_version("b", "big").data.segments[0].segment_id == segment.segment_id


def test_when_one_fails_each_commit_gets_what_it_alone_would(store: SqlStore, commits_made):
    store.commit_version(**commit("taken"), now=time.time(), owner=WRITER)
    foreign = pending(store, length=10, owner="someone-else")
    batch = [
        commit("first"),
        commit("lost", bucket="no-such-bucket"),
        commit("taken", b"again", conditions=Conditions(if_none_match_star=True)),
        {**commit("stolen"), "size": 10, "data": ObjectData(10, segments=[foreign])},
        commit("last"),
    ]
    commits_made.clear()
    outcomes = store.commit_versions(batch, owner=WRITER, now=time.time())
    assert [o.error for o in outcomes] == ["", "BucketNotFound", "PreconditionFailed", "AccessDenied", ""]
    assert outcomes[0].version.key == "first" and outcomes[4].version.key == "last"
    assert "no-such-bucket" in outcomes[1].message
    assert len(commits_made) == 2  # the shared transaction was rolled back: the two that may, alone
    assert store.get_version("b", "taken").data.inline == b"taken"
    assert store.get_version("b", "stolen") is None
    assert store.get_version("b", "first") is not None and store.get_version("b", "last") is not None


@pytest.mark.parametrize("batch", [
    "not a list",
    [commit(f"k{n}") for n in range(limits.commits_per_call_max + 1)],
    [commit("k", now=1.0)],  # the service's clock
    [commit("k", owner="someone-else")],  # whose pending writes it claims
    [{"bucket": "b", "size": 1}],  # no key
    ["k"],
], ids=["not-a-list", "too-many", "now", "owner", "no-key", "not-a-dict"])  # fmt: skip
def test_a_malformed_batch_is_refused_whole(store: SqlStore, batch):
    with pytest.raises(errors.InvalidRequest):
        store.commit_versions(batch, owner=WRITER, now=time.time())
    assert store.list_objects("b", "", "", "", 10).entries == []


def test_a_shared_commit_that_fails_makes_nothing_visible(store: SqlStore):
    with faults.enabled(meta__tx__before_commit="error"), pytest.raises(faults.InjectedFault):
        store.commit_versions([commit("a"), commit("b")], owner=WRITER, now=time.time())
    assert store.list_objects("b", "", "", "", 10).entries == []
