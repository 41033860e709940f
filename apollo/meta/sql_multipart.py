"""Multipart uploads: parts own their segments until completion re-parents them."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable

from apollo import errors, limits
from apollo.meta.listing import Cursor, walk
from apollo.meta.sql_objects import ObjectOps, check_conditions
from apollo.meta.sqlbase import Conn, Row, dumps
from apollo.meta.version_rows import VERSION_COLUMNS, attrs_from_row, headers_json
from apollo.proto.layout import ObjectData, SegmentLayout
from apollo.proto.records import Conditions, ListPage, ObjectAttrs, Part, Upload, Version, checked_tags


def multipart_etag(part_etags: list[str]) -> str:
    """S3's multipart ETag: MD5 of the concatenated binary part MD5s, dash, part count."""
    digest = hashlib.md5(b"".join(bytes.fromhex(etag) for etag in part_etags))
    return f"{digest.hexdigest()}-{len(part_etags)}"


class MultipartOps(ObjectOps):
    def create_upload(
        self, bucket: str, key: str, attrs: ObjectAttrs, checksum_algorithm: str, now: float, checksum_type: str = ""
    ) -> str:
        checked_tags(attrs.tags, limits.tags_per_object_max)
        # Time first: AWS lists a key's uploads in initiation order, and listings sort by upload id.
        upload_id = f"{int(now * 1_000_000):016x}" + uuid.uuid4().hex
        with self.tx() as db:
            self._bucket_row(db, bucket)
            cap = limits.open_uploads_per_bucket_max
            # The index (bucket, key, upload_id) answers this; it reads at most ``cap`` entries, and only a
            # bucket near its cap has that many.
            open_now = db.execute(
                "SELECT count(*) AS n FROM (SELECT 1 FROM uploads WHERE bucket = ? LIMIT ?) AS open_uploads",
                (bucket, cap),
            ).fetchone()["n"]
            if open_now >= cap:
                raise errors.InvalidRequest(f"This bucket has {cap} multipart uploads in progress, the most it "
                                            "may have: complete or abort some first")  # fmt: skip
            db.execute(
                "INSERT INTO uploads (upload_id, bucket, key, created, content_type, headers, tags, "
                "checksum_algorithm, checksum_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (upload_id, bucket, key, now, attrs.content_type, headers_json(attrs), dumps(attrs.tags),
                 checksum_algorithm, checksum_type),
            )  # fmt: skip
        return upload_id

    def get_upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        self.get_bucket(bucket)
        row = self.one("SELECT * FROM uploads WHERE upload_id = ? AND bucket = ? AND key = ?", (upload_id, bucket, key))
        if row is None:
            raise errors.UploadNotFound(upload_id)
        return _upload(row)

    def commit_part(
        self, upload_id: str, part_number: int, *, size: int, etag: str, checksums: dict[str, str],
        data: ObjectData, now: float, owner: str,
    ) -> None:  # fmt: skip
        """Attach an uploaded part; a re-uploaded part number replaces (and frees) the old one.

        ``owner``: who allocated the part's segments (``_store_data`` takes only its pending writes).

        :raises UploadNotFound, AccessDenied, InvalidRequest:
        """
        if not 1 <= part_number <= limits.part_number_max or data.inline:
            raise errors.InvalidRequest(f"part {part_number}: parts are numbered 1..{limits.part_number_max} "
                                        "and their data is in segments")  # fmt: skip
        with self.tx() as db:
            if db.execute("SELECT 1 FROM uploads WHERE upload_id = ?", (upload_id,)).fetchone() is None:
                raise errors.UploadNotFound(upload_id)
            old = db.execute(
                "SELECT data_id FROM parts WHERE upload_id = ? AND part_number = ?", (upload_id, part_number)
            ).fetchone()
            if old is not None:
                self._discard_data(db, old["data_id"], now)
                db.execute("DELETE FROM parts WHERE upload_id = ? AND part_number = ?", (upload_id, part_number))
            data_id = self._store_data(db, data, size, etag, owner, now) or uuid.uuid4().hex  # empty part: no segments
            db.execute(
                "INSERT INTO parts (upload_id, part_number, size, etag, last_modified, checksums, data_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (upload_id, part_number, size, etag, now, dumps(checksums), data_id),
            )

    def list_parts(self, upload_id: str, after: int, max_parts: int) -> tuple[list[Part], bool]:
        rows = self.all(
            "SELECT * FROM parts WHERE upload_id = ? AND part_number > ? ORDER BY part_number LIMIT ?",
            (upload_id, after, max_parts + 1),
        )
        return [_part(r) for r in rows[:max_parts]], len(rows) > max_parts

    def list_uploads(
        self, bucket: str, prefix: str, delimiter: str, key_marker: str, upload_marker: str, max_uploads: int
    ) -> ListPage:
        self.get_bucket(bucket)

        def fetch(cursor: Cursor, upper: str | None, limit: int) -> list[Upload]:
            if cursor.seq is not None:  # continue inside the marker key, after its upload id
                rows = self.all(
                    "SELECT * FROM uploads WHERE bucket = ? AND key = ? AND upload_id > ? ORDER BY upload_id LIMIT ?",
                    (bucket, cursor.key, upload_marker, limit),
                )
                cursor = Cursor(cursor.key)
            else:
                rows = []
            op = ">=" if cursor.inclusive else ">"
            bound = " AND key < ?" if upper else ""
            rows += self.all(
                f"SELECT * FROM uploads WHERE bucket = ? AND key {op} ?{bound} ORDER BY key, upload_id LIMIT ?",
                (bucket, cursor.key, *((upper,) if upper else ()), limit - len(rows)),
            )
            return [_upload(r) for r in rows]

        start = Cursor(key_marker, seq=0 if upload_marker else None)
        uploads, prefixes, truncated, _ = walk(  # every upload is listed: none hidden
            fetch, prefix, delimiter, start, max_uploads, cursor_after=lambda u: Cursor(u.key, seq=0)
        )
        page = ListPage(uploads, prefixes, truncated)
        if truncated:  # resume after whichever came last: an upload, or a common prefix (no upload id then)
            last = uploads[-1] if uploads and (not prefixes or uploads[-1].key > prefixes[-1]) else None
            page.next_marker = last.key if last else prefixes[-1]
            page.next_version_marker = last.upload_id if last else None
        return page

    def delete_bucket(self, name: str, now: float) -> None:
        """Delete a bucket without versions, delete markers or snapshots; its multipart uploads in progress go with it,
        as on AWS (a client that crashed mid-upload must not leave a bucket nobody can delete), and so do its
        transactions (``sql_txns``), open ones aborted.

        :raises BucketNotFound, BucketNotEmpty:
        """
        with self.tx() as db:
            self._bucket_row(db, name)
            if db.execute("SELECT 1 FROM versions WHERE bucket = ? LIMIT 1", (name,)).fetchone():
                raise errors.BucketNotEmpty(f"bucket {name} is not empty")
            if db.execute("SELECT 1 FROM snapshots WHERE bucket = ? LIMIT 1", (name,)).fetchone():
                raise errors.BucketNotEmpty(f"bucket {name} has snapshots, which hold its data: delete them first")
            for upload in db.execute("SELECT upload_id FROM uploads WHERE bucket = ?", (name,)).fetchall():
                self._drop_upload(db, upload["upload_id"], now)
            # Its transactions go too, as its uploads do: open ones aborted (staged data to GC), all forgotten.
            staged = db.execute("SELECT i.data_id FROM txns t JOIN txn_items i ON i.txn_id = t.txn_id "
                                "WHERE t.bucket = ? AND i.data_id IS NOT NULL", (name,)).fetchall()  # fmt: skip
            self._discard_all(db, [row["data_id"] for row in staged], now)
            db.execute("DELETE FROM txn_items WHERE txn_id IN (SELECT txn_id FROM txns WHERE bucket = ?)", (name,))
            db.execute("DELETE FROM txns WHERE bucket = ?", (name,))
            db.execute("DELETE FROM kv_namespaces WHERE bucket = ?", (name,))  # its entries went with its versions
            db.execute("DELETE FROM buckets WHERE name = ?", (name,))

    def abort_upload(self, bucket: str, key: str, upload_id: str, now: float) -> None:
        with self.tx() as db:
            self._upload_row(db, bucket, key, upload_id)
            self._drop_upload(db, upload_id, now)

    def expire_uploads(self, created_before: float, now: float, limit: int) -> list[Upload]:
        """Abort up to ``limit`` uploads initiated before ``created_before``, oldest first.

        One transaction per upload, re-checked inside it: an upload completed meanwhile is
        skipped, and a part whose commit comes after the abort is refused (``commit_part``
        looks for the upload under the same write lock), so its writer hands the segments to GC.
        """
        rows = self.all("SELECT upload_id FROM uploads WHERE created < ? ORDER BY created LIMIT ?",
                        (created_before, limit))  # fmt: skip
        expired = []
        for row in rows:
            with self.tx() as db:
                upload = db.execute(
                    "SELECT * FROM uploads WHERE upload_id = ? AND created < ?", (row["upload_id"], created_before)
                ).fetchone()
                if upload is not None:
                    self._drop_upload(db, upload["upload_id"], now)
                    expired.append(_upload(upload))
        return expired

    def _drop_upload(self, db: Conn, upload_id: str, now: float) -> None:
        """The parts' segments go to the GC queue, the same path as a deleted object's."""
        for part in db.execute("SELECT data_id FROM parts WHERE upload_id = ?", (upload_id,)).fetchall():
            self._discard_data(db, part["data_id"], now)
        db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
        db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    def complete_upload(
        self, bucket: str, key: str, upload_id: str, requested: list[tuple[int, str]], *,
        part_size_min: int, now: float, conditions: Conditions | None = None,
        checksum_of: Callable[[Upload, list[Part]], dict[str, str]] | None = None,
    ) -> Version:  # fmt: skip
        """Validate the part list, then publish the object in the same transaction.

        ``checksum_of(upload, chosen parts)`` gives the object's checksums from its parts'
        (the protocol layer knows how S3 combines them); it runs inside the transaction,
        so it sees exactly the parts being published.

        :raises UploadNotFound, InvalidPart, InvalidPartOrder, EntityTooSmall, PreconditionFailed:
        """
        with self.tx() as db:
            bucket_row = self._bucket_row(db, bucket)
            try:
                upload = _upload(self._upload_row(db, bucket, key, upload_id))
            except errors.UploadNotFound:
                done = db.execute(f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ? AND key = ? AND "
                                  "upload_id = ? AND upload_id <> '' AND delete_marker = 0 ORDER BY id DESC",
                                  (bucket, key, upload_id)).fetchone()  # fmt: skip
                if done is None:
                    raise
                return self._version(done, False)  # completed already: the SDK lost the first answer
            stored = {r["part_number"]: _part(r) for r in db.execute(
                "SELECT * FROM parts WHERE upload_id = ?", (upload_id,)).fetchall()}  # fmt: skip
            chosen = _validate_parts(requested, stored, part_size_min)
            latest = db.execute(
                "SELECT * FROM versions WHERE bucket = ? AND key = ? AND is_latest = 1", (bucket, key)
            ).fetchone()
            check_conditions(latest, conditions or Conditions())
            if checksum_of is not None:
                upload.attrs.checksums = checksum_of(upload, chosen)
            data_id = self._merge_parts(db, chosen)
            for number, part in stored.items():
                if number not in {p.part_number for p in chosen}:
                    self._discard_data(db, part.data_id, now)
            db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            return self._insert_version(
                db, bucket_row, key, now,
                size=sum(p.size for p in chosen), etag=multipart_etag([p.etag for p in chosen]),
                attrs=upload.attrs, parts=[p.size for p in chosen], part_checksums=_part_checksums(upload, chosen),
                inline=None, data_id=data_id, upload_id=upload_id,
            )  # fmt: skip

    def _merge_parts(self, db: Conn, parts: list[Part]) -> str:
        """Re-parent every part's segments onto one new data id, shifting offsets."""
        data_id = uuid.uuid4().hex
        seq = 0
        offset = 0
        for part in parts:
            rows = db.execute("SELECT layout FROM segments WHERE data_id = ? ORDER BY seq", (part.data_id,)).fetchall()
            for row in rows:
                layout = SegmentLayout.from_json(json.loads(row["layout"]))
                moved = {**layout.to_json(), "offset": offset + layout.offset}
                db.execute(
                    "INSERT INTO segments (data_id, seq, segment_id, offset_bytes, length, layout, pg) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (data_id, seq, layout.segment_id, moved["offset"], layout.length, dumps(moved), layout.pg),
                )
                seq += 1
            db.execute("DELETE FROM segments WHERE data_id = ?", (part.data_id,))
            offset += part.size
        return data_id

    @staticmethod
    def _upload_row(db: Conn, bucket: str, key: str, upload_id: str) -> Row:
        row = db.execute(
            "SELECT * FROM uploads WHERE upload_id = ? AND bucket = ? AND key = ?", (upload_id, bucket, key)
        ).fetchone()
        if row is None:
            raise errors.UploadNotFound(upload_id)
        return row


