"""Records the metadata service hands out and takes in: buckets, versions, uploads, and its queues' rows.

Plain dataclasses that cross every layer and the network (``apollo.proto.codec`` rebuilds
only these registered types).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apollo import errors
from apollo.proto.layout import ObjectData, SegmentLayout

NULL_VERSION = "null"


@dataclass
class Bucket:
    name: str
    created: float
    versioning: str  # "", "Enabled" or "Suspended"
    policy: str = ""  # the bucket policy's JSON document (PutBucketPolicy); "" when it has none
    owner: str = ""  # the access key that created it; "" for buckets older than owners (root's)
    tags: dict[str, str] = field(default_factory=dict)  # PutBucketTagging's


def checked_tags(tags: object, most: int) -> dict[str, str]:
    """A tag set as S3 allows it (at most ``most`` tags, keys 1-128 and values 0-256 characters, strings), for
    the metadata service to hold every writer to, the native client's too (the gateway checks first, with
    S3's error codes). :raises InvalidRequest:"""
    if not isinstance(tags, dict) or len(tags) > most or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 128 and len(v) <= 256
            for k, v in tags.items()):  # fmt: skip
        raise errors.InvalidRequest(f"a tag set is at most {most} tags, string keys of 1-128 characters and "
                                    "string values of at most 256")  # fmt: skip
    return tags


@dataclass(frozen=True)
class KeyRights:
    """What a front door needs to know of an access key: its secret (signatures), whether it is root (the
    deployment's roles and operators: every right), and the documents of its identity policies.

    A temporary key (STS AssumeRole, ``apollo.gateway.sts``) names its ``parent``, whose policies it has,
    narrowed by its ``session_policy``; it needs its session token (SHA-256 ``token_digest``) on S3 requests
    and stops working at ``expires`` (seconds since the epoch; 0 for a key that does not expire)."""

    secret: str
    is_root: bool
    policies: tuple[str, ...] = ()
    parent: str = ""
    session_policy: str = ""
    token_digest: str = ""
    expires: float = 0.0


@dataclass(frozen=True)
class ConsoleSession:
    """A web-console login as the metadata store keeps it (``apollo.console.sessions``), found by the SHA-256 of
    its token. ``secret_fingerprint`` is keyed with the token itself, so the row alone says nothing testable
    about the secret; ``expires`` is seconds since the epoch, on the metadata service's clock."""

    access_key: str
    secret_fingerprint: str
    csrf: str
    expires: float


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
    # Each part's checksum (of the upload's algorithm, as ListParts gave it) when the upload had one.
    part_checksums: list[str] = field(default_factory=list)


@dataclass
class Lookup:
    """One object of a batch lookup (``get_versions``): its version, or why there is none (the name of an
    ``apollo.errors`` class and its message), so one missing key does not fail the others."""

    version: Version | None = None
    error: str = ""
    message: str = ""
    member: list[int] | None = None  # [offset, size] of the tar member the item names, found by the reader


@dataclass
class Snapshot:
    """Which version of every object under ``prefix`` existed when it was taken (``apollo.meta.sql_snapshots``):
    ``objects`` of them, ``bytes`` in all; ``owner``: the key that took it, the only one that may delete it."""

    snapshot_id: str
    bucket: str
    prefix: str
    created: float
    owner: str
    objects: int
    bytes: int


@dataclass
class KVNamespace:
    """A bucket that is a KV namespace (``apollo.meta.sql_kv``): at most ``budget_bytes`` of values, each
    gone ``ttl_s`` after it was written (0: never), the least recently read evicted first to make room.
    ``used_bytes`` and ``entries``: what it holds now."""

    bucket: str
    budget_bytes: int
    ttl_s: float
    used_bytes: int
    entries: int


@dataclass
class TxnInfo:
    """A transaction over many objects (``apollo.meta.sql_txns``). ``state``: open, committing (its commit
    began: no more stagings), committed or aborted; ``expires``: when the service aborts it if it is not
    committed by then (its data then goes to GC); ``items``: keys staged; ``owner``: the key that began it,
    the only one that may stage into, commit or abort it."""

    txn_id: str
    bucket: str
    owner: str
    created: float
    expires: float
    state: str
    if_prefix_absent: str | None
    items: int


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


@dataclass
class Garbage:
    layout: SegmentLayout
    owner: str


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    expires: float  # database clock
    acquired: float
    now: float  # the database clock when this was read


@dataclass
class RepairItem:
    segment_id: str
    shard_index: int
    drive_id: str  # the drive the damaged shard is (or was) on
    reason: str
    attempts: int
    target: str = ""  # a destination the rebalancer planned; empty: the repair worker chooses


@dataclass
class DriveJob:
    """A resumable walk over every committed segment, queueing the shards one drive holds."""

    drive_id: str
    kind: str  # "evacuate" (the drive failed: rebuild elsewhere) or "drain" (copy off, then retire)
    cursor_pg: int
    cursor_segment: str
    queued: int
    started: float
    finished: float = 0.0  # 0 while walking; the row stays so operators can follow the repairs it queued
