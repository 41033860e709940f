"""A batch lookup (``SqlStore.get_versions``, and the snapshot and KV batches that read rows the same way), on
SQLite and PostgreSQL: each item answers what its own ``get_version`` would, and the segments of every
version found are read in one statement, not one per version."""

from __future__ import annotations

import time

import pytest

from apollo.meta.sqlbase import SqlBase
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import ObjectAttrs
from apollo.testing.layouts import WRITER, etag, pending


def _put(store: SqlStore, bucket: str, key: str, segments: int) -> None:
    if segments:
        data = ObjectData(10 * segments, segments=[pending(store, length=10) for _ in range(segments)])
    else:
        data = ObjectData(len(key), inline=key.encode())
    store.commit_version(bucket, key, size=data.size, etag=etag(key), attrs=ObjectAttrs(), data=data,
                         now=time.time(), owner=WRITER)  # fmt: skip


@pytest.fixture
def statements(monkeypatch) -> list[str]:
    """Every statement the store makes outside a transaction: ``SqlBase.one`` and ``all``, and a plan's."""
    made = []
    for name in ("one", "all"):
        real = getattr(SqlBase, name)

        def counted(self, sql, args=(), real=real):
            made.append(sql)
            return real(self, sql, args)

        monkeypatch.setattr(SqlBase, name, counted)
    drive = SqlBase.drive

    def recorded(plan):
        try:
            statement = next(plan)
            while True:
                made.append(statement[0])
                statement = plan.send((yield statement))
        except StopIteration as done:
            return done.value

    monkeypatch.setattr(SqlBase, "drive", lambda self, plan: drive(self, recorded(plan)))
    return made


def test_each_item_of_a_batch_answers_what_its_own_lookup_would(store: SqlStore):
    for n in range(12):
        _put(store, "b", f"k{n}", segments=n % 4)  # inline, and on 1, 2 or 3 segments
    store.create_bucket("v", 1.0)
    store.set_versioning("v", "Enabled")
    _put(store, "v", "gone", segments=2)
    store.delete_object("v", "gone", None, time.time())
    items = [("b", f"k{n}", None) for n in reversed(range(12))] + [("b", "missing", None), ("v", "gone", None),
                                                                     ("nope", "k", None)]  # fmt: skip
    lookups = store.get_versions(items)
    for (bucket, key, _), lookup in zip(items[:12], lookups, strict=False):
        assert lookup.version == store.get_version(bucket, key)
        assert len(lookup.version.data.segments) == int(key[1:]) % 4
    assert [lookup.error for lookup in lookups[12:]] == ["ObjectNotFound", "ObjectNotFound", "BucketNotFound"]


def test_a_batch_reads_the_segments_of_all_its_versions_in_one_statement(store: SqlStore, statements):
    for n in range(16):
        _put(store, "b", f"k{n}", segments=2)
    statements.clear()
    lookups = store.get_versions([("b", f"k{n}", None) for n in range(16)])
    assert all(len(lookup.version.data.segments) == 2 for lookup in lookups)
    assert len([sql for sql in statements if "FROM segments" in sql]) == 1
    assert len(statements) == 2  # the bucket and the latest versions, their segments
