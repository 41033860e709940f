"""DDL shared by the SQL metadata backends (portable SQL: SQLite and PostgreSQL).

Versions of a key are ordered by ``id`` (monotonic); exactly one row per key
has ``is_latest = 1``. Listing walks the partial index of latest versions in
key order, so a page costs O(page + log n) whatever the bucket size.
Segments hang off a ``data_id`` so multipart completion can re-parent part
segments onto the final version without copying bytes.
"""

SCHEMA_VERSION = 1

DDL = [
    "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS access_keys (
        access_key TEXT PRIMARY KEY, secret_key TEXT NOT NULL, created REAL NOT NULL,
        is_root INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS drives (
        drive_id TEXT PRIMARY KEY, node TEXT NOT NULL, path TEXT NOT NULL, state TEXT NOT NULL,
        weight REAL NOT NULL DEFAULT 1, added REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS buckets (
        name TEXT PRIMARY KEY, created REAL NOT NULL, versioning TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS versions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        bucket TEXT NOT NULL, key TEXT NOT NULL, version_id TEXT NOT NULL,
        is_latest INTEGER NOT NULL, delete_marker INTEGER NOT NULL,
        size INTEGER NOT NULL, etag TEXT NOT NULL, last_modified REAL NOT NULL,
        content_type TEXT NOT NULL, headers TEXT NOT NULL, checksums TEXT NOT NULL,
        tags TEXT NOT NULL, parts TEXT NOT NULL, inline_data BLOB, data_id TEXT)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS versions_by_id ON versions (bucket, key, version_id)",
    "CREATE INDEX IF NOT EXISTS versions_by_age ON versions (bucket, key, id)",
    "CREATE INDEX IF NOT EXISTS versions_latest ON versions (bucket, key) WHERE is_latest = 1",
    """CREATE TABLE IF NOT EXISTS segments (
        data_id TEXT NOT NULL, seq INTEGER NOT NULL, segment_id TEXT NOT NULL,
        offset_bytes INTEGER NOT NULL, length INTEGER NOT NULL, layout TEXT NOT NULL,
        PRIMARY KEY (data_id, seq))""",
    "CREATE INDEX IF NOT EXISTS segments_by_id ON segments (segment_id)",
    """CREATE TABLE IF NOT EXISTS uploads (
        upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, created REAL NOT NULL,
        content_type TEXT NOT NULL, headers TEXT NOT NULL, tags TEXT NOT NULL,
        checksum_algorithm TEXT NOT NULL, checksum_type TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, upload_id)",
    """CREATE TABLE IF NOT EXISTS parts (
        upload_id TEXT NOT NULL, part_number INTEGER NOT NULL, size INTEGER NOT NULL,
        etag TEXT NOT NULL, last_modified REAL NOT NULL, checksums TEXT NOT NULL, data_id TEXT NOT NULL,
        PRIMARY KEY (upload_id, part_number))""",
    # Durable GC queue: segments being written (due far ahead, removed by the commit)
    # and segments of deleted or replaced data (due after a grace period).
    """CREATE TABLE IF NOT EXISTS garbage (
        segment_id TEXT PRIMARY KEY, layout TEXT NOT NULL, owner TEXT NOT NULL, due REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS garbage_by_due ON garbage (due)",
    """CREATE TABLE IF NOT EXISTS repair_queue (
        segment_id TEXT NOT NULL, shard_index INTEGER NOT NULL, drive_id TEXT NOT NULL,
        reason TEXT NOT NULL, detected REAL NOT NULL, PRIMARY KEY (segment_id, shard_index))""",
]
