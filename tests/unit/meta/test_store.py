"""The SQL metadata store against real SQLite and PostgreSQL databases: namespace, versions, multipart, GC queue."""

from __future__ import annotations

import random

import pytest

from apollo import errors, limits
from apollo.meta.sql_multipart import multipart_etag
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData, SegmentLayout
from apollo.proto.records import Conditions, ObjectAttrs
from apollo.testing.layouts import WRITER, etag, pending


def put(store: SqlStore, key: str, payload: bytes = b"x", bucket: str = "b", **kw):
    return store.commit_version(
        bucket, key, size=len(payload), etag=etag(key), attrs=ObjectAttrs(),
        data=ObjectData(len(payload), inline=payload), now=2.0, owner=WRITER, **kw,
    )  # fmt: skip


def segment(store: SqlStore, offset: int = 0, length: int = 100) -> SegmentLayout:
    return pending(store, offset=offset, length=length)


def list_all(store: SqlStore, prefix: str = "", delimiter: str = "", page: int = 1):
    keys, prefixes, marker = [], [], ""
    while True:
        result = store.list_objects("b", prefix, delimiter, marker, page)
        keys += [v.key for v in result.entries]
        prefixes += result.prefixes
        if not result.truncated:
            return keys, prefixes
        marker = result.next_marker


def test_listing_matches_a_sorted_model_for_every_page_size(store, seed):
    rng = random.Random(seed)
    db = store
    names = {"".join(rng.choice("ab/é") for _ in range(rng.randint(1, 6))) for _ in range(120)}
    for name in names:
        put(db, name)
    deleted = set(rng.sample(sorted(names), 20))
    for name in deleted:
        db.delete_object("b", name, None, 3.0)
    live = sorted(names - deleted, key=lambda s: s.encode())
    for page in (1, 2, 7, 1000):
        assert list_all(db, page=page) == (live, [])
        expected_prefixes = sorted({k[: k.index("/") + 1] for k in live if "/" in k}, key=str.encode)
        keys, prefixes = list_all(db, delimiter="/", page=page)
        assert keys == [k for k in live if "/" not in k]
        assert prefixes == expected_prefixes
        assert list_all(db, prefix="a", page=page)[0] == [k for k in live if k.startswith("a")]


def test_unversioned_overwrite_queues_old_segments_for_gc(store):
    first = segment(store)
    store.commit_version("b", "k", size=100, etag=etag("e1"), attrs=ObjectAttrs(),
                         data=ObjectData(100, segments=[first]), now=5.0, owner=WRITER)  # fmt: skip
    assert store.garbage_count() == 0  # the commit consumed the pending row
    put(store, "k", b"new")
    assert [g.layout.segment_id for g in store.due_garbage(5.0 + store.gc_delay_s, 10)] == [first.segment_id]
    assert store.get_version("b", "k").data.inline == b"new"


def test_versioning_delete_marker_and_promotion(store):
    store.set_versioning("b", "Enabled")
    v1 = put(store, "k", b"one")
    v2 = put(store, "k", b"two")
    marker = store.delete_object("b", "k", None, 3.0)
    assert marker.delete_marker and store.get_version("b", "k").delete_marker
    assert store.list_objects("b", "", "", "", 10).entries == []
    store.delete_object("b", "k", marker.version_id, 4.0)
    assert store.get_version("b", "k").version_id == v2.version_id
    store.delete_object("b", "k", v2.version_id, 5.0)
    assert store.get_version("b", "k").data.inline == b"one"
    assert store.get_version("b", "k", v1.version_id).is_latest


def test_conditional_commit(store):
    put(store, "k")
    with pytest.raises(errors.PreconditionFailed):
        put(store, "k", conditions=Conditions(if_none_match_star=True))
    with pytest.raises(errors.PreconditionFailed):
        put(store, "k", conditions=Conditions(if_match='"other"'))
    put(store, "k", conditions=Conditions(if_match=f'"{etag("k")}"'))
    with pytest.raises(errors.ObjectNotFound):
        put(store, "missing", conditions=Conditions(if_match="*"))


