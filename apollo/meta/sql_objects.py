"""Buckets, versions and listings: the namespace half of the SQL store (its data: ``apollo.meta.sql_data``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from apollo import errors, limits
from apollo.meta.listing import Cursor, walk
from apollo.meta.plans import run_plan
from apollo.meta.sql_data import IN_LIST_MAX, DataOps
from apollo.meta.sqlbase import Conn, Plan, Row, Statement, dumps
from apollo.meta.version_rows import (
    MEMBERS_FLAG,
    NEW_VERSION_COLUMNS,
    NEW_VERSION_SLOTS,
    VERSION_COLUMNS,
    VERSION_COLUMNS_V,
    attrs_from_row,
    new_version_values,
    parts_from_column,
)
from apollo.proto.layout import ObjectData, SegmentLayout
from apollo.proto.policy import PolicyError, parse_policy
from apollo.proto.records import (
    NULL_VERSION,
    Bucket,
    Conditions,
    DeleteResult,
    ListPage,
    Lookup,
    ObjectAttrs,
    Version,
    checked_tags,
)

UNREAD: Any = object()  # ``_insert_version``'s ``latest`` when its caller did not read it


def _version_statement(bucket: str, key: str, version_id: str | None) -> Statement:
    """The bucket's row joined to the key's latest version, or to the one named: ``get_version``'s one statement."""
    which = "v.is_latest = 1" if version_id is None else "v.version_id = ?"
    args = (key,) if version_id is None else (key, version_id)
    return (f"SELECT b.name AS bucket_name, {VERSION_COLUMNS_V} FROM buckets b LEFT JOIN versions v "
            f"ON v.bucket = b.name AND v.key = ? AND {which} WHERE b.name = ?", (*args, bucket))  # fmt: skip


def _found(row: Row | None, bucket: str) -> Row | None:
    """The version row of ``_version_statement``'s answer, or None. :raises BucketNotFound:"""
    if row is None:
        raise errors.BucketNotFound(f"bucket {bucket} does not exist")
    return None if row["id"] is None else row


def _bucket(row: Row) -> Bucket:
    return Bucket(row["name"], row["created"], row["versioning"], row["policy"], row["owner"], json.loads(row["tags"]))


def new_version_id() -> str:
    return uuid.uuid4().hex


