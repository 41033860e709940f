"""Transactions of the SQL metadata store, on either engine (``apollo.meta.engine``).

A store object may be used from several threads (PostgreSQL: the metadata service's
pool of threads) or from one (SQLite: the single writer thread). Each thread's open
transaction lives in a thread-local, so nested ``tx()`` calls find it and become
savepoints; statements outside a transaction take a connection for themselves.

The hottest calls (a GET's lookup, a batch lookup, a batch of small commits) are written once as a *plan*: a
generator that yields each statement and is sent its rows, with no connection of its own. ``SqlBase.drive``
runs a plan on the store's connection; the metadata service runs the same plan on its event loop
(``apollo.meta.async_sql``).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from apollo import errors, faults
from apollo.meta.engine import Engine, SqliteEngine, open_engine
from apollo.meta.plans import Conn, Plan, Row, Statement, run_from
from apollo.meta.schema import DDL, MIGRATIONS, SCHEMA_VERSION, SHARD_INDEX_SINCE
from apollo.meta.shard_index import rebuild_shard_index

T = TypeVar("T")
__all__ = ["CommitHook", "Conn", "Plan", "Row", "SqlBase", "Statement", "dumps"]  # what the store's modules import


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class CommitHook(Protocol):
    """What a store's writer calls around every COMMIT (``apollo.meta.journal.Journal`` is the one there is)."""

    def seal(self, conn: Any) -> Any:
        """Inside the transaction, just before COMMIT: number its changes; what ``publish`` takes after."""

    def publish(self, sealed: Any) -> None:
        """After the COMMIT: hand the sealed changes on."""

    def close(self) -> None: ...