def test_bucket_rules(store):
    with pytest.raises(errors.BucketExists):
        store.create_bucket("b", 2.0)
    put(store, "k")
    with pytest.raises(errors.BucketNotEmpty):
        store.delete_bucket("b", 3.0)
    store.delete_object("b", "k", None, 3.0)
    store.delete_bucket("b", 3.0)
    with pytest.raises(errors.BucketNotFound):
        store.get_bucket("b")


def test_multipart_complete_reparents_segments(store):
    upload = store.create_upload("b", "big", ObjectAttrs(content_type="text/plain"), "", 1.0)
    sizes = {1: 5 * 1024**2, 2: 5 * 1024**2, 3: 7}
    layouts = {}
    for number, size in sizes.items():
        layouts[number] = segment(store, 0, size)
        store.commit_part(upload, number, size=size, etag=f"{number:032x}", checksums={},
                          data=ObjectData(size, segments=[layouts[number]]), now=2.0, owner=WRITER)  # fmt: skip
    with pytest.raises(errors.InvalidPartOrder):
        store.complete_upload("b", "big", upload, [(2, f"{2:032x}"), (1, f"{1:032x}")], part_size_min=5, now=3.0)
    with pytest.raises(errors.InvalidPart):
        store.complete_upload("b", "big", upload, [(1, "bad")], part_size_min=5, now=3.0)
    with pytest.raises(errors.EntityTooSmall):
        store.complete_upload("b", "big", upload, [(1, f"{1:032x}"), (3, f"{3:032x}")],
                              part_size_min=10 * 1024**2, now=3.0)  # fmt: skip
    parts = [(n, f"{n:032x}") for n in (1, 3)]  # part 2 left out: its data becomes garbage
    version = store.complete_upload("b", "big", upload, parts, part_size_min=5 * 1024**2, now=3.0)
    assert version.etag == multipart_etag([f"{1:032x}", f"{3:032x}"])
    stored = store.get_version("b", "big")
    assert [s.segment_id for s in stored.data.segments] == [layouts[1].segment_id, layouts[3].segment_id]
    assert [s.offset for s in stored.data.segments] == [0, 5 * 1024**2]
    assert stored.parts == [5 * 1024**2, 7] and stored.attrs.content_type == "text/plain"
    due = store.due_garbage(1e11, 10)
    assert [g.layout.segment_id for g in due] == [layouts[2].segment_id]
    with pytest.raises(errors.UploadNotFound):
        store.get_upload("b", "big", upload)


def test_a_listing_page_steps_over_a_bounded_number_of_delete_markers(store, monkeypatch):
    """A bucket of delete markers answers short truncated pages that say where to resume, not one scan."""
    monkeypatch.setattr(limits, "list_hidden_rows_max", 10)
    store.set_versioning("b", "Enabled")
    for n in range(35):
        put(store, f"gone{n:02d}")
        store.delete_object("b", f"gone{n:02d}", None, 3.0)
    put(store, "kept")
    pages, after, keys = 0, "", []
    while True:
        page = store.list_objects("b", "", "", after, 5)
        pages += 1
        keys += [v.key for v in page.entries]
        if not page.truncated:
            break
        assert page.next_marker > after  # always progress
        after = page.next_marker
    assert keys == ["kept"] and pages == 4  # 35 markers at 10 a page, then the visible key


