"""Commits sharing one call and one transaction (``SqlStore.commit_versions``), on SQLite and PostgreSQL, and
on the metadata service's event loop on PostgreSQL (``apollo.meta.async_sql``): they land together, and when
any fails each gets exactly what its own ``commit_version`` answers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from apollo import errors, faults, limits
from apollo.meta.async_sql import AsyncSql
from apollo.meta.service import MetaService
from apollo.meta.sql_objects import ObjectOps
from apollo.meta.sql_shared_commits import SharedCommitOps
from apollo.meta.sqlbase import SqlBase
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import NULL_VERSION, Conditions, ObjectAttrs
from apollo.testing.layouts import WRITER, etag, pending
from apollo.testing.postgres import TempPostgres, rows_filtered_out


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


@pytest.fixture
def together(monkeypatch) -> list[bool]:
    """For each shared commit, whether it was made a statement per table for the whole batch."""
    made = []
    real = SharedCommitOps._commit_together

    def spied(self, *args):
        made.append(False)  # until it returns versions
        versions = real(self, *args)
        made[-1] = versions is not None
        return versions

    monkeypatch.setattr(SharedCommitOps, "_commit_together", spied)
    return made


def _history(store: SqlStore, bucket: str) -> None:
    """Versions of every kind a plain batch may replace: inline, on segments, with a tar index."""
    now = time.time()
    store.commit_version(**commit("inline", bucket=bucket), now=now, owner=WRITER)
    segmented = ObjectData(10, segments=[pending(store, length=10)])
    store.commit_version(**{**commit("segmented", bucket=bucket), "size": 10, "data": segmented}, now=now, owner=WRITER)
    store.commit_version(**commit("archive", b"tar-bytes", bucket=bucket), members=[["member", 0, 3]], now=now,
                         owner=WRITER)  # fmt: skip


def _state(store: SqlStore, bucket: str) -> dict:
    """What a reader or the garbage collector can tell of a bucket's keys."""
    keys = ("inline", "segmented", "archive", "new1", "new2")
    versions = {v.key: (v.version_id, v.is_latest, v.size, v.etag, v.data.inline, v.data.segments)
                for v in (store.get_version(bucket, key) for key in keys)}  # fmt: skip
    rows = store.all("SELECT count(*) AS n FROM versions WHERE bucket = ?", (bucket,))[0]["n"]
    listed = [entry.key for entry in store.list_objects(bucket, "", "", "", 10).entries]
    return {"versions": versions, "rows": rows, "listed": listed}


