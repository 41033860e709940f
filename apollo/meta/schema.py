"""DDL shared by the SQL metadata backends (portable SQL: SQLite and PostgreSQL).

Versions of a key are ordered by ``id`` (monotonic); exactly one row per key
has ``is_latest = 1``. Listing walks the partial index of latest versions in
key order, so a page costs O(page + log n) whatever the bucket size.
A unique index allows one latest row per key: on PostgreSQL, where several metadata
processes commit at once, it is what makes one of two racing commits to a key fail
and rerun (``apollo.meta.engine``). The foreign keys do the same for a commit racing
the deletion of its bucket or upload; SQLite, with one writer, leaves them unchecked.
Segments hang off a ``data_id`` so multipart completion can re-parent part
segments onto the final version without copying bytes.
"""

SCHEMA_VERSION = 13

POLICIES_DDL = ("CREATE TABLE IF NOT EXISTS policies (name TEXT PRIMARY KEY, document TEXT NOT NULL, "
                "created REAL NOT NULL)")  # fmt: skip
SESSION_KEYS_DDL = ("CREATE TABLE IF NOT EXISTS session_keys (access_key TEXT PRIMARY KEY, secret_key TEXT NOT NULL, "
                    "token_digest TEXT NOT NULL, parent TEXT NOT NULL, policy TEXT NOT NULL, expires REAL NOT NULL, "
                    "created REAL NOT NULL)")  # fmt: skip
KEY_POLICIES_DDL = ("CREATE TABLE IF NOT EXISTS key_policies (access_key TEXT NOT NULL, policy TEXT NOT NULL, "
                    "PRIMARY KEY (access_key, policy))")  # fmt: skip

