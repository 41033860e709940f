"""Tar archives' member indexes (``tar_members``, written with the version by ``ObjectOps.commit_version``):
reading one member of a shard is then a range read, with no scan of the archive."""

from __future__ import annotations

from apollo import errors, ids, limits
from apollo.meta.sql_objects import ObjectOps


class TarOps(ObjectOps):
    def get_tar_members(self, bucket: str, items: list) -> list[list[int] | None]:
        """``[offset, size]`` of each ``[key, version row id (Version.seq), member name]`` item, in order; None
        for a member the archive does not have, or a row id that is not of that key (live, or retired and
        pinned by a snapshot). :raises BucketNotFound, InvalidRequest:"""
        if not isinstance(items, list) or len(items) > limits.batch_lookup_items_max or not all(
                isinstance(i, list | tuple) and len(i) == 3 and isinstance(i[0], str) and type(i[1]) is int
                and isinstance(i[2], str) for i in items):  # fmt: skip
            raise errors.InvalidRequest(f"a tar member lookup is a list of at most {limits.batch_lookup_items_max} "
                                        "[key, version row id, member name]")  # fmt: skip
        self.get_bucket(bucket)
        owned = {(key, vid): self._version_row_of(bucket, key, vid) for key, vid, _ in items}
        spans = []
        for key, vid, name in items:
            row = self.one("SELECT offset_bytes, size FROM tar_members WHERE vid = ? AND name = ?",
                           (vid, name)) if owned[(key, vid)] else None  # fmt: skip
            spans.append(None if row is None else [row["offset_bytes"], row["size"]])
        return spans

    def list_tar_members(self, bucket: str, key: str, version_id: str | None = None,
                         snapshot_id: str | None = None) -> list[tuple[str, int, int]]:  # fmt: skip
        """(name, offset, size) of every member of the latest version of ``key``, the one named, or the one a
        snapshot of the bucket pinned, by offset; ``[]`` for an object written without an index.
        :raises BucketNotFound, ObjectNotFound, BadIdentifier: (a malformed snapshot id)"""
        if snapshot_id is not None:
            row = self.one("SELECT s.vid FROM snapshot_objects s JOIN snapshots p ON p.snapshot_id = s.snapshot_id "
                           "WHERE s.snapshot_id = ? AND p.bucket = ? AND s.key = ?",
                           (ids.snapshot_id(snapshot_id), bucket, key))  # fmt: skip
            vid = None if row is None else row["vid"]
        else:
            version = self.get_version(bucket, key, version_id, with_data=False)
            vid = None if version is None or version.delete_marker else version.seq
        if vid is None:
            raise errors.ObjectNotFound(f"{bucket}/{key} does not exist" + (f" in snapshot {snapshot_id}"
                                                                           if snapshot_id else ""))  # fmt: skip
        rows = self.all("SELECT name, offset_bytes, size FROM tar_members WHERE vid = ? ORDER BY offset_bytes", (vid,))
        return [(row["name"], row["offset_bytes"], row["size"]) for row in rows]

    def _version_row_of(self, bucket: str, key: str, vid: int) -> bool:
        return any(self.one(f"SELECT 1 AS found FROM {table} WHERE id = ? AND bucket = ? AND key = ?",
                            (vid, bucket, key)) for table in ("versions", "retired_versions"))  # fmt: skip
