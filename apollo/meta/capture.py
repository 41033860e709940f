"""Change capture for the metadata journal: TEMP triggers record a row image of every change to the namespace.

Why triggers: no store method has to know about the journal, and every writer of these
tables is captured the same way, repair's layout updates included. Why TEMP: a TEMP
trigger exists only on the connection that created it (the writer), never on the
read-only connections, and is never written into the database file, so checkpoints and
backups carry none. The DDL is generated from ``PRAGMA table_info`` at install time, so
a column added to the schema is captured without anyone touching this file.

A change is one JSON object: ``{"table": t, "row": {...}}`` (insert, or the new image of
an update: replayed as INSERT OR REPLACE) or ``{"table": t, "key": {...}}`` (delete by
primary key, also emitted for the old key when an update changes the key). Row images
make replay idempotent. JSON cannot carry every SQLite value as is, so:

- BLOB columns are hex strings (``json_object`` refuses BLOBs);
- REAL columns are decimal strings of 18 significant digits: SQLite renders REALs in
  JSON with 15, which moves a timestamp by microseconds, and 18 round-trip any double.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# The namespace and what it needs to be served. Not journaled: garbage (pending writes and
# queued deletes: recovery derives what matters), repair_queue, drive_jobs and drives (rebuilt
# from the drives), settings (the sequence counter lives there), drive_shards (derived from the
# layouts: recovery rebuilds it, ``apollo.meta.shard_index``).
JOURNALED_TABLES = ("buckets", "versions", "segments", "uploads", "parts", "access_keys", "policies", "key_policies",
                    "snapshots", "snapshot_objects", "retired_versions", "tar_members", "txns", "txn_items",
                    "kv_namespaces", "kv_entries")
REAL_DIGITS_FORMAT = "%!.18g"
REAL_TYPES = ("REAL", "FLOA", "DOUB")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "blob" | "real" | "plain": how its values are carried in JSON
    nullable: bool
    key_position: int  # position in the primary key, 0 when not part of it


def table_columns(conn: sqlite3.Connection, table: str) -> list[Column]:
    """The columns of ``main.table`` as SQLite reports them (declared type decides the JSON encoding)."""
    out = []
    for row in conn.execute(f"PRAGMA main.table_info({table})"):
        declared = (row[2] or "").upper()  # SQLite's affinity rules decide what a column holds
        kind = "blob" if "BLOB" in declared else "real" if any(t in declared for t in REAL_TYPES) else "plain"
        out.append(Column(row[1], kind, not row[3], row[5]))
    return out


def key_columns(columns: list[Column]) -> list[Column]:
    keyed = sorted((c for c in columns if c.key_position), key=lambda c: c.key_position)
    if not keyed:
        raise ValueError("a journaled table needs a primary key: replay finds rows by it")
    return keyed


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _encoded(column: Column, ref: str) -> str:
    value = f"{ref}.{_quoted(column.name)}"
    if column.kind == "plain":
        return value
    encoded = f"hex({value})" if column.kind == "blob" else f"printf('{REAL_DIGITS_FORMAT}', {value})"
    return f"CASE WHEN {value} IS NULL THEN NULL ELSE {encoded} END" if column.nullable else encoded


def _image(columns: list[Column], ref: str) -> str:
    pairs = ", ".join(f"'{c.name}', {_encoded(c, ref)}" for c in columns)
    return f"json_object({pairs})"


def trigger_ddl(table: str, columns: list[Column]) -> list[str]:
    """CREATE TEMP TRIGGER statements that append ``table``'s changes to ``temp.journal_changes``."""
    keys = key_columns(columns)
    put = f"json_object('table', '{table}', 'row', {_image(columns, 'NEW')})"
    delete = f"json_object('table', '{table}', 'key', {_image(keys, 'OLD')})"
    key_changed = " OR ".join(f"OLD.{_quoted(c.name)} IS NOT NEW.{_quoted(c.name)}" for c in keys)

    def trigger(name: str, event: str, change: str, when: str = "") -> str:
        return (f"CREATE TEMP TRIGGER IF NOT EXISTS journal_{table}_{name} AFTER {event} ON main.{_quoted(table)} "
                f"{when}BEGIN INSERT INTO journal_changes (change) VALUES ({change}); END")  # fmt: skip

    return [
        trigger("insert", "INSERT", put),
        trigger("update", "UPDATE", put),
        trigger("rekey", "UPDATE", delete, f"WHEN {key_changed} "),
        trigger("delete", "DELETE", delete),
    ]


def install(conn: sqlite3.Connection) -> None:
    """Start capturing on this connection (the store's writer; never a reader)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS journal_changes (n INTEGER PRIMARY KEY, change TEXT NOT NULL)")
    for table in JOURNALED_TABLES:
        for statement in trigger_ddl(table, table_columns(conn, table)):
            conn.execute(statement)


def take(conn: sqlite3.Connection) -> list[str]:
    """The changes captured in the open transaction, in the order they happened; the capture table is emptied."""
    changes = [row[0] for row in conn.execute("SELECT change FROM temp.journal_changes ORDER BY n")]
    if changes:
        conn.execute("DELETE FROM temp.journal_changes")
    return changes


class Replayer:
    """Applies captured changes to another database with the same tables (the inverse of the triggers)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.columns = {t: {c.name: c for c in table_columns(conn, t)} for t in JOURNALED_TABLES}

    def apply(self, change: dict) -> None:
        """Apply one change; unknown tables or columns (a journal of a newer Apollo) raise ValueError."""
        table = change["table"]
        columns = self.columns.get(table)
        if columns is None:
            raise ValueError(f"journal names an unknown table {table!r}")
        if "key" in change:
            key = self._decoded(columns, change["key"])
            where = " AND ".join(f"{_quoted(name)} = ?" for name in key)
            self.conn.execute(f"DELETE FROM {_quoted(table)} WHERE {where}", tuple(key.values()))
        if "row" in change:
            row = self._decoded(columns, change["row"])
            names = ", ".join(_quoted(name) for name in row)
            sql = f"INSERT OR REPLACE INTO {_quoted(table)} ({names}) VALUES ({', '.join('?' * len(row))})"
            self.conn.execute(sql, tuple(row.values()))

    @staticmethod
    def _decoded(columns: dict[str, Column], image: dict) -> dict:
        out = {}
        for name, value in image.items():
            column = columns.get(name)
            if column is None:
                raise ValueError(f"journal names an unknown column {name!r}")
            if value is not None and column.kind == "blob":
                value = bytes.fromhex(value)
            elif value is not None and column.kind == "real":
                value = float(value)
            out[name] = value
        return out
