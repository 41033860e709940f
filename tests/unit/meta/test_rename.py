"""``rename_object`` in the metadata store, on SQLite and PostgreSQL: one transaction moves a version row to
its new key; what it may not move it refuses, leaving everything as it was."""

from __future__ import annotations

import time

import pytest

from apollo import errors
from apollo.proto.layout import ObjectData
from apollo.proto.records import Conditions, ObjectAttrs
from apollo.testing.layouts import WRITER, etag, pending


def put(store, key: str, segments: int = 1):
    data = ObjectData(10 * segments, segments=[pending(store, length=10) for _ in range(segments)])
    store.commit_version("b", key, size=data.size, etag=etag(key), attrs=ObjectAttrs(user_meta={"m": key}),
                         data=data, now=time.time(), owner=WRITER)  # fmt: skip
    return {s.segment_id for s in data.segments}


def garbage(store) -> set[str]:
    return {g.layout.segment_id for g in store.due_garbage(2e12, 10_000)}


def test_a_rename_moves_the_version_and_its_data_and_replaces_what_was_there(store):
    moved = put(store, "a.tmp")
    replaced = put(store, "a")
    before = store.get_version("b", "a.tmp")
    version = store.rename_object("b", "a.tmp", "a", 50.0)
    assert (version.key, version.etag, version.last_modified, version.attrs.user_meta) == ("a", etag("a.tmp"), 50.0,
                                                                                          {"m": "a.tmp"})  # fmt: skip
    assert store.get_version("b", "a.tmp") is None
    after = store.get_version("b", "a")
    assert {s.segment_id for s in after.data.segments} == moved and after.seq == before.seq
    assert replaced <= garbage(store) and not moved & garbage(store)
    assert [v.key for v in store.list_objects("b", "", "", "", 10).entries] == ["a"]


def test_a_rename_refuses_what_it_cannot_do_in_one_change_and_changes_nothing(store):
    put(store, "src")
    put(store, "taken")
    with pytest.raises(errors.PreconditionFailed):
        store.rename_object("b", "src", "taken", 1.0, Conditions(if_none_match_star=True))
    with pytest.raises(errors.ObjectNotFound):
        store.rename_object("b", "missing", "x", 1.0)
    with pytest.raises(errors.InvalidRequest):
        store.rename_object("b", "src", "src", 1.0)
    with pytest.raises(errors.InvalidRequest):
        store.rename_object("b", "src", "k" * 1025, 1.0)
    snap = store.create_snapshot("b", "src", 1.0)
    with pytest.raises(errors.RenameRefused, match="snapshot"):
        store.rename_object("b", "src", "free", 1.0)
    store.delete_snapshot("b", snap.snapshot_id, 2.0)
    store.set_versioning("b", "Enabled")
    with pytest.raises(errors.RenameRefused, match="versions"):
        store.rename_object("b", "src", "free", 1.0)
    assert sorted(v.key for v in store.list_objects("b", "", "", "", 10).entries) == ["src", "taken"]
    assert not garbage(store)


def test_a_rename_onto_a_pinned_version_retires_it(store):
    kept = put(store, "dest")
    snap = store.create_snapshot("b", "", 1.0)
    put(store, "new")
    store.rename_object("b", "new", "dest", 2.0)
    pinned = store.get_snapshot_versions("b", snap.snapshot_id, ["dest"])[0].version
    assert {s.segment_id for s in pinned.data.segments} == kept and not kept & garbage(store)
