"""The metadata journal on a real SQLite store: trigger capture, numbering, files on drives, replay, recovery."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from pathlib import Path

import pytest

from apollo.cluster.recovery import RecoveryError, RecoveryRefused, recover
from apollo.meta import capture, journal
from apollo.meta.groupcommit import GroupCommitExecutor
from apollo.meta.location import DB_FILE
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData, SegmentLayout
from apollo.proto.records import ObjectAttrs
from apollo.storage.drive import format_drive
from apollo.testing.layouts import DRIVES, etag
from apollo.testing.layouts import layout as made_up_layout

DEPLOYMENT = "d" * 32


class NoProgress:
    def phase(self, description: str, total: int) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass


def drives(tmp_path: Path, count: int) -> list[tuple[str, Path]]:
    """Formatted drive directories, as (drive id, root) sorted by id."""
    out = []
    for n in range(count):
        root = tmp_path / f"drive{n}"
        out.append((format_drive(root, DEPLOYMENT), root))
    return sorted(out)


def journaled_store(tmp_path: Path, roots: list[tuple[str, Path]], rotate_s: float = 600.0, on_error=None):
    (tmp_path / "live").mkdir()
    store = SqlStore(tmp_path / "live" / DB_FILE)
    journal.enable(store, "t1", roots, on_error=on_error or (lambda: None))
    store.journal.files.rotate_s = rotate_s
    store.set_setting("deployment_id", DEPLOYMENT)
    return store


def layout(pg: int = 7) -> SegmentLayout:
    return made_up_layout(f"seg{random.getrandbits(64):x}", length=1000, scheme="2+1", pg=pg)


def put(store: SqlStore, bucket: str, key: str, payload: bytes | None = None, now: float = 1732543423.1234567,
        segments: list[SegmentLayout] | None = None, members: list | None = None, **attrs):  # fmt: skip
    data = ObjectData(len(payload), inline=payload) if payload is not None else ObjectData(1000, segments=segments)
    return store.commit_version(bucket, key, size=data.size, etag=etag(key), attrs=ObjectAttrs(**attrs),
                                data=data, now=now, owner="t1", members=members)  # fmt: skip


def write_everything(store: SqlStore) -> None:
    """Every kind of namespace change the store makes, repair's layout update included."""
    store.create_bucket("plain", 1.25)
    store.create_bucket("versioned", 2.5)
    store.set_versioning("versioned", "Enabled")
    put(store, "plain", "inline", b"\x00\xffbytes", content_type="text/plain", user_meta={"a": "é"},
        tags={"t": "1"}, checksums={"SHA256": "abc="})  # fmt: skip
    put(store, "plain", "empty", b"")
    seg = layout()
    store.add_pending(seg, "t1", 1e12)
    put(store, "plain", "big", segments=[seg], members=[["member.bin", 0, 50]])  # a tar index
    store.commit_repair(seg.segment_id, DRIVES[:3], {1: DRIVES[25]})
    first = put(store, "versioned", "doc", b"one", now=10.000001)
    put(store, "versioned", "doc", b"two", now=10.000002)
    store.set_tags("versioned", "doc", first.version_id, {"old": "yes"})
    store.delete_object("versioned", "doc", None, 11.0)  # a delete marker
    put(store, "plain", "gone", b"x")
    store.delete_object("plain", "gone", None, 12.0)
    upload = store.create_upload("plain", "multi", ObjectAttrs(user_meta={"k": "v"}), "CRC32", 13.0)
    for number in (1, 2):
        part = layout()
        store.add_pending(part, "t1", 1e12)
        store.commit_part(upload, number, size=1000, etag=f"{number:032x}", checksums={},
                          data=ObjectData(1000, segments=[part]), now=14.0, owner="t1")  # fmt: skip
    store.complete_upload("plain", "multi", upload, [(1, f"{1:032x}"), (2, f"{2:032x}")], part_size_min=0, now=15.0)
    open_upload = store.create_upload("plain", "open", ObjectAttrs(), "", 16.0)
    part = layout()
    store.add_pending(part, "t1", 1e12)
    store.commit_part(open_upload, 1, size=1000, etag="e" * 32, checksums={}, data=ObjectData(1000, segments=[part]),
                      now=17.0, owner="t1")  # fmt: skip
    kept = store.create_snapshot("plain", "", 17.5, owner="key:AKTEST")
    store.delete_snapshot("plain", store.create_snapshot("plain", "m", 17.6).snapshot_id, 17.7)
    store.delete_object("plain", "big", None, 17.8)  # pinned: its row moves to retired_versions
    assert kept.objects == 4
    committed = store.begin_txn("plain", 17.9, "t1")  # a transaction: staged, then committed
    store.stage_put(committed.txn_id, "plain", "txn/a", size=3, etag="a" * 32, attrs=ObjectAttrs(),
                    data=ObjectData(3, inline=b"txn"), now=17.91, owner="t1")  # fmt: skip
    store.commit_txn(committed.txn_id, "plain", 17.92, "t1")
    staged = store.begin_txn("plain", 17.93, "t1", if_prefix_absent="later/")  # and one left open
    part = layout()
    store.add_pending(part, "t1", 1e12)
    store.stage_put(staged.txn_id, "plain", "later/a", size=1000, etag="b" * 32, attrs=ObjectAttrs(),
                    data=ObjectData(1000, segments=[part]), now=17.94, owner="t1")  # fmt: skip
    store.stage_delete(staged.txn_id, "plain", "later/b", 17.95, "t1")
    store.create_kv_namespace("cache", 8, 3600.0, 17.96)  # a KV namespace: values evicted, one read, one kept
    for n, key in enumerate(("k1", "k2", "k3")):
        put(store, "cache", key, b"four", now=17.98 + n / 1000)
    store.kv_touches.record([store.kv_lookup("cache", ["k3"], 17.985)[0].version.seq], 17.985)
    store.set_kv_namespace("cache", 16, None, 17.99)
    store.apply_kv_touches()
    store.put_policy("read-data", '{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}', 18.0)
    store.put_key("AKTEST", "secret", 18.0, policies=["read-data", "writeonly"])
    store.put_key("AKGONE", "secret", 18.5, policies=["readonly"])
    store.delete_key("AKGONE")