# Web-console logins (``apollo.meta.sql_console``): found by the SHA-256 of the cookie's token, never the token.
# Not journaled: a metadata recovery logs everyone out, which costs a login.
CONSOLE_SESSIONS_DDL = [
    """CREATE TABLE IF NOT EXISTS console_sessions (
        token_digest TEXT PRIMARY KEY, access_key TEXT NOT NULL, secret_fingerprint TEXT NOT NULL,
        csrf TEXT NOT NULL, expires REAL NOT NULL, created REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS console_sessions_by_key ON console_sessions (access_key, created)",
    "CREATE INDEX IF NOT EXISTS console_sessions_by_expiry ON console_sessions (expires)",
]

# A version's columns after its row id and bucket: ``versions`` and ``retired_versions`` hold the same rows.
VERSION_FIELDS_DDL = """key TEXT NOT NULL, version_id TEXT NOT NULL,
        is_latest INTEGER NOT NULL, delete_marker INTEGER NOT NULL,
        size INTEGER NOT NULL, etag TEXT NOT NULL, last_modified REAL NOT NULL,
        content_type TEXT NOT NULL, headers TEXT NOT NULL, checksums TEXT NOT NULL,
        tags TEXT NOT NULL, parts TEXT NOT NULL, inline_data BLOB, data_id TEXT,
        upload_id TEXT NOT NULL DEFAULT ''"""
# Snapshots (``apollo.meta.sql_snapshots``): which version of each key under a prefix existed when one was
# taken, by the row id of that version. A pinned version that is deleted moves, whole and with its data, to
# ``retired_versions`` until no snapshot names it.
SNAPSHOT_DDL = [
    """CREATE TABLE IF NOT EXISTS snapshots (
        snapshot_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, prefix TEXT NOT NULL, created REAL NOT NULL,
        owner TEXT NOT NULL, objects INTEGER NOT NULL, bytes INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS snapshots_by_bucket ON snapshots (bucket, created)",
    """CREATE TABLE IF NOT EXISTS snapshot_objects (
        snapshot_id TEXT NOT NULL, key TEXT NOT NULL, vid INTEGER NOT NULL, PRIMARY KEY (snapshot_id, key))""",
    "CREATE INDEX IF NOT EXISTS snapshot_objects_by_vid ON snapshot_objects (vid)",
    f"CREATE TABLE IF NOT EXISTS retired_versions (id INTEGER PRIMARY KEY, bucket TEXT NOT NULL, {VERSION_FIELDS_DDL})",
    # The member index of a tar archive (``apollo.proto.tar_index``), by the row id of its version (live or
    # retired): a member is a range read. Written with the version, dropped with its data.
    """CREATE TABLE IF NOT EXISTS tar_members (
        vid INTEGER NOT NULL, name TEXT NOT NULL, offset_bytes INTEGER NOT NULL, size INTEGER NOT NULL,
        PRIMARY KEY (vid, name))""",
]

# Transactions over many objects (``apollo.meta.sql_txns``): a put staged into one has its data stored
# (``segments``, by ``data_id``) but no version row: no reader sees it until the commit turns every staged
# item into a version in one SQL transaction. Journaled, as uploads and parts are: a recovered database
# still has its open transactions, which commit or expire as before. ``txn_prefixes``: one row per
# (bucket, prefix) a commit conditioned on, written by that commit so that two commits on one prefix
# conflict on PostgreSQL (one reruns and finds the other's objects); not journaled, it holds no data.
TXN_DDL = [
    """CREATE TABLE IF NOT EXISTS txns (
        txn_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, owner TEXT NOT NULL, created REAL NOT NULL,
        expires REAL NOT NULL, state TEXT NOT NULL, if_prefix_absent TEXT, items INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS txns_by_owner ON txns (owner, state)",
    "CREATE INDEX IF NOT EXISTS txns_by_expiry ON txns (expires)",
    """CREATE TABLE IF NOT EXISTS txn_items (
        txn_id TEXT NOT NULL, key TEXT NOT NULL, delete_marker INTEGER NOT NULL, size INTEGER NOT NULL,
        etag TEXT NOT NULL, content_type TEXT NOT NULL, headers TEXT NOT NULL, checksums TEXT NOT NULL,
        tags TEXT NOT NULL, inline_data BLOB, data_id TEXT, if_none_match INTEGER NOT NULL,
        staged REAL NOT NULL, PRIMARY KEY (txn_id, key))""",
    """CREATE TABLE IF NOT EXISTS txn_prefixes (
        bucket TEXT NOT NULL, prefix TEXT NOT NULL, txn_id TEXT NOT NULL, PRIMARY KEY (bucket, prefix))""",
]

# KV namespaces (``apollo.meta.sql_kv``): a bucket with a byte budget and a TTL, whose values are evicted
# least recently used first. ``kv_entries``: one row per live value, by the row id of its version, with
# its size, when it was last read and when it expires. Both journaled: they are part of the namespace.
KV_DDL = [
    """CREATE TABLE IF NOT EXISTS kv_namespaces (
        bucket TEXT PRIMARY KEY REFERENCES buckets (name), budget_bytes INTEGER NOT NULL, ttl_s REAL NOT NULL,
        used_bytes INTEGER NOT NULL DEFAULT 0, entries INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS kv_entries (
        vid INTEGER PRIMARY KEY, bucket TEXT NOT NULL, size INTEGER NOT NULL, atime REAL NOT NULL,
        expires REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS kv_entries_by_atime ON kv_entries (bucket, atime)",
    "CREATE INDEX IF NOT EXISTS kv_entries_by_expiry ON kv_entries (expires)",
]

# The per-drive shard index (``apollo.meta.shard_index``): one row per shard of a committed segment, by
# drive, in the (placement group, segment) order drive jobs walk. Derived from the layouts; not journaled.
# Its key is its only index, and on SQLite the table itself (WITHOUT ROWID): a commit writes one B-tree more,
# not three (rows are removed by their whole key, read from the layouts they go with).
SHARD_INDEX_DDL = [
    """CREATE TABLE IF NOT EXISTS drive_shards (
        drive_id TEXT NOT NULL, pg INTEGER NOT NULL, segment_id TEXT NOT NULL, shard_index INTEGER NOT NULL,
        PRIMARY KEY (drive_id, pg, segment_id, shard_index)) WITHOUT ROWID""",
]

DDL = [
    "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS access_keys (
        access_key TEXT PRIMARY KEY, secret_key TEXT NOT NULL, created REAL NOT NULL,
        is_root INTEGER NOT NULL DEFAULT 0)""",
    # Identity policies (``apollo admin policy``): named documents, attached to access keys by name. The
    # built-in ones (``apollo.proto.identity.BUILTIN_POLICIES``) are not stored, only attached.
    POLICIES_DDL,
    KEY_POLICIES_DDL,
    # Temporary keys (STS AssumeRole): not journaled, they outlive no metadata loss (jobs assume again).
    SESSION_KEYS_DDL,
    "CREATE INDEX IF NOT EXISTS session_keys_by_expiry ON session_keys (expires)",
    # state: online | offline | failed | draining | retired (apollo.cluster.drives explains each).
    """CREATE TABLE IF NOT EXISTS drives (
        drive_id TEXT PRIMARY KEY, node TEXT NOT NULL, path TEXT NOT NULL, state TEXT NOT NULL,
        weight REAL NOT NULL DEFAULT 1, added REAL NOT NULL, replaced_by TEXT NOT NULL DEFAULT '',
        state_since REAL NOT NULL DEFAULT 0, free_bytes INTEGER NOT NULL DEFAULT 0,
        total_bytes INTEGER NOT NULL DEFAULT 0, health TEXT NOT NULL DEFAULT 'ok',
        filesystem TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS buckets (
        name TEXT PRIMARY KEY, created REAL NOT NULL, versioning TEXT NOT NULL DEFAULT '',
        policy TEXT NOT NULL DEFAULT '', owner TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '{}')""",
    f"""CREATE TABLE IF NOT EXISTS versions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        bucket TEXT NOT NULL REFERENCES buckets (name), {VERSION_FIELDS_DDL})""",
    "CREATE UNIQUE INDEX IF NOT EXISTS versions_by_id ON versions (bucket, key, version_id)",
    "CREATE INDEX IF NOT EXISTS versions_by_age ON versions (bucket, key, id)",
    "CREATE UNIQUE INDEX IF NOT EXISTS versions_latest ON versions (bucket, key) WHERE is_latest = 1",
    """CREATE TABLE IF NOT EXISTS segments (
        data_id TEXT NOT NULL, seq INTEGER NOT NULL, segment_id TEXT NOT NULL,
        offset_bytes INTEGER NOT NULL, length INTEGER NOT NULL, layout TEXT NOT NULL, pg INTEGER NOT NULL,
        PRIMARY KEY (data_id, seq))""",
    "CREATE INDEX IF NOT EXISTS segments_by_id ON segments (segment_id)",
    # Scrub and drive evacuation walk committed segments placement group by placement group.
    "CREATE INDEX IF NOT EXISTS segments_by_pg ON segments (pg, segment_id)",
    """CREATE TABLE IF NOT EXISTS uploads (
        upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL REFERENCES buckets (name), key TEXT NOT NULL,
        created REAL NOT NULL,
        content_type TEXT NOT NULL, headers TEXT NOT NULL, tags TEXT NOT NULL,
        checksum_algorithm TEXT NOT NULL, checksum_type TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, upload_id)",
    # The garbage collector aborts abandoned uploads oldest first (``--upload-expiry``).
    "CREATE INDEX IF NOT EXISTS uploads_by_age ON uploads (created)",
    """CREATE TABLE IF NOT EXISTS parts (
        upload_id TEXT NOT NULL REFERENCES uploads (upload_id), part_number INTEGER NOT NULL, size INTEGER NOT NULL,
        etag TEXT NOT NULL, last_modified REAL NOT NULL, checksums TEXT NOT NULL, data_id TEXT NOT NULL,
        PRIMARY KEY (upload_id, part_number))""",
    # Durable GC queue: segments being written (due far ahead, removed by the commit)
    # and segments of deleted or replaced data (due after a grace period).
    """CREATE TABLE IF NOT EXISTS garbage (
        segment_id TEXT PRIMARY KEY, layout TEXT NOT NULL, owner TEXT NOT NULL, due REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS garbage_by_due ON garbage (due)",
    # Durable repair queue: one row per shard to rebuild (or move: drain, rebalance), deduplicated by
    # (segment, shard); a failed attempt is retried after ``next_try``; ``target``: a planned destination.
    """CREATE TABLE IF NOT EXISTS repair_queue (
        segment_id TEXT NOT NULL, shard_index INTEGER NOT NULL, drive_id TEXT NOT NULL,
        reason TEXT NOT NULL, detected REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_try REAL NOT NULL DEFAULT 0, target TEXT NOT NULL DEFAULT '', PRIMARY KEY (segment_id, shard_index))""",
    "CREATE INDEX IF NOT EXISTS repair_queue_by_time ON repair_queue (next_try, detected)",
    # Background walks over every segment of a drive (evacuate a failed drive, drain one), resumable.
    """CREATE TABLE IF NOT EXISTS drive_jobs (
        drive_id TEXT PRIMARY KEY, kind TEXT NOT NULL, cursor_pg INTEGER NOT NULL,
        cursor_segment TEXT NOT NULL, queued INTEGER NOT NULL DEFAULT 0, started REAL NOT NULL,
        finished REAL NOT NULL DEFAULT 0)""",
    # Leases of background managers (repair, GC, rebalance...): one holder at a time, expiring on the
    # database's clock so that a dead holder's lease passes to another process (apollo.meta.sql_leases).
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL, acquired REAL NOT NULL)""",
    # Cluster mode: storage nodes (drives.node names one) and the keys capability tokens are signed with.
    """CREATE TABLE IF NOT EXISTS nodes (
        name TEXT PRIMARY KEY, endpoint TEXT NOT NULL, rack TEXT NOT NULL, heartbeat REAL NOT NULL,
        registered REAL NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS token_keys (key_id TEXT PRIMARY KEY, secret BLOB NOT NULL, created REAL NOT NULL)",
    # Drives `apollo admin drive remove` (or `node remove`) took out: their format file still names the
    # deployment, and a start that finds one on its command line must not take it back.
    """CREATE TABLE IF NOT EXISTS removed_drives (
        drive_id TEXT PRIMARY KEY, node TEXT NOT NULL, path TEXT NOT NULL, removed REAL NOT NULL)""",
    *SNAPSHOT_DDL,
    *CONSOLE_SESSIONS_DDL,
    *TXN_DDL,
    *KV_DDL,
    *SHARD_INDEX_DDL,
]

SHARD_INDEX_SINCE = 13  # an upgrade from before fills drive_shards from the layouts

# Upgrades of databases written by older versions: (new version, statements), applied in order
# before the DDL above. Each step is one transaction with the schema_version update.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (2, [
        "ALTER TABLE segments ADD COLUMN pg INTEGER NOT NULL DEFAULT 0",
        "UPDATE segments SET pg = CAST(json_extract(layout, '$.pg') AS INTEGER)",
        "ALTER TABLE drives ADD COLUMN replaced_by TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE drives ADD COLUMN state_since REAL NOT NULL DEFAULT 0",
        "ALTER TABLE drives ADD COLUMN free_bytes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE drives ADD COLUMN total_bytes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE repair_queue ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE repair_queue ADD COLUMN next_try REAL NOT NULL DEFAULT 0",
        "ALTER TABLE repair_queue ADD COLUMN target TEXT NOT NULL DEFAULT ''",
    ]),
    (3, [
        "DROP INDEX IF EXISTS versions_latest",  # recreated UNIQUE by the DDL
    ]),
    (4, [
        # What a storage node last reported of the drive (cluster mode): ok, gone or unreachable.
        "ALTER TABLE drives ADD COLUMN health TEXT NOT NULL DEFAULT 'ok'",
    ]),
    (5, [
        # The bucket policy document (PutBucketPolicy), as the owner sent it; '' when none.
        "ALTER TABLE buckets ADD COLUMN policy TEXT NOT NULL DEFAULT ''",
    ]),
    (6, [
        # The access key that created the bucket ('' for buckets made before owners were kept: root's).
        "ALTER TABLE buckets ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
        POLICIES_DDL,
        KEY_POLICIES_DDL,
        # Until identity policies existed, every key could do what bucket policies did not deny: keys
        # made before keep exactly that, through the built-in policy that says it.
        "INSERT INTO key_policies (access_key, policy) SELECT access_key, 'readwrite' FROM access_keys "
        "WHERE is_root = 0",
    ]),
    (7, [
        # The multipart upload a version was completed from: a repeated CompleteMultipartUpload (its SDK
        # lost the first answer) answers with that version instead of NoSuchUpload.
        "ALTER TABLE versions ADD COLUMN upload_id TEXT NOT NULL DEFAULT ''",
        # PutBucketTagging's tag set, JSON.
        "ALTER TABLE buckets ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'",
    ]),
    (9, [
        # The filesystem holding the drive, as its node reports it (a device number on that host): capacity
        # counts the space of directory drives that share one once.
        "ALTER TABLE drives ADD COLUMN filesystem TEXT NOT NULL DEFAULT ''",
    ]),
    # 10: console_sessions, a new table only (CONSOLE_SESSIONS_DDL), which the DDL creates on every open.
    # 11: txns, txn_items, txn_prefixes: new tables only (TXN_DDL).
    # 12: kv_namespaces, kv_entries: new tables only (KV_DDL).
    # 13: drive_shards (SHARD_INDEX_DDL), filled from the layouts by ``_prepare_schema``.
]  # fmt: skip
