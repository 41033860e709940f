"""Expiry of abandoned multipart uploads in the SQL store (real SQLite): order, bounds, racing writers."""

from __future__ import annotations

import pytest

from apollo import errors
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData, SegmentLayout
from apollo.proto.records import ObjectAttrs
from apollo.testing.layouts import PENDING_DUE, WRITER, pending


def pending_segment(store: SqlStore) -> SegmentLayout:
    return pending(store)


def commit_part(store: SqlStore, upload: str, number: int, layout: SegmentLayout, now: float) -> None:
    store.commit_part(upload, number, size=100, etag=f"{number:032x}", checksums={},
                      data=ObjectData(100, segments=[layout]), now=now, owner=WRITER)  # fmt: skip


def queued(store: SqlStore) -> dict[str, float]:
    """Every GC row: segment id -> when it is due."""
    return {row["segment_id"]: row["due"] for row in store.all("SELECT segment_id, due FROM garbage")}


def test_oldest_uploads_go_first_in_bounded_batches_and_young_ones_stay(store):
    uploads = [store.create_upload("b", f"k{n}", ObjectAttrs(), "", now=float(created))
               for n, created in enumerate([30, 10, 20, 500])]  # fmt: skip
    first = store.expire_uploads(created_before=100.0, now=600.0, limit=2)
    assert [u.upload_id for u in first] == [uploads[1], uploads[2]]
    second = store.expire_uploads(created_before=100.0, now=600.0, limit=2)
    assert [u.upload_id for u in second] == [uploads[0]]
    assert store.expire_uploads(created_before=100.0, now=600.0, limit=2) == []
    assert [u.upload_id for u in store.list_uploads("b", "", "", "", "", 10).entries] == [uploads[3]]


def test_parts_become_garbage_and_a_part_committed_after_expiry_is_refused(store):
    upload = store.create_upload("b", "ckpt", ObjectAttrs(), "", now=1.0)
    committed = pending_segment(store)
    commit_part(store, upload, 1, committed, now=2.0)
    in_flight = pending_segment(store)  # its shards are being written while the upload expires

    [expired] = store.expire_uploads(created_before=50.0, now=60.0, limit=10)
    assert (expired.upload_id, expired.bucket, expired.key) == (upload, "b", "ckpt")
    assert queued(store)[committed.segment_id] == 60.0 + store.gc_delay_s  # the AbortMultipartUpload path

    with pytest.raises(errors.UploadNotFound):
        commit_part(store, upload, 2, in_flight, now=61.0)
    # The refused part's segment is still queued (its writer makes it due at once), never unowned.
    assert queued(store)[in_flight.segment_id] == PENDING_DUE
    with pytest.raises(errors.UploadNotFound):
        store.complete_upload("b", "ckpt", upload, [(1, f"{1:032x}")], part_size_min=5, now=62.0)
    assert store.all("SELECT * FROM parts") == [] and store.all("SELECT * FROM segments") == []


def test_an_upload_completed_before_its_expiry_pass_is_left_alone(store):
    upload = store.create_upload("b", "done", ObjectAttrs(), "", now=1.0)
    layout = pending_segment(store)
    commit_part(store, upload, 1, layout, now=2.0)
    store.complete_upload("b", "done", upload, [(1, f"{1:032x}")], part_size_min=5, now=3.0)
    assert store.expire_uploads(created_before=50.0, now=60.0, limit=10) == []
    assert [s.segment_id for s in store.get_version("b", "done").data.segments] == [layout.segment_id]
    assert layout.segment_id not in queued(store)
