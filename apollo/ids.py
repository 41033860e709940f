"""Formats of the identifiers that cross between processes, checked wherever one enters.

A segment id becomes part of a file name on a storage node, a placement group a
directory, a drive id picks a drive. Every one of them can arrive from a hostile
peer (a URL path, a metadata call), so each is held to the exact form Apollo
itself generates before it touches a path or a query: ``../`` or ``%2F`` in a
segment id is not a strange name, it is an attack.

:raises BadIdentifier: (a ``ValueError``) from every check, naming what was wrong.
"""

from __future__ import annotations

import ipaddress
import re

from apollo import limits

SEGMENT_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex (MetaService.allocate_segment)
DRIVE_ID = re.compile(r"[0-9a-f]{16}")  # uuid4().hex[:16] (apollo.storage.drive.format_drive)
ETAG = re.compile(r"[0-9a-f]{32}(-[0-9]{1,5})?")  # an MD5, or a digest of parts or cells and their count
VERSION_ID = re.compile(r"null|[0-9a-f]{32}")  # NULL_VERSION, or a new version's uuid4().hex
SNAPSHOT_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex (SnapshotOps.create_snapshot)
TXN_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex (TxnOps.begin_txn)
PLACEMENT_GROUPS_MAX = 1 << 20
SHARDS_PER_SEGMENT_MAX = 32  # the widest scheme (apollo.storage.ec.Scheme)


CONSOLE_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32): a console session or CSRF token
SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # hashlib.sha256(...).hexdigest(), hmac's .hex()
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # 3 to 63 characters (fullmatch: "$" takes "abc\n")


class BadIdentifier(ValueError):
    """An identifier that is not of the form Apollo generates."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _matching(value: object, pattern: re.Pattern, what: str, expected: str) -> str:
    """``value`` when it is a string of exactly ``pattern`` (``fullmatch``: "$" would take a trailing newline).
    :raises BadIdentifier: anything else, naming ``what`` and the ``expected`` form."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadIdentifier(f"bad {what} {_shown(value)}: expected {expected}")
    return value


def segment_id(value: object) -> str:
    return _matching(value, SEGMENT_ID, "segment id", "32 lowercase hex digits")


def snapshot_id(value: object) -> str:
    return _matching(value, SNAPSHOT_ID, "snapshot id", "32 lowercase hex digits")


def txn_id(value: object) -> str:
    return _matching(value, TXN_ID, "transaction id", "32 lowercase hex digits")


def console_token(value: object) -> str:
    return _matching(value, CONSOLE_TOKEN, "console token", "43 of A-Z a-z 0-9 _ -")


def sha256_hex(value: object, what: str = "digest") -> str:
    return _matching(value, SHA256_HEX, what, "64 lowercase hex digits (SHA-256)")


def access_key(value: object) -> str:
    """Keys are named by operators (``APOLLO_ROOT_USER``) as well as made by Apollo: any printable text,
    of bounded length."""
    if not isinstance(value, str) or not 0 < len(value) <= limits.access_key_chars_max or not value.isprintable():
        raise BadIdentifier(f"bad access key {_shown(value)}: expected 1 to {limits.access_key_chars_max} printable "
                            "characters")  # fmt: skip
    return value


def drive_id(value: object) -> str:
    return _matching(value, DRIVE_ID, "drive id", "16 lowercase hex digits")


def placement_group(value: object) -> int:
    if type(value) is not int or not 0 <= value < PLACEMENT_GROUPS_MAX:
        raise BadIdentifier(f"bad placement group {_shown(value)}: expected 0..{PLACEMENT_GROUPS_MAX - 1}")
    return value


def shard_index(value: object) -> int:
    if type(value) is not int or not 0 <= value < SHARDS_PER_SEGMENT_MAX:
        raise BadIdentifier(f"bad shard index {_shown(value)}: expected 0..{SHARDS_PER_SEGMENT_MAX - 1}")
    return value


def etag(value: object) -> str:
    return _matching(value, ETAG, "ETag", "32 hex digits, optionally followed by -<count>")


def bucket_name(value: object) -> str:
    """AWS's general-purpose bucket naming rules: what the gateway takes, and what the metadata service holds a
    native client's ``create_bucket`` to (a name with ``/`` would be checked against another bucket's policy)."""
    bad = (
        not isinstance(value, str) or not BUCKET.fullmatch(value)
        or ".." in value or ".-" in value or "-." in value
        or value.startswith(("xn--", "sthree-")) or value.endswith(("-s3alias", "--ol-s3"))
        or _is_ipv4(value)
    )  # fmt: skip
    if bad:
        raise BadIdentifier(f"bad bucket name {_shown(value)}: AWS's naming rules (3-63 of a-z 0-9 . -)")
    return value


def _is_ipv4(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
        return True
    except ValueError:
        return False