def tables(path: Path) -> dict[str, list[tuple]]:
    """Every row of every journaled table, in a stable order, as SQLite returns them (types included)."""
    conn = sqlite3.connect(path)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in capture.JOURNALED_TABLES}
    finally:
        conn.close()


def records(root: Path) -> list[dict]:
    return [json.loads(line) for path in journal.journal_files(root) for line in path.read_text().splitlines()]


def test_replaying_the_journal_rebuilds_every_journaled_row_exactly(tmp_path):
    roots = drives(tmp_path, 4)
    store = journaled_store(tmp_path, roots)
    write_everything(store)
    store.close()

    chosen = [records(root) for _, root in roots[:3]]
    assert chosen[0] == chosen[1] == chosen[2]  # three copies, on the first three drives by id
    assert records(roots[3][1]) == []
    seqs = [r["seq"] for r in chosen[0]]
    assert seqs == list(range(1, len(seqs) + 1))  # one number per transaction that changed something
    with sqlite3.connect(tmp_path / "live" / DB_FILE) as conn:
        assert conn.execute("SELECT value FROM settings WHERE name = 'journal.seq'").fetchone()[0] == str(seqs[-1])

    replica = SqlStore(tmp_path / "replica.db")
    replayer = capture.Replayer(replica.conn)
    for record in chosen[0] + chosen[0]:  # twice: row images make replay idempotent
        for change in record["changes"]:
            replayer.apply(change)
    replica.close()
    live, rebuilt = tables(tmp_path / "live" / DB_FILE), tables(tmp_path / "replica.db")
    assert all(live[t] for t in capture.JOURNALED_TABLES)
    assert rebuilt == live  # floats to the last bit, blobs byte for byte, NULL and b"" told apart