def _validate_parts(requested: list[tuple[int, str]], stored: dict[int, Part], size_min: int) -> list[Part]:
    if not requested:
        raise errors.InvalidRequest("You must specify at least one part")
    chosen: list[Part] = []
    previous = 0
    for number, etag in requested:
        if number <= previous:
            raise errors.InvalidPartOrder("The list of parts was not in ascending order.")
        previous = number
        part = stored.get(number)
        if part is None or etag.strip('"') != part.etag:
            raise errors.InvalidPart(f"part {number} was not uploaded or its ETag does not match")
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < size_min:
            raise errors.EntityTooSmall(f"part {part.part_number} is {part.size} bytes, below the {size_min} minimum")
    return chosen


def _part_checksums(upload: Upload, parts: list[Part]) -> list[str] | None:
    """Each part's checksum of the upload's algorithm, for GetObjectAttributes; None unless every part has one."""
    values = [part.checksums.get(upload.checksum_algorithm, "") for part in parts]
    return values if upload.checksum_algorithm and all(values) else None


def _upload(row: Row) -> Upload:
    attrs = attrs_from_row({**dict(row), "checksums": "{}"})
    return Upload(row["upload_id"], row["bucket"], row["key"], row["created"], attrs, row["checksum_algorithm"],
                  row["checksum_type"])  # fmt: skip


def _part(row: Row) -> Part:
    return Part(row["part_number"], row["size"], row["etag"], row["last_modified"], json.loads(row["checksums"]),
                row["data_id"])  # fmt: skip
