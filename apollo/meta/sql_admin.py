"""Drives and the durable garbage queue."""

from __future__ import annotations

import json
import time
from dataclasses import replace

from apollo import errors
from apollo.meta.sql_users import UserOps
from apollo.meta.sqlbase import dumps
from apollo.proto.cluster_map import DriveRecord
from apollo.proto.layout import NO_DRIVE, SegmentLayout
from apollo.proto.records import Garbage


class AdminOps(UserOps):
    # drives ----------------------------------------------------------------------------------

    def put_drive(self, record: DriveRecord, now: float) -> None:
        """Register a drive (or update where it is mounted); its state is only changed by ``set_drive_state``."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO drives (drive_id, node, path, state, weight, added, state_since) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (drive_id) DO UPDATE SET path = excluded.path",
                (record.drive_id, record.node, record.path, record.state, record.weight, now, now),
            )

    def set_drive_state(self, drive_id: str, state: str, now: float, replaced_by: str | None = None) -> bool:
        with self.tx() as db:
            changed = db.execute(
                "UPDATE drives SET state = ?, state_since = ? WHERE drive_id = ? AND state <> ?",
                (state, now, drive_id, state),
            ).rowcount
            if replaced_by is not None:
                db.execute("UPDATE drives SET replaced_by = ? WHERE drive_id = ?", (replaced_by, drive_id))
            return changed > 0

    def set_drive_usage(self, usage: dict[str, tuple[int, int, str]]) -> None:
        """Free and total bytes and the filesystem of each of this server's drives (``Drive.check``), for
        ``apollo admin status`` and placement decisions elsewhere."""
        with self.tx() as db:
            db.executemany(
                "UPDATE drives SET free_bytes = ?, total_bytes = ?, filesystem = ? WHERE drive_id = ?",
                [(free, total, filesystem, drive_id) for drive_id, (free, total, filesystem) in usage.items()],
            )

    def delete_drive(self, drive_id: str) -> None:
        """Take a drive out of the deployment for good (``removed_drive_ids`` remembers it)."""
        with self.tx() as db:
            self._remember_removed(db, "drive_id = ?", drive_id)
            db.execute("DELETE FROM drives WHERE drive_id = ?", (drive_id,))
            db.execute("DELETE FROM drive_jobs WHERE drive_id = ?", (drive_id,))

    def _remember_removed(self, db, where: str, value: str) -> None:
        db.execute(
            "INSERT INTO removed_drives (drive_id, node, path, removed) SELECT drive_id, node, path, ? FROM drives "
            f"WHERE {where} ON CONFLICT (drive_id) DO UPDATE SET removed = excluded.removed",
            (time.time(), value),
        )  # fmt: skip

    def removed_drive_ids(self) -> set[str]:
        """Drives removed from the deployment: never attached or registered again (a wiped disk gets a new id)."""
        return {row["drive_id"] for row in self.all("SELECT drive_id FROM removed_drives")}

    def list_drives(self) -> list[DriveRecord]:
        rows = self.all("SELECT * FROM drives ORDER BY path, added")
        return [
            DriveRecord(r["drive_id"], r["node"], r["path"], r["state"], r["weight"], r["replaced_by"],
                        r["state_since"], r["free_bytes"], r["total_bytes"], r["health"], r["filesystem"])
            for r in rows
        ]  # fmt: skip

    # garbage queue ---------------------------------------------------------------------------

    def add_pending(self, layout: SegmentLayout, owner: str, due: float) -> None:
        """Record a segment before its shards are written, so a crash leaves collectable garbage."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO garbage (segment_id, layout, owner, due) VALUES (?, ?, ?, ?)",
                (layout.segment_id, dumps(layout.to_json()), owner, due),
            )

    def repoint_pending(self, layout: SegmentLayout, owner: str) -> None:
        """A pending write moved shards to spare drives: its commit, or GC of an abandoned write, finds them there.

        Only drives may change, each to a drive of the cluster that the layout does not hold yet: the
        layout a commit stores is this row's, so this is the one door through which a writer shapes it.

        :raises AccessDenied: the segment is not a pending write of ``owner``.
        :raises InvalidRequest: anything else changed, or a drive is unknown or named twice.
        """
        with self.tx() as db:
            row = db.execute("SELECT layout, owner FROM garbage WHERE segment_id = ?", (layout.segment_id,)).fetchone()
            if row is None or row["owner"] != owner:
                raise errors.AccessDenied(f"segment {layout.segment_id} is not a write in progress of this caller")
            current = SegmentLayout.from_json(json.loads(row["layout"]))
            if replace(layout, drives=current.drives) != current:
                raise errors.InvalidRequest("a pending write may move its shards to other drives, nothing else")
            moved = {new for old, new in zip(current.drives, layout.drives, strict=True) if new != old}
            placed = [drive for drive in layout.drives if drive != NO_DRIVE]
            marks = ", ".join("?" * len(moved))
            known = {r["drive_id"] for r in db.execute(
                f"SELECT drive_id FROM drives WHERE state <> 'retired' AND drive_id IN ({marks})", tuple(moved)
            ).fetchall()} if moved else set()  # fmt: skip
            if len(set(placed)) != len(placed) or not moved <= known:
                raise errors.InvalidRequest(f"segment {layout.segment_id}: drives {sorted(moved - known)} are "
                                            "not drives in service, or a drive holds two shards")  # fmt: skip
            db.execute("UPDATE garbage SET layout = ? WHERE segment_id = ?",
                       (dumps(layout.to_json()), layout.segment_id))  # fmt: skip

    def release_orphans(self, live_owner: str, now: float) -> int:
        """Make pending writes of dead processes due now; returns how many."""
        with self.tx() as db:
            return db.execute(
                "UPDATE garbage SET due = ? WHERE owner <> ? AND owner <> '' AND due > ?", (now, live_owner, now)
            ).rowcount

    def release_owner(self, owner: str, now: float) -> int:
        """Make one dead process's pending writes due now (a worker that died while others live on)."""
        with self.tx() as db:
            return db.execute("UPDATE garbage SET due = ? WHERE owner = ? AND due > ?", (now, owner, now)).rowcount

    def due_garbage(self, now: float, limit: int) -> list[Garbage]:
        rows = self.all("SELECT layout, owner FROM garbage WHERE due <= ? ORDER BY due LIMIT ?", (now, limit))
        return [Garbage(SegmentLayout.from_json(json.loads(r["layout"])), r["owner"]) for r in rows]

    def forget_garbage(self, segment_ids: list[str]) -> None:
        with self.tx() as db:
            db.executemany("DELETE FROM garbage WHERE segment_id = ?", [(s,) for s in segment_ids])

    def garbage_count(self) -> int:
        return self.one("SELECT COUNT(*) AS n FROM garbage")["n"]

    def abandon_segments(self, segment_ids: list[str], now: float, owner: str | None = None) -> None:
        """A write failed after some segments were finished: collect them now (only ``owner``'s, if given)."""
        with self.tx() as db:
            if owner is None:
                db.executemany("UPDATE garbage SET due = ? WHERE segment_id = ?", [(now, s) for s in segment_ids])
            else:
                db.executemany("UPDATE garbage SET due = ? WHERE segment_id = ? AND owner = ?",
                               [(now, s, owner) for s in segment_ids])  # fmt: skip
