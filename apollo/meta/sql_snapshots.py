"""Snapshots: the exact versions under a prefix at one instant, pinned from GC, by reference (no data copied).

A training run lists its dataset once and must read exactly those objects in every epoch, on every rank,
after every restart, whatever writers do meanwhile. A snapshot is taken in one transaction: one row per
object naming the version row it saw (``snapshot_objects``). Nothing else changes until a pinned version is
deleted or replaced in place: then its row moves, data and all, to ``retired_versions`` instead of being
dropped (``ObjectOps._remove_version``), and the snapshot still reads it. Deleting the snapshot hands the
retired versions no other snapshot names to GC.

Consistency on PostgreSQL, where transactions run at once under REPEATABLE READ: a snapshot touches the
version rows it pins, so a concurrent delete or overwrite of one of them conflicts with it and one of the
two runs again (``apollo.meta.engine``); a write of a new key does not conflict. A snapshot taken while
keys under its prefix are deleted or overwritten without pause may therefore need several runs.
"""

from __future__ import annotations

import uuid

from apollo import errors, ids, limits
from apollo.meta.listing import Cursor, successor, walk
from apollo.meta.sql_objects import IN_LIST_MAX, ObjectOps
from apollo.meta.sqlbase import Row
from apollo.meta.version_rows import VERSION_COLUMNS, VERSION_COLUMNS_V
from apollo.proto.records import ListPage, Lookup, Snapshot, Version

SNAPSHOT_COLUMNS = "snapshot_id, bucket, prefix, created, owner, objects, bytes"


def _snapshot(row: Row) -> Snapshot:
    return Snapshot(row["snapshot_id"], row["bucket"], row["prefix"], row["created"], row["owner"], row["objects"],
                    row["bytes"])  # fmt: skip


def key_range(prefix: str) -> tuple[str, tuple[str, ...]]:
    """SQL (on ``key``) and arguments for the keys starting with ``prefix``: an index range, not a LIKE."""
    upper = successor(prefix)
    return ("key >= ? AND key < ?", (prefix, upper)) if upper is not None else ("key >= ?", (prefix,))


