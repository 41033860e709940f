"""The per-drive shard index against a model: after any mix of puts, overwrites, deletes, multipart
completions and repairs, walking a drive through the index finds exactly the committed segments whose
layout names the drive, in (placement group, segment) order, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from dataclasses import replace

from apollo.meta.shard_index import rebuild_shard_index, segments_on_drive_sql
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import ObjectAttrs
from apollo.testing.layouts import DRIVES, WRITER, etag, pending

POOL = DRIVES[:10]


def walk(store: SqlStore, drive: str, page: int) -> list[str]:
    """A drive job's walk: pages of ``segments_after`` with the drive, resumed from the last one's cursor."""
    found, pg, segment_id = [], -1, ""
    while batch := store.segments_after(pg, segment_id, page, drive):
        assert len(batch) <= page
        found += [s.segment_id for s in batch]
        pg, segment_id = batch[-1].pg, batch[-1].segment_id
    return found


def model(store: SqlStore, drive: str) -> list[str]:
    """What the walk must find: every committed segment whose layout names the drive (a walk of them all)."""
    return [s.segment_id for s in store.segments_after(-1, "", 1_000_000) if drive in s.drives]


def new_segments(store: SqlStore, rng: random.Random) -> list:
    return [pending(store, pg=rng.randrange(6), drives=tuple(rng.sample(POOL, 6))) for _ in range(rng.randint(1, 3))]


def commit(store: SqlStore, key: str, segments: list) -> None:
    size = sum(s.length for s in segments)
    store.commit_version("b", key, size=size, etag=etag(key), attrs=ObjectAttrs(),
                         data=ObjectData(size, segments=_at_offsets(segments)), now=2.0, owner=WRITER)  # fmt: skip


def _at_offsets(segments: list) -> list:
    out, offset = [], 0
    for s in segments:
        out.append(replace(s, offset=offset))
        offset += s.length
    return out


def test_walking_a_drive_through_the_index_finds_what_its_layouts_say(store, seed):
    rng = random.Random(seed)
    keys = [f"k{n}" for n in range(8)]
    for step in range(60):
        action = rng.choice(["put", "put", "delete", "repair", "repair", "multipart"])
        if action == "put":
            commit(store, rng.choice(keys), new_segments(store, rng))
        elif action == "delete":
            store.delete_object("b", rng.choice(keys), None, 3.0)
        elif action == "repair" and (live := store.segments_after(-1, "", 1_000_000)):
            layout = rng.choice(live)
            index = rng.randrange(len(layout.drives))
            spare = rng.choice([d for d in POOL if d not in layout.drives])
            assert store.commit_repair(layout.segment_id, layout.drives, {index: spare})
        elif action == "multipart":
            key = rng.choice(keys)
            upload = store.create_upload("b", key, ObjectAttrs(), "", 1.0)
            for number in (1, 2):
                part = new_segments(store, rng)[:1]
                store.commit_part(upload, number, size=part[0].length, etag=f"{number:032x}", checksums={},
                                  data=ObjectData(part[0].length, segments=part), now=2.0, owner=WRITER)  # fmt: skip
            if rng.random() < 0.5:  # completed with part 1 only: part 2's segment goes to GC
                store.complete_upload("b", key, upload, [(1, f"{1:032x}")], part_size_min=1, now=3.0)
        if step % 10 == 9:
            for drive in POOL:
                assert walk(store, drive, rng.choice([1, 3, 50])) == model(store, drive), (step, drive)
    assert any(model(store, drive) for drive in POOL)
    before = store.all("SELECT * FROM drive_shards ORDER BY drive_id, pg, segment_id, shard_index")
    with store.tx() as db:
        rebuilt = rebuild_shard_index(db)
    assert store.all("SELECT * FROM drive_shards ORDER BY drive_id, pg, segment_id, shard_index") == before
    assert rebuilt == len(before) == 6 * len(store.segments_after(-1, "", 1_000_000))


def test_a_page_of_a_drive_s_walk_is_an_index_range_not_a_scan(tmp_path):
    """SQLite's plan for a page: a search of the index's key, then segments by id; no table scanned."""
    store = SqlStore(tmp_path / "meta.db")
    try:
        sql, args = segments_on_drive_sql(POOL[0], -1, "", 10)
        plan = [row["detail"] for row in store.all(f"EXPLAIN QUERY PLAN {sql}", args)]
        assert not [step for step in plan if step.startswith("SCAN")], plan
        assert any(step.startswith("SEARCH d ") and "drive_id=?" in step for step in plan), plan  # d: drive_shards
    finally:
        store.close()


def test_a_repair_putting_a_shard_back_where_a_hand_edit_took_it_from_commits(store):
    """A layout edited behind the index's back (an operator's SQL, an old version) leaves a stale row; the
    repair that moves the shard back onto that drive must still commit (the rebalancer does exactly that)."""
    segment = pending(store, drives=POOL[:6])
    commit(store, "k", [segment])
    moved = [POOL[6], *POOL[1:6]]  # shard 0 onto another drive, by hand
    with store.tx() as db:
        db.execute("UPDATE segments SET layout = replace(layout, ?, ?) WHERE segment_id = ?",
                   (f'"{POOL[0]}"', f'"{POOL[6]}"', segment.segment_id))  # fmt: skip
    assert store.commit_repair(segment.segment_id, tuple(moved), {0: POOL[0]})
    assert walk(store, POOL[0], 10) == [segment.segment_id] == model(store, POOL[0])


def test_reconciling_a_drive_finds_what_a_hand_edit_hid_from_the_index(store):
    """After a layout is edited behind the index's back, the drive it moved a shard onto looks empty to its
    walk and the drive it took it from does not; the last check before either goes (``reconcile_drive_index``)
    asks the layouts, corrects both and says so, and a second one finds nothing wrong."""
    segment = pending(store, drives=POOL[:6])
    commit(store, "k", [segment])
    with store.tx() as db:
        db.execute("UPDATE segments SET layout = replace(layout, ?, ?) WHERE segment_id = ?",
                   (f'"{POOL[0]}"', f'"{POOL[6]}"', segment.segment_id))  # fmt: skip
    assert walk(store, POOL[6], 10) == [] and model(store, POOL[6]) == [segment.segment_id]
    assert store.reconcile_drive_index(POOL[6]) == 1
    assert walk(store, POOL[6], 10) == [segment.segment_id]
    assert walk(store, POOL[0], 10) == [segment.segment_id] and model(store, POOL[0]) == []  # a stale row
    assert store.reconcile_drive_index(POOL[0]) == 1
    assert walk(store, POOL[0], 10) == []
    assert [store.reconcile_drive_index(drive) for drive in POOL] == [0] * len(POOL)