class ObjectOps(DataOps):
    # buckets ---------------------------------------------------------------------------------

    def create_bucket(self, name: str, now: float, bucket_owner: str = "") -> None:
        """``bucket_owner``: the access key that asked (the RPC service imposes it on a client's call)."""
        with self.tx() as db:
            if db.execute("SELECT 1 FROM buckets WHERE name = ?", (name,)).fetchone():
                raise errors.BucketExists(f"bucket {name} already exists")
            db.execute("INSERT INTO buckets (name, created, owner) VALUES (?, ?, ?)", (name, now, bucket_owner))

    def get_bucket(self, name: str) -> Bucket:
        row = self.one("SELECT name, created, versioning, policy, owner, tags FROM buckets WHERE name = ?", (name,))
        if row is None:
            raise errors.BucketNotFound(f"bucket {name} does not exist")
        return _bucket(row)

    def list_buckets(self) -> list[Bucket]:
        rows = self.all("SELECT name, created, versioning, policy, owner, tags FROM buckets ORDER BY name")
        return [_bucket(r) for r in rows]

    def set_bucket_tags(self, name: str, tags: dict[str, str]) -> None:
        """Replace the bucket's tag set; {} removes it. :raises BucketNotFound, InvalidRequest:"""
        checked_tags(tags, limits.tags_per_bucket_max)
        with self.tx() as db:
            self._bucket_row(db, name)
            db.execute("UPDATE buckets SET tags = ? WHERE name = ?", (dumps(tags), name))

    def set_bucket_policy(self, name: str, policy: str) -> None:
        """Store a bucket policy; "" removes it. The gateway checks it first with S3's error; this holds the
        native client's calls to the same grammar (a document no door can parse would fail every request on
        the bucket). :raises BucketNotFound, InvalidRequest:"""
        if policy:
            try:
                parse_policy(policy, kind="bucket", bucket=name)
            except PolicyError as exc:
                raise errors.InvalidRequest(f"MalformedPolicy: {exc}") from None
        with self.tx() as db:
            self._bucket_row(db, name)
            db.execute("UPDATE buckets SET policy = ? WHERE name = ?", (policy, name))

    def set_versioning(self, name: str, status: str) -> None:
        with self.tx() as db:
            row = self._bucket_row(db, name)
            current = row["versioning"]
            if row["kv_budget"] is not None and status != current:
                raise errors.InvalidRequest(f"bucket {name} is a KV namespace: a key holds one value, no versions")
            if status == "Suspended" and current == "":
                return  # suspending a never-versioned bucket changes nothing, as on AWS
            db.execute("UPDATE buckets SET versioning = ? WHERE name = ?", (status, name))

    @staticmethod
    def _bucket_row(db: Conn, name: str) -> Row:
        """The bucket's name, versioning, ``kv_budget`` (its KV namespace's byte budget, ``apollo.meta.sql_kv``;
        NULL for a plain bucket) and ``snapshots`` (whether any snapshot of it exists: without one, a removed
        version needs no pin lookup, ``_remove_version``), in the one statement every write already makes."""
        return run_plan(db, ObjectOps._bucket_row_plan(name))

    @staticmethod
    def _bucket_row_plan(name: str) -> Plan[Row]:
        """``_bucket_row`` as a plan (``apollo.meta.plans``). :raises BucketNotFound:"""
        rows = yield ("SELECT name, versioning, (SELECT budget_bytes FROM kv_namespaces k WHERE k.bucket = b.name) "
                      "AS kv_budget, EXISTS (SELECT 1 FROM snapshots s WHERE s.bucket = b.name) AS snapshots "
                      "FROM buckets b WHERE name = ?", (name,))  # fmt: skip
        if not rows:
            raise errors.BucketNotFound(f"bucket {name} does not exist")
        return rows[0]

    def _remove_version(self, db: Conn, row_id: int, data_id: str | None, now: float, kv: bool = False, *,
                        pinnable: bool = True, members: bool = True) -> None:  # fmt: skip
        """Delete a version row, and its data unless a snapshot pins it: then the row moves to
        ``retired_versions``, data and all, until the last snapshot naming it is deleted. ``kv``: the bucket
        is a KV namespace, whose accounting ``KVOps`` keeps (a plain bucket's removals pay no statement for it).

        The pin is looked up with an UPDATE, not a SELECT: on PostgreSQL it then conflicts with a snapshot
        deletion that commits meanwhile (one of the two reruns), so a version is never left retired with no
        snapshot naming it. A snapshot being taken meanwhile conflicts on the version row itself
        (``SnapshotOps.create_snapshot``).

        ``pinnable=False``: the bucket row read in this transaction said it has no snapshot (``_bucket_row``),
        so the lookup is skipped; a snapshot taken since then conflicts on the version row as above. That holds
        at REPEATABLE READ only: a queued transaction (READ COMMITTED) looks anyway. ``members=False``: the row
        has no tar member index (``_store_members``; read with ``MEMBERS_FLAG``). A small overwrite makes six
        statements instead of ten on PostgreSQL, each a round trip.
        """
        if (pinnable or self.queued) and self._pinned_by_snapshot(db, row_id):
            db.execute(f"INSERT INTO retired_versions ({VERSION_COLUMNS}, upload_id) "
                       f"SELECT {VERSION_COLUMNS}, upload_id FROM versions WHERE id = ?", (row_id,))  # fmt: skip
            db.execute("DELETE FROM versions WHERE id = ?", (row_id,))
        else:
            self._remove_unpinned(db, [{"id": row_id, "data_id": data_id, "members": members}], now)

    def _remove_unpinned(self, db: Conn, rows: list[Row], now: float) -> None:
        """Version rows (``id``, ``data_id``, ``members``: whether it has a tar index) that no snapshot pins,
        removed with their data (to GC) and tar indexes: a statement per table, for one row
        (``_remove_version``) or a whole batch's (``SharedCommitOps``)."""
        run_plan(db, self._remove_unpinned_plan(rows, now))

    def _remove_unpinned_plan(self, rows: list[Row], now: float) -> Plan[None]:
        """``_remove_unpinned`` as a plan (``apollo.meta.plans``)."""
        yield from self._discard_all_plan([row["data_id"] for row in rows if row["data_id"] is not None], now)
        if indexed := [row["id"] for row in rows if row["members"]]:
            among, args = self.engine.in_list("vid", indexed)
            yield f"DELETE FROM tar_members WHERE {among}", args
        if rows:
            among, args = self.engine.in_list("id", [row["id"] for row in rows])
            yield f"DELETE FROM versions WHERE {among}", args

    @staticmethod
    def _pinned_by_snapshot(db: Conn, row_id: int) -> bool:
        """Whether a snapshot names this version row; asked with an UPDATE (``_remove_version`` says why)."""
        return db.execute("UPDATE snapshot_objects SET vid = vid WHERE vid = ?", (row_id,)).rowcount > 0

    def _versions(self, rows: list[Row], with_data: bool) -> list[Version]:
        """``_version`` of each row (``_versions_plan``)."""
        return self.drive(self._versions_plan(rows, with_data))

    def _versions_plan(self, rows: list[Row], with_data: bool) -> Plan[list[Version]]:
        """``_version`` of each row, with the segments of all of them read in a statement per ``IN_LIST_MAX``,
        not one per row: a batch lookup of 16 objects on segments took 18 round trips to the database."""
        layouts = None
        if with_data:
            data_ids = [row["data_id"] for row in rows if row["data_id"] is not None and not row["delete_marker"]]
            layouts = yield from self._layouts_plan(data_ids)
        return [self._version(row, with_data, layouts) for row in rows]

    def _version(self, row: Row, with_data: bool, layouts: dict[str, list[SegmentLayout]] | None = None) -> Version:
        """``layouts``: the segments of the row's data if read already (``_versions``)."""
        parts, checksums = parts_from_column(row["parts"])
        return Version(
            bucket=row["bucket"],
            key=row["key"],
            version_id=row["version_id"],
            is_latest=bool(row["is_latest"]),
            delete_marker=bool(row["delete_marker"]),
            size=row["size"],
            etag=row["etag"],
            last_modified=row["last_modified"],
            attrs=attrs_from_row(row),
            parts=parts,
            data=self._load_data(row, layouts) if with_data and not row["delete_marker"] else None,
            seq=row["id"],
            part_checksums=checksums,
        )

    # versions --------------------------------------------------------------------------------

    def commit_version(
        self,
        bucket: str,
        key: str,
        *,
        size: int,
        etag: str,
        attrs: ObjectAttrs,
        data: ObjectData,
        now: float,
        owner: str,
        conditions: Conditions | None = None,
        members: list | None = None,
    ) -> Version:
        """Make a new version visible in one transaction, after checking write conditions.

        ``owner``: who allocated the data's segments (``_store_data`` takes only its pending writes).
        ``members``: the member index of a tar archive, ``[name, offset, size]`` each (``_store_members``).

        :raises BucketNotFound, PreconditionFailed, ObjectNotFound: (If-Match on a missing key)
        :raises AccessDenied, InvalidRequest: data the caller did not write, or that does not add up.
        """
        checked_tags(attrs.tags, limits.tags_per_object_max)
        with self.tx() as db:
            bucket_row = self._bucket_row(db, bucket)
            latest = db.execute(
                f"SELECT {VERSION_COLUMNS}, {MEMBERS_FLAG} FROM versions WHERE bucket = ? AND key = ? AND is_latest=1",
                (bucket, key),
            ).fetchone()
            check_conditions(latest, conditions or Conditions())
            data_id = self._store_data(db, data, size, etag, owner, now)
            version = self._insert_version(
                db, bucket_row, key, now,
                size=size, etag=etag, attrs=attrs, parts=[], inline=data.inline, data_id=data_id, latest=latest,
            )  # fmt: skip
            if members:
                self._store_members(db, version.seq, size, members)
            return version

    @staticmethod
    def _store_members(db: Conn, vid: int, size: int, members: list) -> None:
        """A tar index as the writer found it. Not checked against the bytes (the service never reads them):
        a wrong index only misplaces ranges inside the writer's own object, which every read is bound to.

        :raises InvalidRequest: not a list of at most ``limits.tar_members_max`` distinct names of at most
            ``limits.tar_member_name_bytes_max`` bytes, each with a range inside the object.
        """
        if not isinstance(members, list) or len(members) > limits.tar_members_max:
            raise errors.InvalidRequest(f"a tar index is a list of at most {limits.tar_members_max} members")
        names = set()
        for member in members:
            name = member[0] if isinstance(member, list | tuple) and len(member) == 3 else None
            if not (isinstance(name, str) and name.isprintable() and 0 < len(name.encode("utf-8", "replace"))
                    <= limits.tar_member_name_bytes_max and all(type(n) is int and n >= 0 for n in member[1:])
                    and member[1] + member[2] <= size):  # fmt: skip
                raise errors.InvalidRequest(f"a tar member is [name, offset, size] inside the object: {member!r:.80}")
            names.add(member[0])
        if len(names) != len(members):
            raise errors.InvalidRequest("a tar index names a member twice")
        db.executemany("INSERT INTO tar_members (vid, name, offset_bytes, size) VALUES (?, ?, ?, ?)",
                       [(vid, name, offset, length) for name, offset, length in members])  # fmt: skip

    def _insert_version(
        self,
        db: Conn,
        bucket_row: Row,
        key: str,
        now: float,
        *,
        size: int,
        etag: str,
        attrs: ObjectAttrs,
        parts: list[int],
        part_checksums: list[str] | None = None,
        inline: bytes | None,
        data_id: str | None,
        delete_marker: bool = False,
        upload_id: str = "",
        latest: Row | None = UNREAD,
    ) -> Version:
        """The new latest version of ``key`` in the bucket of ``bucket_row`` (``_bucket_row``); on an unversioned
        bucket the ``null`` version it replaces goes. ``latest``: the key's latest version as this transaction
        read it (with ``MEMBERS_FLAG``), or None if it has none; then the statements it answers are not made
        again."""
        bucket, versioning = bucket_row["name"], bucket_row["versioning"]
        known = latest is not UNREAD
        demote = not known or latest is not None  # a latest version to make not the latest
        if versioning == "Enabled":
            version_id = new_version_id()
        else:
            version_id = NULL_VERSION
            if known and latest is not None and latest["version_id"] == NULL_VERSION:
                old = latest
            else:
                old = db.execute(
                    f"SELECT id, data_id, {MEMBERS_FLAG} FROM versions WHERE bucket = ? AND key = ? AND version_id = ?",
                    (bucket, key, NULL_VERSION),
                ).fetchone()
            if old is not None:
                self._remove_version(db, old["id"], old["data_id"], now, kv=bucket_row["kv_budget"] is not None,
                                     pinnable=bool(bucket_row["snapshots"]), members=bool(old["members"]))  # fmt: skip
                demote = demote and old is not latest  # the latest was the null version: it is gone
        if demote:
            db.execute("UPDATE versions SET is_latest = 0 WHERE bucket = ? AND key = ? AND is_latest = 1",
                       (bucket, key))  # fmt: skip
        row = db.execute(
            f"INSERT INTO versions ({NEW_VERSION_COLUMNS}) VALUES ({NEW_VERSION_SLOTS}) RETURNING id",
            new_version_values(bucket, key, version_id, now, size=size, etag=etag, attrs=attrs, parts=parts,
                               part_checksums=part_checksums, inline=inline, data_id=data_id,
                               delete_marker=delete_marker, upload_id=upload_id),
        ).fetchall()[0]  # fmt: skip (all rows: a RETURNING statement must finish before COMMIT)
        return Version(bucket, key, version_id, True, delete_marker, size, etag, now, attrs, parts, None, row["id"],
                       list(part_checksums or []))  # fmt: skip

    def get_version(
        self, bucket: str, key: str, version_id: str | None = None, with_data: bool = True
    ) -> Version | None:
        """The latest version (which may be a delete marker) or a given one; None when absent.

        One statement checks the bucket and finds the version: this is the lookup of every GET. Its plan
        (``get_version_plan``) is not driven here: on SQLite's event loop the generator would cost 5% of it.
        """
        row = _found(self.one(*_version_statement(bucket, key, version_id)), bucket)
        return None if row is None else self._version(row, with_data)

    def get_version_plan(self, bucket: str, key: str, version_id: str | None = None,
                         with_data: bool = True) -> Plan[Version | None]:  # fmt: skip
        """``get_version`` as a plan (``SqlBase.drive``; the service runs it on its event loop on PostgreSQL)."""
        rows = yield _version_statement(bucket, key, version_id)
        row = _found(rows[0] if rows else None, bucket)
        if row is None:
            return None
        return (yield from self._versions_plan([row], with_data))[0]

    def get_versions(self, items: list[tuple[str, str, str | None]], with_data: bool = True) -> list[Lookup]:
        """``get_version`` of each (bucket, key, version id or None), in order; an item with no object (or
        whose latest version is a delete marker), or no bucket, says so in its own ``Lookup``.

        :raises InvalidRequest: more than ``limits.batch_lookup_items_max`` items, or one not of that form.
        """
        return self.drive(self.get_versions_plan(items, with_data))

    def get_versions_plan(self, items: list[tuple[str, str, str | None]],
                          with_data: bool = True) -> Plan[list[Lookup]]:  # fmt: skip
        """``get_versions`` as a plan (``get_version_plan``)."""
        if not isinstance(items, list) or len(items) > limits.batch_lookup_items_max:
            raise errors.InvalidRequest(f"a batch lookup names a list of at most {limits.batch_lookup_items_max} "
                                        "objects")  # fmt: skip
        for item in items:
            if not (isinstance(item, list | tuple) and len(item) == 3 and isinstance(item[0], str)
                    and isinstance(item[1], str) and (item[2] is None or isinstance(item[2], str))):  # fmt: skip
                raise errors.InvalidRequest("a batch lookup item is [bucket, key, version id or null]")
        latest_of = {(bucket, key) for bucket, key, version_id in items if version_id is None}
        latest = yield from self._latest_plan(latest_of, with_data)
        lookups = []
        for bucket, key, version_id in items:
            try:
                if version_id is None:
                    version = latest[(bucket, key)]
                else:
                    version = yield from self.get_version_plan(bucket, key, version_id, with_data)
                if isinstance(version, errors.BucketNotFound):
                    raise version
            except errors.BucketNotFound as exc:
                lookups.append(Lookup(error="BucketNotFound", message=str(exc)))
                continue
            if version is None:
                missing = "VersionNotFound" if version_id is not None else "ObjectNotFound"
                lookups.append(Lookup(error=missing, message=f"{bucket}/{key} does not exist"))
            elif version.delete_marker:  # nothing to read, named by its id or not
                lookups.append(Lookup(error="ObjectNotFound", message=f"{bucket}/{key} is deleted"))
            else:
                lookups.append(Lookup(version))
        return lookups

    def _latest_plan(self, names: set[tuple[str, str]], with_data: bool
                     ) -> Plan[dict[tuple[str, str], Version | None | errors.BucketNotFound]]:  # fmt: skip
        """The latest version (or None, or BucketNotFound) of each (bucket, key): a statement per bucket and
        ``IN_LIST_MAX`` keys, not one per key (a batch lookup of 1,000 small objects took twice as long), which
        checks the bucket too (``Engine.latest_rows``)."""
        found: dict[tuple[str, str], Version | None | errors.BucketNotFound] = dict.fromkeys(names)
        by_bucket: dict[str, list[str]] = {}
        for bucket, key in names:
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            for first in range(0, len(keys), IN_LIST_MAX):
                rows = yield self.engine.latest_rows(VERSION_COLUMNS_V, bucket, keys[first : first + IN_LIST_MAX])
                if not rows:  # the statement checks the bucket too
                    missing = errors.BucketNotFound(f"bucket {bucket} does not exist")
                    found.update({(bucket, key): missing for key in keys})
                    break
                versions = yield from self._versions_plan([row for row in rows if row["id"] is not None], with_data)
                found.update({(bucket, version.key): version for version in versions})
        return found

    def rename_object(self, bucket: str, key: str, dest_key: str, now: float,
                      conditions: Conditions | None = None) -> Version:  # fmt: skip
        """Move the latest version of ``key`` to ``dest_key`` in one transaction: no byte moves, no reader sees
        both keys or neither, and a crash leaves the one or the other. ``conditions`` hold for ``dest_key``
        (If-None-Match: * renames only onto a free key); what was at ``dest_key`` goes as an overwrite does.

        Only a version that is the whole story of its key can move: on an unversioned bucket, and pinned by
        no snapshot (a versioned bucket keeps the source as a noncurrent version, which would then share its
        data with the destination). Shard headers keep the key the data was written under.

        :raises BucketNotFound, ObjectNotFound, PreconditionFailed, RenameRefused, InvalidRequest:
        """
        if not isinstance(dest_key, str) or not dest_key or len(dest_key.encode()) > limits.key_length_bytes_max:
            raise errors.InvalidRequest(f"a key is 1 to {limits.key_length_bytes_max} bytes")
        if dest_key == key:
            raise errors.InvalidRequest(f"{bucket}/{key} is already there")
        with self.tx() as db:
            bucket_row = self._bucket_row(db, bucket)
            versioning = bucket_row["versioning"]
            source = db.execute("SELECT id, delete_marker FROM versions WHERE bucket = ? AND key = ? AND "
                                "is_latest = 1", (bucket, key)).fetchone()  # fmt: skip
            if source is None or source["delete_marker"]:
                raise errors.ObjectNotFound(f"{bucket}/{key} does not exist")
            if versioning != "":
                raise errors.RenameRefused(f"bucket {bucket} keeps versions: a rename would leave {key}'s; copy "
                                           "and delete instead")  # fmt: skip
            if self._pinned_by_snapshot(db, source["id"]):
                raise errors.RenameRefused(f"a snapshot pins {bucket}/{key}: copy and delete instead")
            latest = db.execute(f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ? AND key = ? AND "
                                "is_latest = 1", (bucket, dest_key)).fetchone()  # fmt: skip
            check_conditions(latest, conditions or Conditions())
            if latest is not None:
                self._remove_version(db, latest["id"], latest["data_id"], now, kv=bucket_row["kv_budget"] is not None)
            db.execute("UPDATE versions SET key = ?, last_modified = ? WHERE id = ?", (dest_key, now, source["id"]))
            moved = db.execute(f"SELECT {VERSION_COLUMNS} FROM versions WHERE id = ?", (source["id"],)).fetchone()
            return self._version(moved, False)

    def delete_object(self, bucket: str, key: str, version_id: str | None, now: float) -> DeleteResult:
        """DELETE as S3 defines it: a delete marker on versioned buckets, removal otherwise."""
        with self.tx() as db:
            bucket_row = self._bucket_row(db, bucket)
            if version_id is not None:
                return self._delete_exact(db, bucket_row, key, version_id, now)
            if bucket_row["versioning"] == "":
                self._delete_exact(db, bucket_row, key, NULL_VERSION, now)
                return DeleteResult(None, False)
            marker = self._insert_version(
                db, bucket_row, key, now,
                size=0, etag="", attrs=ObjectAttrs(content_type=""), parts=[], inline=None, data_id=None,
                delete_marker=True,
            )  # fmt: skip
            return DeleteResult(marker.version_id, True)

    def _delete_exact(self, db: Conn, bucket_row: Row, key: str, version_id: str, now: float) -> DeleteResult:
        bucket = bucket_row["name"]
        row = db.execute(
            f"SELECT id, is_latest, delete_marker, data_id, {MEMBERS_FLAG} FROM versions "
            "WHERE bucket = ? AND key = ? AND version_id = ?",
            (bucket, key, version_id),
        ).fetchone()
        if row is None:
            return DeleteResult(version_id, False)
        self._remove_version(db, row["id"], row["data_id"], now, kv=bucket_row["kv_budget"] is not None,
                             pinnable=bool(bucket_row["snapshots"]), members=bool(row["members"]))  # fmt: skip
        if row["is_latest"]:
            db.execute(
                "UPDATE versions SET is_latest = 1 WHERE id = "
                "(SELECT MAX(id) FROM versions WHERE bucket = ? AND key = ?)",
                (bucket, key),
            )
        return DeleteResult(version_id, bool(row["delete_marker"]))

    def set_tags(self, bucket: str, key: str, version_id: str | None, tags: dict[str, str]) -> str:
        """Replace a version's tag set; returns the version id it applied to.

        :raises ObjectNotFound, VersionNotFound, InvalidRequest:
        """
        checked_tags(tags, limits.tags_per_object_max)
        with self.tx() as db:
            self._bucket_row(db, bucket)
            where, args = ("version_id = ?", (version_id,)) if version_id else ("is_latest = 1", ())
            row = db.execute(
                f"SELECT id, version_id, delete_marker FROM versions WHERE bucket = ? AND key = ? AND {where}",
                (bucket, key, *args),
            ).fetchone()
            if row is None or row["delete_marker"]:
                raise (errors.VersionNotFound if version_id else errors.ObjectNotFound)(key)
            db.execute("UPDATE versions SET tags = ? WHERE id = ?", (dumps(tags), row["id"]))
            return row["version_id"]

    # listings --------------------------------------------------------------------------------

    def list_objects(self, bucket: str, prefix: str, delimiter: str, after: str, max_keys: int) -> ListPage:
        self.get_bucket(bucket)

        def fetch(cursor: Cursor, upper: str | None, limit: int) -> list[Version]:
            op = ">=" if cursor.inclusive else ">"
            bound = " AND key < ?" if upper else ""
            args = (bucket, cursor.key, *((upper,) if upper else ()), limit)
            sql = (
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ? AND is_latest = 1 "
                f"AND key {op} ?{bound} ORDER BY key LIMIT ?"
            )
            return [self._version(r, False) for r in self.all(sql, args)]

        rows, prefixes, truncated, stopped_at = walk(
            fetch, prefix, delimiter, Cursor(after), max_keys, visible=lambda v: not v.delete_marker
        )
        return ListPage(rows, prefixes, truncated, stopped_at or _last_marker(rows, prefixes))

    def list_versions(
        self, bucket: str, prefix: str, delimiter: str, key_marker: str, version_marker: str, max_keys: int
    ) -> ListPage:
        self.get_bucket(bucket)
        start = Cursor(key_marker)
        if key_marker and version_marker:
            row = self.one(
                "SELECT id FROM versions WHERE bucket = ? AND key = ? AND version_id = ?",
                (bucket, key_marker, version_marker),
            )
            # Markers are positions, not versions that must exist: a cleanup tool deletes a page, then asks
            # for the next one after the version it deleted last. That version's place is gone with it, so
            # the listing resumes at the key's newest remaining version: none skipped (at worst a version
            # listed before and kept comes again).
            start = Cursor(key_marker, seq=row["id"]) if row is not None else Cursor(key_marker, inclusive=True)

        def fetch(cursor: Cursor, upper: str | None, limit: int) -> list[Version]:
            rows: list[Row] = []
            if cursor.seq is not None:
                rows = self.all(
                    f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ? AND key = ? AND id < ? "
                    "ORDER BY id DESC LIMIT ?",
                    (bucket, cursor.key, cursor.seq, limit),
                )
            if len(rows) < limit:
                op = ">=" if cursor.inclusive else ">"
                bound = " AND key < ?" if upper else ""
                args = (bucket, cursor.key, *((upper,) if upper else ()), limit - len(rows))
                rows += self.all(
                    f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ? AND key {op} ?{bound} "
                    "ORDER BY key, id DESC LIMIT ?",
                    args,
                )
            return [self._version(r, False) for r in rows]

        rows, prefixes, truncated, _ = walk(  # every version and marker is listed: none hidden
            fetch, prefix, delimiter, start, max_keys, cursor_after=lambda v: Cursor(v.key, seq=v.seq)
        )
        page = ListPage(rows, prefixes, truncated)
        if truncated:
            last = rows[-1] if rows and (not prefixes or rows[-1].key > prefixes[-1]) else None
            page.next_marker = last.key if last else prefixes[-1]
            page.next_version_marker = last.version_id if last else None
        return page


def _last_marker(rows: list, prefixes: list[str]) -> str | None:
    candidates = ([rows[-1].key] if rows else []) + ([prefixes[-1]] if prefixes else [])
    return max(candidates) if candidates else None


def check_conditions(latest: Row | None, conditions: Conditions) -> None:
    exists = latest is not None and not latest["delete_marker"]
    if conditions.if_none_match_star and exists:
        raise errors.PreconditionFailed("If-None-Match: * and the key exists")
    if conditions.if_match is not None:
        if not exists:
            raise errors.ObjectNotFound("If-Match on a key that does not exist")
        if conditions.if_match.strip('"') not in (latest["etag"], "*"):
            raise errors.PreconditionFailed("If-Match does not match the current ETag")