class SnapshotOps(ObjectOps):
    def create_snapshot(self, bucket: str, prefix: str, now: float, owner: str = "") -> Snapshot:
        """Pin the latest version of every object (not delete markers) under ``prefix``, in one transaction.

        :raises BucketNotFound:
        :raises InvalidRequest: a prefix longer than a key may be, more than ``limits.snapshot_objects_max``
            objects, or the bucket has ``limits.snapshots_per_bucket_max`` snapshots already.
        """
        if not isinstance(prefix, str) or len(prefix.encode()) > limits.key_length_bytes_max:
            raise errors.InvalidRequest(f"a snapshot's prefix is a key prefix of at most "
                                        f"{limits.key_length_bytes_max} bytes")  # fmt: skip
        in_range, range_args = key_range(prefix)
        latest = f"FROM versions WHERE bucket = ? AND is_latest = 1 AND delete_marker = 0 AND {in_range}"
        snapshot_id = uuid.uuid4().hex
        with self.tx() as db:
            if self._bucket_row(db, bucket)["kv_budget"] is not None:
                raise errors.InvalidRequest(f"bucket {bucket} is a KV namespace: its values are evicted, not pinned")
            taken = db.execute("SELECT COUNT(*) AS n FROM snapshots WHERE bucket = ?", (bucket,)).fetchone()["n"]
            if taken >= limits.snapshots_per_bucket_max:
                raise errors.InvalidRequest(f"bucket {bucket} has {taken} snapshots, the most it may have: delete "
                                            "one first")  # fmt: skip
            if not self.engine.embedded:  # see the module's docstring; SQLite has one writer at a time
                db.execute(f"UPDATE versions SET is_latest = is_latest WHERE id IN (SELECT id {latest})",
                           (bucket, *range_args))  # fmt: skip
            totals = db.execute(f"SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes {latest}",
                                (bucket, *range_args)).fetchone()  # fmt: skip
            if totals["n"] > limits.snapshot_objects_max:
                raise errors.InvalidRequest(f"{totals['n']} objects under {prefix!r}: a snapshot holds at most "
                                            f"{limits.snapshot_objects_max}; take one per narrower prefix")  # fmt: skip
            db.execute(f"INSERT INTO snapshot_objects (snapshot_id, key, vid) SELECT ?, key, id {latest}",
                       (snapshot_id, bucket, *range_args))  # fmt: skip
            # PostgreSQL's SUM of BIGINT is a NUMERIC: a Decimal in Python
            snapshot = Snapshot(snapshot_id, bucket, prefix, now, owner, int(totals["n"]), int(totals["bytes"]))
            db.execute(f"INSERT INTO snapshots ({SNAPSHOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (snapshot_id, bucket, prefix, now, owner, snapshot.objects, snapshot.bytes))  # fmt: skip
            return snapshot

    def get_snapshot(self, bucket: str, snapshot_id: str) -> Snapshot:
        """:raises BucketNotFound, SnapshotNotFound: (also for a snapshot of another bucket)"""
        return _snapshot(self._snapshot_row(bucket, snapshot_id))

    def list_snapshots(self, bucket: str) -> list[Snapshot]:
        """The bucket's snapshots, oldest first (at most ``limits.snapshots_per_bucket_max``).
        :raises BucketNotFound:"""
        self.get_bucket(bucket)
        rows = self.all(f"SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE bucket = ? ORDER BY created, snapshot_id",
                        (bucket,))  # fmt: skip
        return [_snapshot(row) for row in rows]

    def retained_by_snapshots(self, bucket: str) -> dict[str, tuple[int, int]]:
        """{snapshot id: (versions, bytes)} of the deleted or replaced versions each snapshot of the bucket keeps
        (what deleting it could free; a version two snapshots keep counts in both): for operators."""
        rows = self.all("SELECT s.snapshot_id, COUNT(*) AS n, COALESCE(SUM(r.size), 0) AS bytes FROM snapshots p "
                        "JOIN snapshot_objects s ON s.snapshot_id = p.snapshot_id JOIN retired_versions r "
                        "ON r.id = s.vid WHERE p.bucket = ? GROUP BY s.snapshot_id", (bucket,))  # fmt: skip
        return {row["snapshot_id"]: (int(row["n"]), int(row["bytes"])) for row in rows}

    def delete_snapshot(self, bucket: str, snapshot_id: str, now: float, owner: str = "") -> None:
        """Unpin: versions deleted since the snapshot was taken, and named by no other snapshot, go to GC.

        ``owner``: the caller (a remote caller's key, imposed by the service); only the key that took the
        snapshot may delete it ("" for the deployment's own tools). :raises BucketNotFound, SnapshotNotFound,
        AccessDenied:
        """
        with self.tx() as db:
            row = self._snapshot_row(bucket, snapshot_id)
            if owner and row["owner"] != owner:
                raise errors.AccessDenied(f"snapshot {snapshot_id} was taken by another key: only it may delete it")
            # Two deletions in one bucket could each see the other's snapshot still naming a retired version,
            # and both keep it: touching the bucket's snapshot rows makes them conflict (PostgreSQL).
            db.execute("UPDATE snapshots SET objects = objects WHERE bucket = ?", (bucket,))
            unpinned = db.execute(
                "SELECT r.id, r.data_id FROM snapshot_objects s JOIN retired_versions r ON r.id = s.vid "
                "WHERE s.snapshot_id = ? AND NOT EXISTS (SELECT 1 FROM snapshot_objects o "
                "WHERE o.vid = s.vid AND o.snapshot_id <> s.snapshot_id)", (snapshot_id,)).fetchall()  # fmt: skip
            data_ids = [retired["data_id"] for retired in unpinned if retired["data_id"] is not None]
            self._discard_all(db, data_ids, now)
            for table, column in (("retired_versions", "id"), ("tar_members", "vid")):
                db.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(retired["id"],) for retired in unpinned])
            db.execute("DELETE FROM snapshot_objects WHERE snapshot_id = ?", (snapshot_id,))
            db.execute("DELETE FROM snapshots WHERE snapshot_id = ?", (snapshot_id,))

    def list_snapshot(self, bucket: str, snapshot_id: str, prefix: str, delimiter: str, after: str,
                      max_keys: int) -> ListPage:  # fmt: skip
        """A page of a snapshot's objects, as ``list_objects`` pages a bucket's.
        :raises BucketNotFound, SnapshotNotFound:"""
        self._snapshot_row(bucket, snapshot_id)

        def fetch(cursor: Cursor, upper: str | None, limit: int) -> list[Version]:
            op = ">=" if cursor.inclusive else ">"
            bound = " AND key < ?" if upper else ""
            rows = self._pinned(f"key {op} ?{bound} ORDER BY key LIMIT ?",
                                (snapshot_id, cursor.key, *((upper,) if upper else ()), limit))  # fmt: skip
            return [self._version(row, False) for row in rows.values()]

        rows, prefixes, truncated, _ = walk(fetch, prefix, delimiter, Cursor(after), max_keys)
        marker = (max(rows[-1].key, prefixes[-1]) if rows and prefixes else rows[-1].key if rows
                  else prefixes[-1] if prefixes else None)  # fmt: skip
        return ListPage(rows, prefixes, truncated, marker if truncated else None)

    def get_snapshot_versions(self, bucket: str, snapshot_id: str, keys: list[str]) -> list[Lookup]:
        """The pinned version of each key, with its data, in order; a key the snapshot does not hold says so
        in its own ``Lookup`` (``ObjectNotFound``). :raises BucketNotFound, SnapshotNotFound, InvalidRequest:"""
        if not (isinstance(keys, list) and len(keys) <= limits.batch_lookup_items_max
                and all(isinstance(key, str) for key in keys)):  # fmt: skip
            raise errors.InvalidRequest(f"a snapshot lookup names a list of at most {limits.batch_lookup_items_max} "
                                        "keys")  # fmt: skip
        self._snapshot_row(bucket, snapshot_id)
        versions: dict[str, Version] = {}
        distinct = sorted(set(keys))
        for first in range(0, len(distinct), IN_LIST_MAX):
            chunk = distinct[first : first + IN_LIST_MAX]
            among, args = self.engine.in_list("key", chunk)
            rows = self._pinned(among, (snapshot_id, *args))
            versions.update((version.key, version) for version in self._versions(list(rows.values()), True))
        return [Lookup(versions[key]) if key in versions else
                Lookup(error="ObjectNotFound", message=f"{bucket}/{key} is not in snapshot {snapshot_id}")
                for key in keys]  # fmt: skip

    # helpers ---------------------------------------------------------------------------------

    def _snapshot_row(self, bucket: str, snapshot_id: str) -> Row:
        """(In the open transaction, if any.)"""
        ids.snapshot_id(snapshot_id)
        row = self.one(f"SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE snapshot_id = ?", (snapshot_id,))
        if row is None or row["bucket"] != bucket:
            self.get_bucket(bucket)  # BucketNotFound first, as S3 answers
            raise errors.SnapshotNotFound(f"bucket {bucket} has no snapshot {snapshot_id}")
        return row

    def _pinned(self, where: str, args: tuple) -> dict[str, Row]:
        """The version rows a snapshot pins, by key in key order, for its ``snapshot_objects`` rows
        ``snapshot_id = ? AND <where>``: live rows in the same statement, retired ones (deleted since the
        snapshot pinned them) after.

        A row that moves meanwhile moves in one transaction, so one of the two statements finds it; a row in
        neither belonged to a snapshot deleted since, and is left out."""
        # The page is cut before the join: without statistics (a table just filled), PostgreSQL would join
        # every later row of the snapshot and sort them for each page.
        rows = self.all(f"SELECT s.key AS pinned_key, s.vid AS pinned_vid, {VERSION_COLUMNS_V} FROM (SELECT key, vid "
                        f"FROM snapshot_objects WHERE snapshot_id = ? AND {where}) s LEFT JOIN versions v "
                        "ON v.id = s.vid ORDER BY s.key", args)  # fmt: skip
        retired = [row["pinned_vid"] for row in rows if row["id"] is None]
        found: dict[int, Row] = {}
        for first in range(0, len(retired), IN_LIST_MAX):
            chunk = retired[first : first + IN_LIST_MAX]
            among, args = self.engine.in_list("id", chunk)
            found.update((row["id"], row) for row in self.all(
                f"SELECT {VERSION_COLUMNS} FROM retired_versions WHERE {among}", args))  # fmt: skip
        pinned = {row["pinned_key"]: row if row["id"] is not None else found.get(row["pinned_vid"]) for row in rows}
        return {key: row for key, row in pinned.items() if row is not None}
