"""Connection handling for the SQL metadata store (SQLite now; the SQL is kept portable).

All calls of one store run on one thread (the metadata service's executor),
so a single connection serves them; write transactions start with
``BEGIN IMMEDIATE`` so conditional writes are checked under the write lock.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from apollo import faults
from apollo.meta.schema import DDL, MIGRATIONS, SCHEMA_VERSION

if TYPE_CHECKING:
    from apollo.meta.journal import Journal


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class SqlBase:
    """Owns the connection; mixins add the operations."""

    journal: Journal | None = None  # set by ``apollo.meta.journal.enable`` on the writer (SQLite mode)

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives power loss
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.conn.execute("PRAGMA foreign_keys=OFF")
        self._prepare_schema()

    def _prepare_schema(self) -> None:
        """Create a new database, or upgrade an older one step by step; refuse a newer one."""
        with self.tx():
            has_settings = self.one("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'settings'")
            row = self.one("SELECT value FROM settings WHERE name = 'schema_version'") if has_settings else None
            found = SCHEMA_VERSION if row is None else int(row["value"])
            if found > SCHEMA_VERSION:
                raise RuntimeError(f"metadata schema version {found} is newer than this Apollo ({SCHEMA_VERSION}): "
                                   "upgrade Apollo, never downgrade it")  # fmt: skip
            for version, statements in MIGRATIONS:
                if found < version:
                    for statement in statements:
                        self.conn.execute(statement)
            for statement in DDL:
                self.conn.execute(statement)
            self.conn.execute(
                "INSERT INTO settings (name, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction around several calls (group commit); each call's ``tx()`` becomes a savepoint."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self._commit("meta.batch.before_commit")

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: commits on success, rolls back on any exception.

        Inside ``batch()`` or another ``tx()`` it is a savepoint instead: a failing call undoes
        only its own changes.
        """
        if self.conn.in_transaction:
            self.conn.execute("SAVEPOINT call")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK TO call")
                self.conn.execute("RELEASE call")
                raise
            self.conn.execute("RELEASE call")
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self._commit("meta.tx.before_commit")

    def _commit(self, fault_point: str) -> None:
        """COMMIT the open transaction; with a journal, number its changes inside it and append them after."""
        try:
            sealed = self.journal.seal(self.conn) if self.journal is not None else None
            faults.point(fault_point)
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.OperationalError):  # a failed COMMIT may have rolled back already
                self.conn.execute("ROLLBACK")
            raise
        if sealed is not None:
            self.journal.publish(sealed)

    def open_reader(self) -> SqlBase:
        """A second, read-only connection to the same database for point lookups.

        WAL lets it read while the writer thread commits, and each statement sees the
        latest commit, so lookups can run right on the event loop (tens of microseconds)
        instead of hopping to the writer thread and back, which costs two GIL hand-offs.
        """
        reader = object.__new__(type(self))
        reader.path = self.path
        reader.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        reader.conn.row_factory = sqlite3.Row
        reader.conn.execute("PRAGMA query_only=1")
        reader.conn.execute("PRAGMA busy_timeout=10000")
        return reader

    def one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        return self.conn.execute(sql, args).fetchone()

    def all(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, args).fetchall()

    def close(self) -> None:
        self.conn.close()
        if self.journal is not None:
            self.journal.close()

    # settings --------------------------------------------------------------------------------

    def get_setting(self, name: str) -> str | None:
        row = self.one("SELECT value FROM settings WHERE name = ?", (name,))
        return None if row is None else row["value"]

    def set_setting(self, name: str, value: str) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    def settings_like(self, prefix: str) -> dict[str, str]:
        rows = self.all("SELECT name, value FROM settings WHERE substr(name, 1, ?) = ?", (len(prefix), prefix))
        return {r["name"]: r["value"] for r in rows}