def test_open_uploads_per_bucket_are_capped(store, monkeypatch):
    monkeypatch.setattr(limits, "open_uploads_per_bucket_max", 3)
    store.create_bucket("other", 1.0)
    uploads = [store.create_upload("b", f"k{n}", ObjectAttrs(), "", 1.0) for n in range(3)]
    with pytest.raises(errors.InvalidRequest, match="3 multipart uploads in progress"):
        store.create_upload("b", "one-more", ObjectAttrs(), "", 1.0)
    store.create_upload("other", "k", ObjectAttrs(), "", 1.0)  # per bucket
    store.abort_upload("b", "k0", uploads[0], 2.0)
    store.create_upload("b", "one-more", ObjectAttrs(), "", 1.0)  # room again


def test_a_removed_drive_is_never_registered_again(store):
    drive, other = "a" * 16, "b" * 16
    store.register_node("n1", "http://n1:9100", "", [(drive, "/d1"), (other, "/d2")], 1.0)
    store.delete_drive(drive)
    epoch = store.register_node("n1", "http://n1:9100", "", [(drive, "/d1"), (other, "/d2")], 2.0)
    assert [d.drive_id for d in store.list_drives()] == [other]
    assert store.removed_drive_ids() == {drive}
    store.delete_node("n1")  # its drives are remembered too
    assert store.removed_drive_ids() == {drive, other}
    assert store.register_node("n1", "http://n1:9100", "", [(other, "/d2")], 3.0) > epoch
    assert store.list_drives() == []


def test_the_parts_column_reads_rows_written_before_part_checksums():
    """Older multipart rows hold part sizes only; newer ones [size, checksum] pairs (GetObjectAttributes)."""
    from apollo.meta.version_rows import parts_from_column, parts_json

    assert parts_from_column("[5, 4]") == ([5, 4], [])
    assert parts_from_column("[]") == ([], [])
    assert parts_from_column(parts_json([5, 4], ["c1", "c2"])) == ([5, 4], ["c1", "c2"])
    assert parts_from_column(parts_json([5, 4])) == ([5, 4], [])


def test_capacity_counts_each_filesystem_of_each_node_once(store):
    """Directory drives on one filesystem all report its space: counted once per (node, filesystem). Two
    hosts may number their filesystems alike; a node of the version before reports none (counted per drive)."""
    from apollo.cluster.admin import status

    gib = 1 << 30
    drives = {name: name * 16 for name in "abcdef"}
    store.register_node("n1", "http://n1:9100", "", [(drives[x], f"/d{x}") for x in "abc"], 1.0)
    store.register_node("n2", "http://n2:9100", "", [(drives[x], f"/d{x}") for x in "de"], 1.0)
    store.register_node("n3", "http://n3:9100", "", [(drives["f"], "/df")], 1.0)
    store.node_heartbeat("n1", {drives["a"]: ("ok", 4 * gib, 10 * gib, "801"),
                                drives["b"]: ["ok", 4 * gib, 10 * gib, "801"],
                                drives["c"]: ("ok", 1 * gib, 2 * gib, "802")}, 2.0)  # fmt: skip
    store.node_heartbeat("n2", {drives["d"]: ("ok", 5 * gib, 10 * gib, "801"),
                                drives["e"]: ("ok", 5 * gib, 10 * gib, "801")}, 2.0)  # fmt: skip
    store.node_heartbeat("n3", {drives["f"]: ("ok", 1 * gib, 3 * gib)}, 2.0)  # no filesystem: an older node
    assert {d.drive_id: d.filesystem for d in store.list_drives()}[drives["b"]] == "801"
    used, total, online, filesystems = status(store).capacity()
    assert (online, filesystems) == (6, 4)
    assert (used, total) == ((6 + 1 + 5 + 2) * gib, (10 + 2 + 10 + 3) * gib)
    for report in (("ok", 1, 2, "../x"), ("fine", 1, 2, ""), ("ok", -1, 2, ""), ("ok", "1", 2, ""), ("ok", 1),
                   "ok", ("ok", 1, 2, "f" * 33), (["ok"], 1, 2, "")):  # fmt: skip
        with pytest.raises(errors.InvalidRequest):
            store.node_heartbeat("n3", {drives["f"]: report}, 3.0)
