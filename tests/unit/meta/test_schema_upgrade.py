"""Databases written by older versions are upgraded in place; newer ones are refused."""

from __future__ import annotations

import json
import sqlite3

import pytest

from apollo.meta.schema import SCHEMA_VERSION
from apollo.meta.store import SqlStore
from apollo.testing.layouts import DRIVES, segment_id

SEGMENT, DRIVE = segment_id("s1"), DRIVES[0]

# The tables version 1 had that later versions changed, exactly as version 1 created them.
V1_TABLES = [
    "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE buckets (name TEXT PRIMARY KEY, created REAL NOT NULL, versioning TEXT NOT NULL DEFAULT '')",
    """CREATE TABLE drives (drive_id TEXT PRIMARY KEY, node TEXT NOT NULL, path TEXT NOT NULL, state TEXT NOT NULL,
        weight REAL NOT NULL DEFAULT 1, added REAL NOT NULL)""",
    """CREATE TABLE segments (data_id TEXT NOT NULL, seq INTEGER NOT NULL, segment_id TEXT NOT NULL,
        offset_bytes INTEGER NOT NULL, length INTEGER NOT NULL, layout TEXT NOT NULL, PRIMARY KEY (data_id, seq))""",
    """CREATE TABLE repair_queue (segment_id TEXT NOT NULL, shard_index INTEGER NOT NULL, drive_id TEXT NOT NULL,
        reason TEXT NOT NULL, detected REAL NOT NULL, PRIMARY KEY (segment_id, shard_index))""",
    """CREATE TABLE access_keys (access_key TEXT PRIMARY KEY, secret_key TEXT NOT NULL, created REAL NOT NULL,
        is_root INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE versions (id INTEGER PRIMARY KEY AUTOINCREMENT,
        bucket TEXT NOT NULL REFERENCES buckets (name), key TEXT NOT NULL, version_id TEXT NOT NULL,
        is_latest INTEGER NOT NULL, delete_marker INTEGER NOT NULL,
        size INTEGER NOT NULL, etag TEXT NOT NULL, last_modified REAL NOT NULL,
        content_type TEXT NOT NULL, headers TEXT NOT NULL, checksums TEXT NOT NULL,
        tags TEXT NOT NULL, parts TEXT NOT NULL, inline_data BLOB, data_id TEXT)""",
]


def test_version_1_database_is_upgraded_with_segment_groups_filled_in(tmp_path):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as db:
        for statement in V1_TABLES:
            db.execute(statement)
        db.execute("INSERT INTO settings VALUES ('schema_version', '1')")
        db.execute("INSERT INTO drives VALUES (?, 'local', '/data/d1', 'online', 1, 5.0)", (DRIVE,))
        layout = {"segment_id": SEGMENT, "offset": 0, "length": 10, "scheme": "4+2", "cell_size": 4096, "pg": 77,
                  "drives": [DRIVE] * 6}  # fmt: skip
        db.execute("INSERT INTO segments VALUES ('data1', 0, ?, 0, 10, ?)", (SEGMENT, json.dumps(layout)))
        db.execute("INSERT INTO repair_queue VALUES (?, 2, ?, 'crc', 6.0)", (SEGMENT, DRIVE))
        db.execute("INSERT INTO buckets VALUES ('old', 1.0, 'Enabled')")
        db.execute("INSERT INTO access_keys VALUES ('AKOLD', 'old-secret', 1.0, 0), ('admin', 'root-secret', 1.0, 1)")
        db.execute("INSERT INTO versions (bucket, key, version_id, is_latest, delete_marker, size, etag, "
                   "last_modified, content_type, headers, checksums, tags, parts) VALUES ('old', 'k', 'null', 1, 0, "
                   "1, ?, 1.0, 'text/plain', '{}', '{}', '{}', '[]')", ("e" * 32,))
    store = SqlStore(path)
    try:
        assert store.get_setting("schema_version") == str(SCHEMA_VERSION)
        assert [s.pg for s in store.segments_after(-1, "", 10)] == [77]
        assert store.list_drives()[0].replaced_by == ""
        assert list(store.due_repairs(10.0, 5)) == [SEGMENT]
        assert (store.get_bucket("old").versioning, store.get_bucket("old").policy) == ("Enabled", "")  # version 5
        # version 6: keys made before identity policies keep every right they had; buckets have no owner
        assert [(k.access_key, k.policies) for k in store.list_keys()] == [("AKOLD", ("readwrite",)), ("admin", ())]
        assert store.get_bucket("old").owner == ""
        # version 7: versions remember the upload they were completed from (none for older ones)
        assert store.get_version("old", "k").etag == "e" * 32
        assert store.one("SELECT upload_id FROM versions WHERE key = 'k'")["upload_id"] == ""
        # version 10: console sessions live in the store (none survive from before: they were in memory)
        assert store.open_console_session("0" * 64, "AKOLD", "f" * 64, "c" * 43, 2.0) > 2.0
        assert store.console_session("0" * 64, 3.0).access_key == "AKOLD"
        # version 13: the per-drive shard index, filled from the layouts (six shards of one segment, one drive)
        assert [s.segment_id for s in store.segments_after(-1, "", 10, DRIVE)] == [SEGMENT]
        assert store.segments_after(-1, "", 10, DRIVES[1]) == []
    finally:
        store.close()
    SqlStore(path).close()  # opening an up-to-date database changes nothing


def test_a_database_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "future.db"
    SqlStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE settings SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(RuntimeError, match="newer than this Apollo"):
        SqlStore(path)
