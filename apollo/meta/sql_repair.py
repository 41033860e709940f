"""The metadata side of self-healing: the repair queue, walks over segments, drive jobs.

Call sequence of one repair (``apollo.cluster.repair`` drives it)::

    store.report_damage(...)            # a reader, the scrubber or a drive job found a bad shard
    store.due_repairs(now, n)           # the worker takes whole segments' worth of rows
    store.segment_layout(segment_id)    # where its shards are now (None: deleted; pending: still being written)
    ...rebuild the shards, write them to their new drives, verify...
    store.commit_repair(segment_id, expected_drives, moves)   # one transaction: new layout, rows gone
    # a layout that changed meanwhile (another repair, a delete) makes the commit refuse, not overwrite
"""

from __future__ import annotations

import json

from apollo.meta.shard_index import move_shard, reconcile_drive, segments_on_drive_sql
from apollo.meta.sqlbase import SqlBase, dumps
from apollo.proto.layout import SegmentLayout
from apollo.proto.records import DriveJob, RepairItem


class RepairOps(SqlBase):
    # repair queue ----------------------------------------------------------------------------

    def report_damage(self, segment_id: str, shard_index: int, drive_id: str, reason: str, now: float) -> None:
        self.report_damages([(segment_id, shard_index, drive_id, reason)], now)

    def report_damages(self, items: list[tuple[str, int, str, str]], now: float) -> None:
        """Queue (segment, shard, drive, reason) rows; a shard already queued keeps its first report."""
        with self.tx() as db:
            db.executemany(
                "INSERT INTO repair_queue (segment_id, shard_index, drive_id, reason, detected) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (segment_id, shard_index) DO NOTHING",
                [(*item, now) for item in items],
            )

    def queue_moves(self, moves: list[tuple[str, int, str, str]], now: float) -> None:
        """Queue (segment, shard, from drive, to drive) moves of healthy shards (rebalance)."""
        with self.tx() as db:
            db.executemany(
                "INSERT INTO repair_queue (segment_id, shard_index, drive_id, reason, detected, target) "
                "VALUES (?, ?, ?, 'rebalance', ?, ?) ON CONFLICT (segment_id, shard_index) DO NOTHING",
                [(segment, index, source, now, target) for segment, index, source, target in moves],
            )

    def queued_moves(self) -> int:
        return self.one("SELECT COUNT(*) AS n FROM repair_queue WHERE reason = 'rebalance'")["n"]

    def repair_backlog(self) -> int:
        return self.one("SELECT COUNT(*) AS n FROM repair_queue")["n"]

    def degraded_groups(self) -> int:
        """Placement groups with at least one committed segment waiting for repair.

        Shards that are only moving (a drain, a rebalance) are whole where they are: they degrade nothing."""
        row = self.one(
            "SELECT COUNT(DISTINCT s.pg) AS n FROM repair_queue r JOIN segments s ON s.segment_id = r.segment_id "
            "WHERE r.reason NOT IN ('drain', 'rebalance')"
        )
        return row["n"]

    def due_repairs(self, now: float, segments: int) -> dict[str, list[RepairItem]]:
        """Every queued row of up to ``segments`` segments that are due, oldest reports first."""
        ids = self.all(
            "SELECT segment_id FROM repair_queue WHERE next_try <= ? ORDER BY next_try, detected LIMIT ?",
            (now, segments * 4),
        )
        chosen = list(dict.fromkeys(r["segment_id"] for r in ids))[:segments]
        out: dict[str, list[RepairItem]] = {s: [] for s in chosen}
        if not chosen:
            return out
        marks = ",".join("?" * len(chosen))
        for r in self.all(f"SELECT * FROM repair_queue WHERE segment_id IN ({marks}) ORDER BY shard_index", chosen):
            out[r["segment_id"]].append(
                RepairItem(r["segment_id"], r["shard_index"], r["drive_id"], r["reason"], r["attempts"], r["target"])
            )
        return out

    def segment_layout(self, segment_id: str) -> tuple[SegmentLayout | None, bool]:
        """(committed layout or None, whether the segment is still being written)."""
        row = self.one("SELECT layout FROM segments WHERE segment_id = ?", (segment_id,))
        if row is not None:
            return SegmentLayout.from_json(json.loads(row["layout"])), False
        pending = self.one("SELECT owner FROM garbage WHERE segment_id = ? AND owner <> ''", (segment_id,))
        return None, pending is not None

    def commit_repair(self, segment_id: str, expected: tuple[str, ...], moves: dict[int, str]) -> bool:
        """Point shards ``moves`` (index -> drive) at their new drives and clear their queue rows.

        Refused (False) when the segment is gone or its drives changed since the repair read them.
        """
        with self.tx() as db:
            row = db.execute("SELECT data_id, seq, layout FROM segments WHERE segment_id = ?", (segment_id,)).fetchone()
            if row is None:
                return False
            layout = json.loads(row["layout"])
            if tuple(layout["drives"]) != expected:
                return False
            for index, drive_id in moves.items():
                move_shard(db, segment_id, layout["pg"], index, layout["drives"][index], drive_id)
                layout["drives"][index] = drive_id
            db.execute(
                "UPDATE segments SET layout = ? WHERE data_id = ? AND seq = ?",
                (dumps(layout), row["data_id"], row["seq"]),
            )
            db.executemany(
                "DELETE FROM repair_queue WHERE segment_id = ? AND shard_index = ?",
                [(segment_id, index) for index in moves],
            )
            return True

    def defer_repairs(self, segment_id: str, indices: list[int], next_try: float) -> None:
        with self.tx() as db:
            db.executemany(
                "UPDATE repair_queue SET attempts = attempts + 1, next_try = ? "
                "WHERE segment_id = ? AND shard_index = ?",
                [(next_try, segment_id, index) for index in indices],
            )

    def retry_repairs_now(self) -> int:
        """Make backed-off repairs due at once: new capacity (an added or replacing drive) may unblock them."""
        with self.tx() as db:
            return db.execute("UPDATE repair_queue SET next_try = 0 WHERE next_try > 0").rowcount

    def drop_repairs(self, segment_id: str, indices: list[int] | None = None) -> None:
        """Forget queued rows: the shard turned out healthy, or the segment no longer exists."""
        with self.tx() as db:
            if indices is None:
                db.execute("DELETE FROM repair_queue WHERE segment_id = ?", (segment_id,))
            else:
                db.executemany(
                    "DELETE FROM repair_queue WHERE segment_id = ? AND shard_index = ?",
                    [(segment_id, index) for index in indices],
                )

    # walks over committed segments -----------------------------------------------------------

    def segments_after(self, pg: int, segment_id: str, limit: int, drive_id: str | None = None) -> list[SegmentLayout]:
        """The next committed segments in (placement group, segment id) order, optionally only those with a
        shard on ``drive_id`` (through the per-drive shard index: O(page), not a walk of every segment)."""
        if drive_id is not None:
            sql, args = segments_on_drive_sql(drive_id, pg, segment_id, limit)
        else:
            sql = "SELECT layout FROM segments WHERE (pg, segment_id) > (?, ?) ORDER BY pg, segment_id LIMIT ?"
            args = (pg, segment_id, limit)
        rows = self.all(sql, args)
        return [SegmentLayout.from_json(json.loads(r["layout"])) for r in rows]

    def shard_references(self, segment_ids: list[str]) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
        """Who refers to each segment: ("committed" | "pending" | "garbage", drives per shard) entries."""
        out: dict[str, list[tuple[str, tuple[str, ...]]]] = {s: [] for s in segment_ids}
        if not segment_ids:
            return out
        marks = ",".join("?" * len(segment_ids))
        for r in self.all(f"SELECT segment_id, layout FROM segments WHERE segment_id IN ({marks})", segment_ids):
            out[r["segment_id"]].append(("committed", tuple(json.loads(r["layout"])["drives"])))
        rows = self.all(f"SELECT segment_id, layout, owner FROM garbage WHERE segment_id IN ({marks})", segment_ids)
        for r in rows:
            kind = "pending" if r["owner"] else "garbage"
            out[r["segment_id"]].append((kind, tuple(json.loads(r["layout"])["drives"])))
        return out

    def segment_count(self) -> int:
        return self.one("SELECT COUNT(*) AS n FROM segments")["n"]

    def queued_repairs_by_drive(self, reason: str) -> dict[str, int]:
        """Shards queued for repair with ``reason``, per drive they are (or were) on."""
        query = "SELECT drive_id, COUNT(*) AS n FROM repair_queue WHERE reason = ? GROUP BY drive_id"
        rows = self.all(query, (reason,))
        return {row["drive_id"]: row["n"] for row in rows}

    def stored_totals(self) -> tuple[int, int]:
        """(object versions, their logical bytes), delete markers left out: what `apollo admin status` shows.
        A scan of the versions table, for an operator's command, not a request path."""
        row = self.one("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM versions WHERE delete_marker = 0")
        return row["n"], int(row["bytes"])

    # drive jobs ------------------------------------------------------------------------------

    def start_drive_job(self, drive_id: str, kind: str, now: float) -> None:
        """Start (or restart from the beginning) a walk over the segments of ``drive_id``."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO drive_jobs (drive_id, kind, cursor_pg, cursor_segment, queued, started) "
                "VALUES (?, ?, -1, '', 0, ?) ON CONFLICT (drive_id) DO UPDATE SET kind = excluded.kind, "
                "cursor_pg = -1, cursor_segment = '', queued = 0, started = excluded.started, finished = 0",
                (drive_id, kind, now),
            )

    def drive_jobs(self, active_only: bool = True) -> list[DriveJob]:
        sql = "SELECT * FROM drive_jobs" + (" WHERE finished = 0" if active_only else "") + " ORDER BY started"
        return [
            DriveJob(r["drive_id"], r["kind"], r["cursor_pg"], r["cursor_segment"], r["queued"], r["started"],
                     r["finished"])
            for r in self.all(sql)
        ]  # fmt: skip

    def advance_drive_job(
        self, job: DriveJob, pg: int, segment_id: str, items: list[tuple[str, int, str, str]], now: float
    ) -> None:
        """Queue one page's shards and move the job's cursor past that page, atomically."""
        with self.tx():
            self.report_damages(items, now)
            self.conn.execute(
                "UPDATE drive_jobs SET cursor_pg = ?, cursor_segment = ?, queued = queued + ? WHERE drive_id = ?",
                (pg, segment_id, len(items), job.drive_id),
            )

    def finish_drive_job(self, drive_id: str, now: float) -> None:
        with self.tx() as db:
            db.execute("UPDATE drive_jobs SET finished = ? WHERE drive_id = ?", (now, drive_id))

    def reconcile_drive_index(self, drive_id: str) -> int:
        """Correct the shard index's rows of ``drive_id`` from the layouts (``shard_index.reconcile_drive``);
        returns how many were wrong. A scan of every segment: for the last check before a drive goes."""
        with self.tx() as db:
            return reconcile_drive(db, drive_id)

    def garbage_on(self, drive_id: str) -> int:
        """Segments in the garbage queue with a shard on ``drive_id``: writes still in flight (pending rows,
        which may yet commit there) and replaced or deleted data the collector has not removed yet.

        A scan of the queue (it holds in-flight writes and data younger than the GC delay, not the namespace).
        """
        return self.one("SELECT COUNT(*) AS n FROM garbage WHERE layout LIKE ?", (f'%"{drive_id}"%',))["n"]

    def pending_repairs_on(self, drive_id: str) -> int:
        """Queued shards that still live on (or were lost with) ``drive_id``."""
        return self.one("SELECT COUNT(*) AS n FROM repair_queue WHERE drive_id = ?", (drive_id,))["n"]
