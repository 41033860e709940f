"""Records the metadata store hands out and takes in."""

from __future__ import annotations

from dataclasses import dataclass, field

from apollo.types import ObjectData

NULL_VERSION = "null"


@dataclass
class Bucket:
    name: str
    created: float
    versioning: str  # "", "Enabled" or "Suspended"


@dataclass
class ObjectAttrs:
    """What a writer declares about a new version besides its bytes."""

    content_type: str = "binary/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)  # content-encoding, cache-control, ...
    user_meta: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without the prefix
    tags: dict[str, str] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64 value


@dataclass
class Version:
    bucket: str
    key: str
    version_id: str
    is_latest: bool
    delete_marker: bool
    size: int
    etag: str
    last_modified: float
    attrs: ObjectAttrs
    parts: list[int]  # part sizes of a multipart object, [] otherwise
    data: ObjectData | None  # None for delete markers or when not loaded
    seq: int = 0


@dataclass
class Conditions:
    """Conditional-write rules checked inside the commit transaction."""

    if_none_match_star: bool = False
    if_match: str | None = None


@dataclass
class DeleteResult:
    version_id: str | None
    delete_marker: bool


@dataclass
class ListPage:
    entries: list  # Version (objects/versions) or Upload
    prefixes: list[str]
    truncated: bool
    next_marker: str | None = None
    next_version_marker: str | None = None


@dataclass
class Upload:
    upload_id: str
    bucket: str
    key: str
    created: float
    attrs: ObjectAttrs
    checksum_algorithm: str = ""
    checksum_type: str = ""  # COMPOSITE or FULL_OBJECT when an algorithm is set


@dataclass
class Part:
    part_number: int
    size: int
    etag: str
    last_modified: float
    checksums: dict[str, str]
    data_id: str = ""