class SqlBase:
    """Owns the engine; mixins add the operations."""

    journal: CommitHook | None = None  # set by ``apollo.meta.journal.enable`` on the writer (SQLite mode)

    def __init__(self, target: Path | str | Engine) -> None:
        """``target``: a SQLite file path, a ``postgresql://`` URL, or an open engine."""
        self.engine = target if isinstance(target, Engine) else open_engine(str(target))
        self._owns_engine = True
        self._local = threading.local()
        self.engine.run(self._prepare_schema)

    @property
    def path(self) -> str | None:
        """The SQLite file (journal, checkpoints and backups work on it); None on PostgreSQL."""
        return self.engine.path if isinstance(self.engine, SqliteEngine) else None

    @property
    def conn(self) -> Any:
        """The calling thread's open transaction; on SQLite, outside one, the store's only connection."""
        active = getattr(self._local, "conn", None)
        if active is not None:
            return active
        if isinstance(self.engine, SqliteEngine):
            return self.engine.conn
        raise RuntimeError("no metadata transaction is open on this thread")

    def _prepare_schema(self) -> None:
        """Create a new database, or upgrade an older one step by step; refuse a newer one."""
        with self.tx() as db:
            if self.engine.schema_lock_sql:
                db.execute(self.engine.schema_lock_sql)
            has_settings = self.engine.table_exists(db, "settings")
            row = self.one("SELECT value FROM settings WHERE name = 'schema_version'") if has_settings else None
            found = SCHEMA_VERSION if row is None else int(row["value"])
            if found > SCHEMA_VERSION:
                raise RuntimeError(f"metadata schema version {found} is newer than this Apollo ({SCHEMA_VERSION}): "
                                   "upgrade Apollo, never downgrade it")  # fmt: skip
            for version, statements in MIGRATIONS:
                if found < version:
                    for statement in statements:
                        db.execute(self.engine.ddl(statement))
            for statement in DDL:
                db.execute(self.engine.ddl(statement))
            if found < SHARD_INDEX_SINCE:
                rebuild_shard_index(db)
            db.execute(
                "INSERT INTO settings (name, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction around several calls (group commit); each call's ``tx()`` becomes a savepoint."""
        with self._transaction("meta.batch.before_commit"):
            yield

    @contextlib.contextmanager
    def tx(self, queued: bool = False) -> Iterator[Any]:
        """A write transaction: commits on success, rolls back on any exception.

        Inside ``batch()`` or another ``tx()`` it is a savepoint instead: a failing call undoes
        only its own changes. ``queued``: at ``Engine.queued_begin_sql``'s isolation (its caller locks
        the row it serializes on first).
        """
        active = getattr(self._local, "conn", None)
        if active is None:
            with self._transaction("meta.tx.before_commit", queued) as conn:
                yield conn
            return
        if getattr(self._local, "all_or_nothing", False):
            yield active
            return
        active.execute("SAVEPOINT call")
        try:
            yield active
        except BaseException:
            active.execute("ROLLBACK TO call")
            active.execute("RELEASE call")
            raise
        active.execute("RELEASE call")

    @contextlib.contextmanager
    def all_or_nothing(self) -> Iterator[Any]:
        """One transaction (or savepoint) around several calls whose own ``tx()`` then adds no savepoint:
        the first call that raises undoes them all. Two round trips fewer per call than ``batch()``, for
        callers that run the calls again one by one when any fails (``SharedCommitOps``)."""
        with self.tx() as conn:
            self._local.all_or_nothing = True
            try:
                yield conn
            finally:
                self._local.all_or_nothing = False

    @contextlib.contextmanager
    def _transaction(self, fault_point: str, queued: bool = False) -> Iterator[Any]:
        with self.engine.connect() as conn:
            conn.execute(self.engine.queued_begin_sql if queued else self.engine.begin_sql)
            self._local.conn, self._local.queued = conn, queued
            try:
                try:
                    yield conn
                except BaseException:
                    with contextlib.suppress(Exception):  # a dropped connection has nothing left to roll back
                        conn.execute("ROLLBACK")
                    raise
                self._commit(conn, fault_point)
            finally:
                self._local.conn, self._local.queued = None, False

    @property
    def queued(self) -> bool:
        """Whether this thread's transaction is a queued one (``tx(queued=True)``: READ COMMITTED on PostgreSQL)."""
        return getattr(self._local, "queued", False)

    def _commit(self, conn: Any, fault_point: str) -> None:
        """COMMIT the open transaction; with a journal, number its changes inside it and append them after."""
        try:
            sealed = self.journal.seal(conn) if self.journal is not None else None
            faults.point(fault_point)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(Exception):  # a failed COMMIT may have rolled back already
                conn.execute("ROLLBACK")
            if self.engine.unreachable(exc):  # sent, but did it commit? Only a fresh lookup can tell
                raise errors.MetadataUnavailable(f"metadata commit outcome unknown: {exc}") from exc
            raise
        if sealed is not None:
            self.journal.publish(sealed)

    def open_reader(self, engine: Engine | None = None) -> SqlBase:
        """A store for reads on its own connection(s) (see ``Engine.reader``), or on ``engine``'s."""
        reader = object.__new__(type(self))
        reader.engine = engine or self.engine.reader()
        reader._owns_engine = reader.engine is not self.engine
        reader._local = threading.local()
        return reader

    @contextlib.contextmanager
    def _statement(self) -> Iterator[Any]:
        """The open transaction's connection, or one taken for a single statement."""
        active = getattr(self._local, "conn", None)
        if active is not None:
            yield active
            return
        with self.engine.connect() as conn:
            yield conn

    def drive(self, plan: Plan[T]) -> T:
        """A plan's answer, its statements run on this thread's transaction or on one connection taken for them
        (none for a plan that needs no statement)."""
        try:
            statement = next(plan)
        except StopIteration as done:
            return done.value
        with self._statement() as conn:
            return run_from(conn, plan, statement)

    def one(self, sql: str, args: tuple = ()) -> Any:
        with self._statement() as conn:
            return conn.execute(sql, args).fetchone()

    def all(self, sql: str, args: tuple = ()) -> list[Any]:
        with self._statement() as conn:
            return conn.execute(sql, args).fetchall()

    def close(self) -> None:
        if self._owns_engine:
            self.engine.close()
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
