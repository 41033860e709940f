"""The per-drive shard index: which committed segments have a shard on a drive, in walk order.

Draining, evacuating or removing a drive walks the segments with a shard on it. Without this index that
walk filtered the whole ``segments`` table by a substring of each layout: every page of every drive job
read every segment of the cluster. With it a page is an index range of (drive, placement group, segment),
so a drive's walk costs O(shards on that drive), whatever the cluster's size.

The index is derived from the layouts and kept in the same transactions that change them: a put's commit
(``index_layouts``), a repair's commit (``move_shard``), data sent to GC (``unindex_data``). Multipart
completion moves segment rows to a new data id but keeps their segment ids, so the index does not change.
It is not journaled (it would add a row per shard to every commit's record): a metadata recovery, and the
upgrade that introduced it, rebuild it from the layouts (``rebuild_shard_index``). Its table is
``drive_shards`` (``apollo.meta.schema``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from apollo.meta.plans import Many, Plan
from apollo.proto.layout import NO_DRIVE, SegmentLayout

if TYPE_CHECKING:
    from apollo.meta.sqlbase import Conn

REBUILD_PAGE = 2000  # segments read per statement while rebuilding

INSERT_ROWS_MAX = 256  # shards per INSERT statement (4 parameters each)
_INSERT_HEAD = "INSERT INTO drive_shards (drive_id, pg, segment_id, shard_index) VALUES "
_INSERT = _INSERT_HEAD + "(?, ?, ?, ?)"
_INSERT_KEEPING = _INSERT + " ON CONFLICT DO NOTHING"  # a row already there stays
_DELETE = "DELETE FROM drive_shards WHERE drive_id = ? AND pg = ? AND segment_id = ? AND shard_index = ?"


def _rows(layout: SegmentLayout) -> list[tuple[str, int, str, int]]:
    return _keys(layout.segment_id, layout.pg, layout.drives)


def _keys(segment_id: str, pg: int, drives: Iterable[str]) -> list[tuple[str, int, str, int]]:
    return [(drive, pg, segment_id, index) for index, drive in enumerate(drives) if drive != NO_DRIVE]


def index_layouts(db: Conn, layouts: Iterable[SegmentLayout]) -> None:
    """Index the shards of segments just committed: one statement per ``INSERT_ROWS_MAX`` shards (on
    PostgreSQL a statement per row would be a round trip per shard, in every commit)."""
    rows = [row for layout in layouts for row in _rows(layout)]
    for first in range(0, len(rows), INSERT_ROWS_MAX):
        chunk = rows[first : first + INSERT_ROWS_MAX]
        db.execute(_INSERT_HEAD + ", ".join(["(?, ?, ?, ?)"] * len(chunk)), [v for row in chunk for v in row])


def unindex_data_plan(among: str, args: tuple) -> Plan[None]:
    """Forget the shards of the segments ``WHERE among`` (a condition on ``segments``), before they go: by
    their whole key, read from their layouts (the table has no index by segment for every commit to write)."""
    keys = []
    for row in (yield f"SELECT layout FROM segments WHERE {among}", args):
        layout = json.loads(row["layout"])
        keys += _keys(layout["segment_id"], layout["pg"], layout["drives"])
    if keys:
        yield Many((_DELETE, keys))


def move_shard(db: Conn, segment_id: str, pg: int, index: int, old: str, new: str) -> None:
    """Shard ``index`` of a segment moved from drive ``old`` to drive ``new`` (a repair's commit). A row already
    there (a layout edited by hand, behind the index's back, moved the shard away from ``new`` before) is kept:
    a stale index must not make the repair that puts the shard back fail."""
    db.execute(_DELETE, (old, pg, segment_id, index))
    if new != NO_DRIVE:
        db.execute(_INSERT_KEEPING, (new, pg, segment_id, index))


def segments_on_drive_sql(drive_id: str, pg: int, segment_id: str, limit: int) -> tuple[str, tuple]:
    """The statement for the next ``limit`` committed segments with a shard on ``drive_id`` after the cursor
    (placement group, segment id), in that order: a range of the index's primary key, joined to the layouts."""
    return (
        "SELECT s.layout FROM segments s WHERE s.segment_id IN ("
        " SELECT d.segment_id FROM drive_shards d WHERE d.drive_id = ? AND (d.pg, d.segment_id) > (?, ?)"
        " ORDER BY d.pg, d.segment_id LIMIT ?) ORDER BY s.pg, s.segment_id",
        (drive_id, pg, segment_id, limit),
    )


def reconcile_drive(db: Conn, drive_id: str) -> int:
    """Make the index agree with the layouts for one drive, and return how many of its rows were wrong.

    The index is only as right as the transactions that keep it; a layout changed behind its back (SQL by
    hand, an older metadata service during an upgrade) would make a drive look empty while a shard is still
    on it, or hold a row for a shard it no longer has. So the last check before a drive is retired or removed
    asks the layouts themselves, once: a scan of every segment, not one per page of the drive's walk."""
    expected: set[tuple[str, int, str, int]] = set()
    rows = db.execute("SELECT layout FROM segments WHERE layout LIKE ?", (f'%"{drive_id}"%',)).fetchall()
    for row in rows:
        layout = json.loads(row["layout"])
        expected.update(key for key in _keys(layout["segment_id"], layout["pg"], layout["drives"])
                        if key[0] == drive_id)  # fmt: skip
    rows = db.execute("SELECT pg, segment_id, shard_index FROM drive_shards WHERE drive_id = ?", (drive_id,)).fetchall()
    indexed = {(drive_id, r["pg"], r["segment_id"], r["shard_index"]) for r in rows}
    missing, stale = expected - indexed, indexed - expected
    db.executemany(_INSERT, sorted(missing))
    db.executemany(_DELETE, sorted(stale))
    return len(missing) + len(stale)


def rebuild_shard_index(db: Conn) -> int:
    """Index every committed segment again from its layout; returns how many shards are indexed."""
    db.execute("DELETE FROM drive_shards")
    indexed, after = 0, ""
    while True:
        page = db.execute("SELECT segment_id, layout FROM segments WHERE segment_id > ? ORDER BY segment_id LIMIT ?",
                          (after, REBUILD_PAGE)).fetchall()  # fmt: skip
        if not page:
            return indexed
        rows = [row for r in page for row in _rows(SegmentLayout.from_json(json.loads(r["layout"])))]
        db.executemany(_INSERT_KEEPING, rows)  # a segment id in two rows: indexed once
        indexed += len(rows)
        after = page[-1]["segment_id"]
