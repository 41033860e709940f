"""A version as a row of the ``versions`` table, both ways: the columns read and written, and the JSON columns'
encoding (attributes, parts). Shared by every module of the store that reads or writes versions."""

from __future__ import annotations

import json
from typing import Any

import orjson

from apollo.meta.sqlbase import Row, dumps
from apollo.proto.records import ObjectAttrs

VERSION_COLUMNS = (
    "id, bucket, key, version_id, is_latest, delete_marker, size, etag, last_modified, "
    "content_type, headers, checksums, tags, parts, inline_data, data_id"
)
# Whether a version row has a tar member index: read with the row it may remove (``_remove_version``).
MEMBERS_FLAG = "EXISTS (SELECT 1 FROM tar_members t WHERE t.vid = versions.id) AS members"
VERSION_COLUMNS_V = ", ".join(f"v.{column.strip()}" for column in VERSION_COLUMNS.split(","))


# A new latest version's row (``_insert_version``; ``SharedCommitOps`` inserts many at once).
NEW_VERSION_COLUMNS = ("bucket, key, version_id, is_latest, delete_marker, size, etag, last_modified, content_type, "
                       "headers, checksums, tags, parts, inline_data, data_id, upload_id")  # fmt: skip
NEW_VERSION_SLOTS = "?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"


def new_version_values(bucket: str, key: str, version_id: str, now: float, *, size: int, etag: str,
                       attrs: ObjectAttrs, parts: list[int], part_checksums: list[str] | None, inline: bytes | None,
                       data_id: str | None, delete_marker: bool, upload_id: str) -> tuple:  # fmt: skip
    """The arguments of ``NEW_VERSION_SLOTS``."""
    return (bucket, key, version_id, int(delete_marker), size, etag, now, attrs.content_type, headers_json(attrs),
            dumps(attrs.checksums), dumps(attrs.tags), parts_json(parts, part_checksums), inline, data_id,
            upload_id)  # fmt: skip


def _json(text: str) -> Any:
    """``json.loads``, without parsing the empty collections most rows hold (a batch lookup reads
    thousands of rows: parsing was most of its time), and with orjson for the rest, at a third of the cost.
    A row written before orjson may hold what it refuses (a lone surrogate the standard library let by)."""
    if text == "{}":
        return {}
    if text == "[]":
        return []
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def attrs_from_row(row: Row) -> ObjectAttrs:
    text = row["headers"]
    headers = {} if text == _NO_HEADERS else _json(text)  # what most objects have: parsed for nothing
    return ObjectAttrs(
        content_type=row["content_type"],
        headers=headers.get("system", {}),
        user_meta=headers.get("user", {}),
        tags=_json(row["tags"]),
        checksums=_json(row["checksums"]),
    )


def parts_json(sizes: list[int], checksums: list[str] | None = None) -> str:
    """A multipart object's parts column: its part sizes, or [size, checksum] pairs when the upload had a
    checksum algorithm (older rows hold sizes only, and read as before)."""
    return dumps([[size, checksum] for size, checksum in zip(sizes, checksums, strict=True)] if checksums else sizes)


def parts_from_column(column: str) -> tuple[list[int], list[str]]:
    """A parts column's part sizes and part checksums (none for an upload without a checksum algorithm)."""
    items = _json(column)
    if not items or not isinstance(items[0], list):
        return items, []
    return [size for size, _ in items], [checksum for _, checksum in items]


def headers_json(attrs: ObjectAttrs) -> str:
    return dumps({"system": attrs.headers, "user": attrs.user_meta})


_NO_HEADERS = headers_json(ObjectAttrs())