def test_captured_image_has_every_column_of_the_schema(tmp_path):
    store = journaled_store(tmp_path, drives(tmp_path, 1))
    for table in capture.JOURNALED_TABLES:
        columns = [c.name for c in capture.table_columns(store.conn, table)]
        ddl = capture.trigger_ddl(table, capture.table_columns(store.conn, table))
        for column in columns:
            assert f"'{column}'," in ddl[0]  # a column added to the schema is captured without a code change
    store.close()


def test_triggers_live_only_on_the_writer_connection(tmp_path):
    store = journaled_store(tmp_path, drives(tmp_path, 1))
    reader = store.open_reader()
    count = "SELECT COUNT(*) FROM {} WHERE type = 'trigger'"
    assert store.conn.execute(count.format("sqlite_temp_master")).fetchone()[0] == 4 * len(capture.JOURNALED_TABLES)
    assert reader.conn.execute(count.format("sqlite_temp_master")).fetchone()[0] == 0
    assert store.conn.execute(count.format("sqlite_master")).fetchone()[0] == 0  # nothing in the database file
    reader.close()
    store.close()


def test_a_batch_is_one_record_and_rolled_back_calls_leave_nothing(tmp_path):
    roots = drives(tmp_path, 1)
    store = journaled_store(tmp_path, roots)
    executor = GroupCommitExecutor(store)
    release, started = threading.Event(), threading.Event()
    executor.submit(lambda: (started.set(), release.wait(10)))
    started.wait(10)
    futures = [executor.submit(store.create_bucket, name, 1.0) for name in ("a", "a", "b")]  # the second fails
    release.set()
    assert [f.exception(10) is None for f in futures] == [True, False, True]
    with pytest.raises(ZeroDivisionError), store.tx() as db:
        db.execute("INSERT INTO buckets (name, created) VALUES ('c', 1.0)")
        raise ZeroDivisionError
    store.set_setting("tuning.x", "1")  # settings are not journaled: no record, no number
    executor.shutdown()
    store.close()
    (record,) = records(roots[0][1])
    assert record["seq"] == 1 and record["owner"] == "t1"
    assert [c["row"]["name"] for c in record["changes"]] == ["a", "b"]


def test_a_failing_drive_hands_its_records_to_the_next_and_the_commit_stands(tmp_path):
    roots = drives(tmp_path, 4)
    errors = []
    store = journaled_store(tmp_path, roots, on_error=lambda: errors.append(1))
    store.create_bucket("before", 1.0)
    broken = roots[0][1] / journal.JOURNAL_DIR
    for path in broken.iterdir():
        path.unlink()
    broken.rmdir()
    broken.write_text("not a directory")  # every new journal file there now fails
    store.journal.files.rotate_s = 0  # so the next append opens new files
    store.create_bucket("after", 1.0)
    store.close()
    assert [b.name for b in SqlStore(tmp_path / "live" / DB_FILE).list_buckets()] == ["after", "before"]
    assert errors
    for _, root in roots[1:]:  # the fourth drive took the failed drive's place
        assert [r["changes"][0]["row"]["name"] for r in records(root)][-1] == "after"
    assert journal.last_seq(journal.journal_files(roots[3][1])[-1]) == 2


def test_last_seq_reads_the_tail_of_files_with_long_lines(tmp_path):
    path = tmp_path / "journal-x-1.jsonl"
    lines = [json.dumps({"seq": n, "changes": [{"pad": "7" * 100_000 * n}]}, separators=(",", ":")) for n in (1, 2)]
    path.write_text("\n".join(lines) + "\n" + '{"seq":3,"time":1.0,"chan')  # a torn last line still names its seq
    assert journal.last_seq(path) == 3
    path.write_text("\n".join(lines) + "\n")
    assert journal.last_seq(path) == 2
    path.write_text("")
    assert journal.last_seq(path) is None