def test_a_plain_batch_is_made_at_once_and_ends_as_one_by_one(store: SqlStore, together):
    for bucket in ("fast", "slow"):
        store.create_bucket(bucket, 1.0)
        _history(store, bucket)
    queued_for_gc = len(store.all("SELECT segment_id FROM garbage WHERE owner = ''"))
    batch = [commit(key, f"{key}-after".encode()) for key in ("archive", "new1", "inline", "segmented", "new2")]
    now = time.time()
    outcomes = store.commit_versions([{**c, "bucket": "fast"} for c in batch], owner=WRITER, now=now)
    one_by_one = [store.commit_version(**{**c, "bucket": "slow"}, owner=WRITER, now=now) for c in batch]
    assert together == [True]
    assert [o.version.key for o in outcomes] == [c["key"] for c in batch] and not any(o.error for o in outcomes)
    seqs = [o.version.seq for o in outcomes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # row ids in the batch's order, as one by one
    assert [replace(o.version, bucket="", seq=0) for o in outcomes] == [replace(v, bucket="", seq=0)
                                                                         for v in one_by_one]  # fmt: skip
    assert _state(store, "fast") == _state(store, "slow")
    assert _state(store, "fast")["versions"]["segmented"][4] == b"segmented-after"
    # Each bucket's replaced segment went to the garbage collector; no tar index of a replaced version is left.
    assert len(store.all("SELECT segment_id FROM garbage WHERE owner = ''")) == queued_for_gc + 2
    assert store.all("SELECT count(*) AS n FROM tar_members")[0]["n"] == 0


@pytest.mark.parametrize("case", ["versioned", "snapshot", "kv", "same-key", "conditional", "segments", "two-buckets"])
def test_any_other_batch_is_made_one_by_one(store: SqlStore, together, case):
    _history(store, "b")
    batch = [commit("inline", b"after"), commit("new1")]
    if case == "versioned":
        store.set_versioning("b", "Enabled")
    elif case == "snapshot":
        store.create_snapshot("b", "", time.time())
    elif case == "kv":
        store.create_kv_namespace("kv", 1 << 20, 3600.0, time.time())
        batch = [{**c, "bucket": "kv"} for c in batch]
    elif case == "same-key":
        batch.append(commit("inline", b"last"))
    elif case == "conditional":
        batch[1]["conditions"] = Conditions(if_none_match_star=True)
    elif case == "segments":
        batch.append({**commit("big"), "size": 10, "data": ObjectData(10, segments=[pending(store, length=10)])})
    else:
        store.create_bucket("c", 1.0)
        batch.append(commit("new2", bucket="c"))
    outcomes = store.commit_versions(batch, owner=WRITER, now=time.time())
    assert not any(o.error for o in outcomes) and together in ([], [False])
    bucket = batch[0]["bucket"]
    assert store.get_version(bucket, "inline").data.inline == (b"last" if case == "same-key" else b"after")
    if case == "versioned":  # the first version stays, as the noncurrent one
        assert len(store.all("SELECT id FROM versions WHERE bucket = 'b' AND key = 'inline'")) == 2


def test_a_plain_batch_with_a_bad_commit_gives_each_its_own_answer(store: SqlStore, together):
    too_many_tags = ObjectAttrs(tags={f"t{n}": "v" for n in range(limits.tags_per_object_max + 1)})
    batch = [commit("a"), {**commit("bad"), "etag": "not-an-etag"}, commit("c"),
             {**commit("tags"), "attrs": too_many_tags}]  # fmt: skip
    outcomes = store.commit_versions(batch, owner=WRITER, now=time.time())
    assert together == [False]  # it raised: rolled back, then each alone
    assert [o.error for o in outcomes] == ["", "InvalidRequest", "", "InvalidRequest"]
    assert store.get_version("b", "a") is not None and store.get_version("b", "bad") is None


# On the metadata service's event loop (PostgreSQL): the same batch, made by the plan in a transaction of its own.


@pytest.fixture
def threaded(monkeypatch) -> list[int]:
    """A 1 for each shared commit the store made on a thread (not on the service's event loop)."""
    made = []
    real = SharedCommitOps.commit_versions
    monkeypatch.setattr(SharedCommitOps, "commit_versions",
                        lambda self, *args, **kwargs: made.append(1) or real(self, *args, **kwargs))  # fmt: skip
    return made


def on_the_loop(store: SqlStore, *batches: list[dict]) -> list[list]:
    """The outcomes of each batch made by a service on PostgreSQL that runs shared commits on its event loop."""

    async def made():
        service = MetaService(store, async_sql=AsyncSql(store.engine))
        try:
            return [await service.commit_versions(batch, owner=WRITER, now=time.time()) for batch in batches]
        finally:
            await service.aclose()

    return asyncio.run(made())


def test_on_the_loop_a_plain_batch_is_made_there_and_ends_as_one_by_one(postgres, threaded):
    store = SqlStore(postgres.create_database("loop_commits_plain"))
    for bucket in ("fast", "slow"):
        store.create_bucket(bucket, 1.0)
        _history(store, bucket)
    queued_for_gc = len(store.all("SELECT segment_id FROM garbage WHERE owner = ''"))
    batch = [commit(key, f"{key}-after".encode()) for key in ("archive", "new1", "inline", "segmented", "new2")]
    one_by_one = [store.commit_version(**{**c, "bucket": "slow"}, owner=WRITER, now=time.time()) for c in batch]
    [outcomes] = on_the_loop(store, [{**c, "bucket": "fast"} for c in batch])
    assert threaded == []
    assert [replace(o.version, bucket="", seq=0, last_modified=0) for o in outcomes] == [
        replace(v, bucket="", seq=0, last_modified=0) for v in one_by_one]  # fmt: skip
    store = SqlStore(store.engine.url)
    assert _state(store, "fast") == _state(store, "slow")
    assert len(store.all("SELECT segment_id FROM garbage WHERE owner = ''")) == queued_for_gc + 2
    assert store.all("SELECT count(*) AS n FROM tar_members")[0]["n"] == 0
    store.close()


def test_on_the_loop_a_batch_the_plan_declines_or_that_fails_is_made_on_a_thread(postgres, threaded):
    store = SqlStore(postgres.create_database("loop_commits_declined"))
    store.create_bucket("b", 1.0)
    store.create_bucket("v", 1.0)
    store.set_versioning("v", "Enabled")
    bad = [commit("x"), {**commit("bad"), "etag": "not-an-etag"}, commit("y")]
    versioned, outcomes = on_the_loop(store, [commit("a", bucket="v"), commit("b", bucket="v")], bad)
    assert [o.version.key for o in versioned] == ["a", "b"]
    assert [o.error for o in outcomes] == ["", "InvalidRequest", ""]  # rolled back on the loop, then each alone
    assert threaded == [1, 1]
    store = SqlStore(store.engine.url)
    assert store.get_version("b", "x") is not None and store.get_version("b", "bad") is None
    store.close()


def test_on_the_loop_a_commit_cut_off_is_unknown_and_one_failing_before_it_shows_nothing(monkeypatch):
    with TempPostgres(durable=False) as pg:
        url = pg.create_database("loop_commit_cut")
        store = SqlStore(url)
        store.create_bucket("b", 1.0)
        with faults.enabled(meta__tx__before_commit="error"), pytest.raises(faults.InjectedFault):
            on_the_loop(store, [commit("a"), commit("b")])
        store = SqlStore(url)
        assert store.get_version("b", "a") is None and store.get_version("b", "b") is None
        # The database goes away just before the COMMIT is sent: nobody can tell whether it committed.
        monkeypatch.setattr(faults, "point", lambda name: pg.stop("immediate"))
        with pytest.raises(errors.MetadataUnavailable, match="outcome unknown"):
            on_the_loop(store, [commit("a"), commit("b")])
        monkeypatch.undo()
        pg.start()
        store = SqlStore(url)
        assert store.get_version("b", "a") is None  # it had not committed, and was not made again on a thread
        store.close()


def test_on_the_loop_a_lone_plain_commit_is_made_there_and_a_conditional_one_on_a_thread(postgres, monkeypatch):
    store = SqlStore(postgres.create_database("loop_commit_alone"))
    store.create_bucket("b", 1.0)
    threaded = []
    real = ObjectOps.commit_version
    monkeypatch.setattr(ObjectOps, "commit_version",
                        lambda self, *args, **kwargs: threaded.append(1) or real(self, *args, **kwargs))  # fmt: skip

    async def made():
        service = MetaService(store, async_sql=AsyncSql(store.engine))
        try:
            plain = await service.commit_version(**commit("plain"), owner=WRITER, now=time.time())
            conditional = await service.commit_version(**commit("plain", b"again"), owner=WRITER, now=time.time(),
                                                       conditions=Conditions(if_match=plain.etag))  # fmt: skip
            return plain, conditional
        finally:
            await service.aclose()

    plain, conditional = asyncio.run(made())
    assert threaded == [1] and plain.key == "plain" and conditional.size == len(b"again")  # the conditional one


def test_a_batch_reads_the_rows_it_replaces_by_key_even_in_a_bucket_never_analyzed(postgres):
    """On PostgreSQL, as the event loop's connections plan it (generically): one index probe per key. As
    ``key = ANY(?)`` the plan scanned the whole bucket (3,200 rows for 8 keys) until autovacuum analyzed it."""
    url = postgres.create_database("replaced_rows_plan")
    store = SqlStore(url)
    store.create_bucket("b", 1.0)
    for n in range(800):
        store.commit_versions([commit(f"k{n}-{i}") for i in range(4)], owner=WRITER, now=time.time())
    sql, args = store.engine.versions_of_keys("id, key", "b", [f"k{n}-0" for n in range(8)],
                                              "is_latest = 1 OR version_id = ?", (NULL_VERSION,))  # fmt: skip
    store.close()
    removed, plan = rows_filtered_out(url, sql, args)
    assert "actual time" in plan and removed < 100, plan


def test_a_bucket_whose_row_declined_a_batch_is_not_read_again_for_the_next(store: SqlStore):
    """The next batch into a versioned bucket is declined before any statement (on the service's loop, each decline
    cost a transaction of its own), for ``DECLINED_HELD_S``; a plain bucket's batches are not held."""
    store.create_bucket("v", 1.0)
    store.set_versioning("v", "Enabled")

    def first_statement(bucket: str):
        plan = store._commit_together_plan([commit("a", bucket=bucket), commit("b", bucket=bucket)], WRITER, 1.0)
        try:
            return next(plan)
        except StopIteration as declined:
            return declined.value

    assert first_statement("v") is not None  # the bucket's row is read once...
    store.commit_versions([commit("a", bucket="v"), commit("b", bucket="v")], owner=WRITER, now=time.time())
    assert first_statement("v") is None  # ...and the decline held
    assert first_statement("b") is not None
    store._declined_buckets["v"] = time.monotonic() - 1  # held no longer
    assert first_statement("v") is not None
