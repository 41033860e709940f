"""Access keys, drives and the durable work queues (GC, repair)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from apollo.meta.sqlbase import SqlBase, dumps
from apollo.types import SegmentLayout


@dataclass
class DriveRecord:
    drive_id: str
    node: str
    path: str
    state: str
    weight: float


@dataclass
class Garbage:
    layout: SegmentLayout
    owner: str


class AdminOps(SqlBase):
    # access keys -----------------------------------------------------------------------------

    def put_key(self, access_key: str, secret_key: str, now: float, is_root: bool = False) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO access_keys (access_key, secret_key, created, is_root) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (access_key) DO UPDATE SET secret_key = excluded.secret_key",
                (access_key, secret_key, now, int(is_root)),
            )

    def get_secret(self, access_key: str) -> str | None:
        row = self.one("SELECT secret_key FROM access_keys WHERE access_key = ?", (access_key,))
        return None if row is None else row["secret_key"]

    def list_keys(self) -> list[tuple[str, float, bool]]:
        rows = self.all("SELECT access_key, created, is_root FROM access_keys ORDER BY access_key")
        return [(r["access_key"], r["created"], bool(r["is_root"])) for r in rows]

    def delete_key(self, access_key: str) -> bool:
        with self.tx() as db:
            return db.execute("DELETE FROM access_keys WHERE access_key = ?", (access_key,)).rowcount > 0

    # drives ----------------------------------------------------------------------------------

    def put_drive(self, record: DriveRecord, now: float) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO drives (drive_id, node, path, state, weight, added) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (drive_id) DO UPDATE SET path = excluded.path, state = excluded.state",
                (record.drive_id, record.node, record.path, record.state, record.weight, now),
            )

    def list_drives(self) -> list[DriveRecord]:
        rows = self.all("SELECT drive_id, node, path, state, weight FROM drives ORDER BY path")
        return [DriveRecord(r["drive_id"], r["node"], r["path"], r["state"], r["weight"]) for r in rows]

    # garbage queue ---------------------------------------------------------------------------

    def add_pending(self, layout: SegmentLayout, owner: str, due: float) -> None:
        """Record a segment before its shards are written, so a crash leaves collectable garbage."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO garbage (segment_id, layout, owner, due) VALUES (?, ?, ?, ?)",
                (layout.segment_id, dumps(layout.to_json()), owner, due),
            )

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

    # repair queue ----------------------------------------------------------------------------

    def report_damage(self, segment_id: str, shard_index: int, drive_id: str, reason: str, now: float) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO repair_queue (segment_id, shard_index, drive_id, reason, detected) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (segment_id, shard_index) DO NOTHING",
                (segment_id, shard_index, drive_id, reason, now),
            )

    def repair_backlog(self) -> int:
        return self.one("SELECT COUNT(*) AS n FROM repair_queue")["n"]

    def abandon_segments(self, segment_ids: list[str], now: float) -> None:
        """A write failed after some segments were finished: collect them now."""
        with self.tx() as db:
            db.executemany("UPDATE garbage SET due = ? WHERE segment_id = ?", [(now, s) for s in segment_ids])