def test_checkpoints_prune_old_copies_and_covered_journal_files(tmp_path):
    roots = drives(tmp_path, 3)
    store = journaled_store(tmp_path, roots, rotate_s=0.0)  # every record in its own file
    live = tmp_path / "live" / DB_FILE
    written = []
    for round_ in range(3):
        store.create_bucket(f"b{round_}", 1.0)
        result = journal.checkpoint(live, [root for _, root in roots[:2]], [root for _, root in roots], rotate_s=0.0)
        written.append(result.written)
    store.create_bucket("after", 1.0)
    store.close()
    assert [[seq for seq, _ in w] for w in written] == [[1, 1], [2, 2], [3, 3]]
    for _, root in roots[:2]:
        assert [seq for seq, _ in journal.checkpoints(root)] == [3, 2]
    for _, root in roots:  # records up to the oldest kept checkpoint went; the rest stay
        assert sorted(journal.last_seq(p) for p in journal.journal_files(root)) == [3, 4]


def test_recovery_keeps_writes_committed_after_the_checkpoint_out_of_the_gc_queue(tmp_path):
    roots = drives(tmp_path, 3)
    store = journaled_store(tmp_path, roots)
    store.create_bucket("b", 1.0)
    seg = layout()
    store.add_pending(seg, "t1", 1e12)  # a write in flight when the checkpoint is taken
    journal.checkpoint(tmp_path / "live" / DB_FILE, [root for _, root in roots], [root for _, root in roots])
    put(store, "b", "k", segments=[seg])  # commits after it; the GC row's removal is not journaled
    store.close()

    meta = tmp_path / "recovered"
    report = recover(meta, [root for _, root in roots], NoProgress(), "now", force=False)
    assert report.checkpoint_seq == 1 and report.replayed == 1 and report.gaps == []
    assert report.fixes["GC rows of committed segments removed"] == 1
    recovered = SqlStore(meta / DB_FILE)
    assert recovered.garbage_count() == 0
    assert recovered.get_version("b", "k").data.segments[0].segment_id == seg.segment_id
    # The shard index is not journaled: the recovery rebuilt it from the layouts the replay wrote.
    assert [s.segment_id for s in recovered.segments_after(-1, "", 10, seg.drives[0])] == [seg.segment_id]
    assert {d.drive_id for d in recovered.list_drives()} == {d for d, _ in roots}
    assert recovered.get_setting("deployment_id") == DEPLOYMENT
    assert recovered.get_setting(journal.SEQ_SETTING) == "2"  # new commits continue the numbering
    # No shard files exist in this test: the segment is unreadable and its shards are queued for repair.
    assert (report.segments, report.unreadable, report.missing_shards) == (1, 1, 3)
    assert recovered.repair_backlog() == 3
    recovered.close()
    with pytest.raises(RecoveryRefused):
        recover(meta, [root for _, root in roots], NoProgress(), "again", force=False)


def test_recovery_with_a_lost_record_reports_the_gap_and_repairs_the_latest_flag(tmp_path):
    roots = drives(tmp_path, 1)
    store = journaled_store(tmp_path, roots)
    store.create_bucket("b", 1.0)
    store.set_versioning("b", "Enabled")
    first = put(store, "b", "k", b"one")
    put(store, "b", "k", b"two")  # demotes the first version: the record lost below
    store.set_tags("b", "k", first.version_id, {"t": "1"})  # images the first version with is_latest = 0
    store.close()
    (path,) = journal.journal_files(roots[0][1])
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3] + lines[4:]))

    report = recover(tmp_path / "recovered", [roots[0][1]], NoProgress(), "now", force=False)
    assert report.gaps == [(4, 4)] and report.last_seq == 5
    assert report.fixes["latest-version flags corrected"] == 1
    recovered = SqlStore(tmp_path / "recovered" / DB_FILE)
    assert recovered.get_version("b", "k").version_id == first.version_id
    recovered.close()


def test_recovery_refuses_drives_without_checkpoint_or_journal(tmp_path):
    roots = drives(tmp_path, 2)  # formatted, but never journaled to (an Apollo from before the journal)
    with pytest.raises(RecoveryError, match="nothing to recover from"):
        recover(tmp_path / "meta", [root for _, root in roots], NoProgress(), "now", force=False)
    assert sorted(p.name for p in (tmp_path / "meta").iterdir()) == []  # no database, no staging file left
