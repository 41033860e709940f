"""The two databases the metadata store runs on, behind one small seam.

The store's SQL is written once, with ``?`` parameters and SQLite's column types; an
``Engine`` supplies connections, the few statements that differ (starting a write
transaction, finding a table, column types in DDL, the database clock) and the
classification of errors: which ones mean "run the whole call again".

- **SQLite** (one machine): one connection per store object, used from one thread. Writers
  queue on ``BEGIN IMMEDIATE``, so a transaction never conflicts with another and nothing
  needs a retry.
- **PostgreSQL** (clusters): a psycopg 3 connection pool shared by many threads and many
  metadata processes. Write transactions run at REPEATABLE READ: two transactions that
  update the same row, or insert the same unique key (the one-latest-version-per-key
  index), cannot both commit; the loser gets a serialization failure or a unique
  violation and ``Engine.run`` runs its call again from the start, where it sees the
  winner's commit (an If-None-Match then fails as it should). A lost connection before
  COMMIT is retried the same way; a lost connection *during* COMMIT is not, because
  the outcome is unknown (``MetadataUnavailable``; S3 clients retry the request).
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from apollo import errors

T = TypeVar("T")

# How long a call keeps retrying an unreachable database: a PostgreSQL restart, or a failover, which under
# Patroni's default timings takes 20-30 s from a primary's death to the standby's promotion (the leader key's
# time to live), then a moment for the pool to reach it (``POOL_RECONNECT_S``).
RETRY_FOR_S = 45.0
# How long the pool keeps one attempt at a new connection going, with its backoff of 1, 2, 4, 8... s. After a
# failover the backoff had grown to waits of 8-16 s and the pool missed the promoted standby by up to 10 s;
# an attempt given up after this is made again, from a 1 s wait, by the next call that wants a connection.
POOL_RECONNECT_S = 2.0
# A process that hangs inside a transaction (SIGSTOP, a stuck disk) must not hold its row locks, the
# manager lease's among them, for ever: PostgreSQL ends such a transaction, and a call waiting on a
# lock gives up and reruns rather than queueing behind it indefinitely.
# What every session of the service's is opened with, whatever the driver: psycopg's take them as ``options``.
SESSION_SETTINGS = {"idle_in_transaction_session_timeout": "15000", "lock_timeout": "10000"}
SESSION_OPTIONS = " ".join(f"-c {name}={value}" for name, value in SESSION_SETTINGS.items())
CONFLICT_ATTEMPTS = 20  # reruns of a call that keeps losing to concurrent transactions


class Engine(ABC):
    name: str
    embedded: bool  # one writer thread with group commit; point lookups may run inline on the event loop
    begin_sql: str
    # A write transaction whose statements each see the latest commits and whose row locks queue instead of
    # failing (PostgreSQL READ COMMITTED): for calls that serialize on one row they lock first, so that
    # many of them at once wait their turn rather than rerun (``sql_txns``: stagings into one transaction).
    queued_begin_sql: str
    now_sql: str  # the database's clock in seconds since the epoch: one clock for every process of a cluster
    schema_lock_sql: str = ""  # serializes schema creation between processes starting at once

    @abstractmethod
    def connect(self) -> contextlib.AbstractContextManager[Any]:
        """A connection for one transaction or statement of the calling thread."""

    @abstractmethod
    def table_exists(self, conn: Any, name: str) -> bool: ...

    @abstractmethod
    def ddl(self, statement: str) -> str:
        """A DDL statement written for SQLite, in this database's types."""

    @abstractmethod
    def conflict(self, exc: BaseException) -> bool:
        """A concurrent transaction won: running the call again will see its result."""

    @abstractmethod
    def unreachable(self, exc: BaseException) -> bool:
        """The database could not be reached or dropped the connection before COMMIT."""

    def full(self, exc: BaseException) -> bool:
        """The database's disk is full."""
        return False

    def in_list(self, column: str, values: list) -> tuple[str, tuple]:
        """``column IN (?, ?, ...)`` with its arguments: one SQL text per list length, which SQLite compiles
        in microseconds."""
        return f"{column} IN ({', '.join('?' * len(values))})", tuple(values)

    def latest_rows(self, columns_v: str, bucket: str, keys: list[str]) -> tuple[str, tuple]:
        """The statement (and its arguments) that reads ``columns_v`` of the latest versions (as ``v``) of
        ``keys`` in ``bucket``, the batch lookup of every batch GET, and checks the bucket in the same round
        trip: no row when it does not exist, one row of NULL ``v`` columns when it holds none of the keys."""
        among, args = self.in_list("v.key", keys)
        return (f"SELECT {columns_v} FROM buckets b LEFT JOIN versions v ON v.bucket = b.name AND v.is_latest = 1 "
                f"AND {among} WHERE b.name = ?", (*args, bucket))  # fmt: skip

    def versions_of_keys(self, columns: str, bucket: str, keys: list[str], where: str,
                         args: tuple) -> tuple[str, tuple]:  # fmt: skip
        """The statement (and its arguments) that reads ``columns`` of the rows of ``versions`` of ``keys`` in
        ``bucket`` that also meet ``where`` (its ``?`` taking ``args``): the rows a batch of commits replaces, the
        live values of a KV batch lookup."""
        among, key_args = self.in_list("key", keys)
        return f"SELECT {columns} FROM versions WHERE bucket = ? AND {among} AND ({where})", (bucket, *key_args, *args)

    @abstractmethod
    def reader(self) -> Engine:
        """An engine for read-only connections to the same database (may be this one)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def erase_replaced(self, tables: tuple[str, ...]) -> None:
        """Overwrite what remains of rows replaced in ``tables`` (old page images, dead row versions), so a
        secret rewritten sealed does not stay readable in clear in the database's files."""

    def run(self, call: Callable[[], T]) -> T:
        """Run ``call`` (one store method), again from the start while it loses a conflict or the database is away."""
        attempts = Attempts(self)
        while True:
            try:
                return call()
            except Exception as exc:
                wait = attempts.wait_after(exc)
                if wait is None:
                    raise
                time.sleep(wait)


class Attempts:
    """When a call that raised runs again, for ``Engine.run`` and the service's reads on its event loop
    (``apollo.meta.async_sql``) alike: after a lost conflict, and while the database is unreachable for
    less than ``RETRY_FOR_S``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.deadline = time.monotonic() + RETRY_FOR_S
        self.delay, self.conflicts = 0.01, 0

    def wait_after(self, exc: Exception) -> float | None:
        """Seconds to wait before the next attempt, or None: ``exc`` is the call's answer.

        :raises InsufficientStorage: the database's disk is full.
        :raises MetadataUnavailable: the database stayed unreachable for ``RETRY_FOR_S``.
        """
        if self.engine.conflict(exc) and self.conflicts < CONFLICT_ATTEMPTS:
            self.conflicts += 1
            return self.delay * self.conflicts / 4
        if self.engine.full(exc):
            raise errors.InsufficientStorage(f"the metadata database's disk is full: {exc}") from exc
        if not self.engine.unreachable(exc):
            return None
        if time.monotonic() >= self.deadline:
            raise errors.MetadataUnavailable(f"metadata database unreachable for {RETRY_FOR_S:.0f} s: {exc}") from exc
        wait, self.delay = self.delay, min(self.delay * 2, 1.0)
        return wait


SQLITE_MMAP_BYTES = 1 << 30  # address space, not memory: pages are the OS's page cache, shared by connections
SQLITE_CACHE_KIB = 32 * 1024  # per connection (a writer and two readers)


class SqliteEngine(Engine):
    name = "sqlite"
    embedded = True
    begin_sql = "BEGIN IMMEDIATE"
    queued_begin_sql = "BEGIN IMMEDIATE"  # one writer at a time: every transaction queues
    now_sql = "(julianday('now') - 2440587.5) * 86400.0"

    def __init__(self, path: str, read_only: bool = False) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        if read_only:
            self.conn.execute("PRAGMA query_only=1")
        else:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives power loss
            self.conn.execute("PRAGMA foreign_keys=OFF")
            # A deleted or rewritten row's bytes zeroed in its page when that costs no extra write (a secret
            # rewritten sealed leaves no clear copy in the page it moved out of).
            self.conn.execute("PRAGMA secure_delete=FAST")
        self.conn.execute("PRAGMA busy_timeout=10000")
        # Reads of the database's pages straight from the OS's page cache, and a larger cache of its own: a batch
        # lookup of 1,000 small objects reads their inline bytes, 10 MB of overflow pages, which SQLite's default
        # cache (2 MB) re-read from the file on every batch (10.5 ms -> 4.6 ms for such a batch, measured).
        self.conn.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
        self.conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        yield self.conn

    def table_exists(self, conn: sqlite3.Connection, name: str) -> bool:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

    def ddl(self, statement: str) -> str:
        return statement

    def conflict(self, exc: BaseException) -> bool:
        return False  # BEGIN IMMEDIATE serializes writers: nothing to lose

    def unreachable(self, exc: BaseException) -> bool:
        return False

    def full(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error) and exc.sqlite_errorcode == sqlite3.SQLITE_FULL

    def erase_replaced(self, tables: tuple[str, ...]) -> None:
        """The WAL keeps every page image written since its last reset, the replaced ones too: copy the
        latest into the database file and cut the WAL to nothing. The file's freed cells were zeroed as they
        were freed (``secure_delete``)."""
        busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise RuntimeError(f"{self.path}: the WAL could not be emptied (a reader holds it); start again")

    def reader(self) -> SqliteEngine:
        """WAL lets a second connection read while the writer commits; each statement sees the latest commit."""
        return SqliteEngine(self.path, read_only=True)

    def close(self) -> None:
        self.conn.close()


# SQLite's column types as PostgreSQL spells them: 64-bit integers and doubles (PostgreSQL's
# INTEGER and REAL are 32-bit), byte strings, and text that sorts by code point (the "C"
# collation = UTF-8 byte order, S3's listing order) whatever the database's locale.
_PG_TYPES = [
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),
    (re.compile(r"\s*\bWITHOUT ROWID$"), ""),  # SQLite's clustered table: PostgreSQL's are heaps either way
]


@functools.lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def pg_args(args: tuple | list) -> tuple:
    return tuple(int(a) if isinstance(a, bool) else a for a in args)  # flags are INTEGER columns, as in SQLite


def pg_statement(sql: str, args: tuple | list = ()) -> tuple[str, tuple]:
    """The store's ``?`` SQL and its arguments as psycopg takes them."""
    return _pg_sql(sql), pg_args(args)


class PgConnection:
    """A psycopg connection that takes the store's ``?`` SQL and parameters."""

    def __init__(self, conn: Any) -> None:
        self.raw = conn

    def execute(self, sql: str, args: tuple | list = ()) -> Any:
        return self.raw.execute(*pg_statement(sql, args))

    def executemany(self, sql: str, rows: list) -> Any:
        cursor = self.raw.cursor()
        cursor.executemany(_pg_sql(sql), [pg_args(r) for r in rows])
        return cursor


def _cannot_open(url: str, exc: Exception) -> str:
    """One line (libpq's messages span several) saying why, and for a password the server asked for and
    nobody gave, where it goes: the roles and admin commands print it instead of a traceback."""
    shown = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
    why = " ".join(str(exc).split())
    if "no password supplied" in why:
        why = ("the server asks for a password and none was given: set PGPASSWORD (or put the password in "
               "~/.pgpass, or in the URL: postgresql://USER:PASSWORD@HOST:PORT/DATABASE)")  # fmt: skip
    elif "password authentication failed" in why:
        why += ": check PGPASSWORD (or the password in ~/.pgpass, or in the URL)"
    return f"cannot open the metadata database {shown}: {why}"


class PostgresEngine(Engine):
    """A pool of connections; the metadata service runs one thread per connection (``pool_size``)."""

    name = "postgresql"
    embedded = False
    begin_sql = "BEGIN ISOLATION LEVEL REPEATABLE READ"
    queued_begin_sql = "BEGIN ISOLATION LEVEL READ COMMITTED"
    now_sql = "EXTRACT(EPOCH FROM clock_timestamp())::DOUBLE PRECISION"
    schema_lock_sql = "SELECT pg_advisory_xact_lock(1095782220)"  # any constant; this one spells APOL

    def __init__(self, url: str, pool_size: int = 16) -> None:
        import psycopg
        import psycopg_pool
        from psycopg.rows import dict_row

        self._psycopg = psycopg
        self._pool_timeout = psycopg_pool.PoolTimeout
        self.url = url
        try:  # one direct connection first: a wrong password or database name is said at once, not retried
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.Error as exc:
            raise errors.MetadataUnavailable(_cannot_open(url, exc)) from exc
        self.pool_size = pool_size
        # What every connection to the database is opened with (the service's event-loop reads' too).
        self.connection_options = {"autocommit": True, "row_factory": dict_row, "connect_timeout": 5,
                                   "options": SESSION_OPTIONS}  # fmt: skip
        self.pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, timeout=5.0, name="apollo-meta",
            reconnect_timeout=POOL_RECONNECT_S, kwargs=self.connection_options,
        )  # fmt: skip
        self.pool.open(wait=False)

    @contextlib.contextmanager
    def connect(self) -> Iterator[PgConnection]:
        with self.pool.connection() as conn:  # a broken connection is discarded on return, never reused
            yield PgConnection(conn)

    def table_exists(self, conn: PgConnection, name: str) -> bool:
        return conn.execute("SELECT to_regclass(?) IS NOT NULL AS present", (name,)).fetchone()["present"]

    def ddl(self, statement: str) -> str:
        for pattern, replacement in _PG_TYPES:
            statement = pattern.sub(replacement, statement)
        return statement

    def conflict(self, exc: BaseException) -> bool:
        e = self._psycopg.errors
        return isinstance(
            exc,
            e.SerializationFailure
            | e.DeadlockDetected
            | e.UniqueViolation
            | e.ForeignKeyViolation
            | e.LockNotAvailable,
        )

    def unreachable(self, exc: BaseException) -> bool:
        e = self._psycopg.errors
        if isinstance(exc, self._pool_timeout | e.AdminShutdown | e.CannotConnectNow | e.ConnectionException):
            return True
        return isinstance(exc, self._psycopg.OperationalError) and getattr(exc, "sqlstate", None) is None

    def full(self, exc: BaseException) -> bool:
        return isinstance(exc, self._psycopg.errors.DiskFull)

    def in_list(self, column: str, values: list) -> tuple[str, tuple]:
        """``column = ANY(?)`` with one array: one SQL text whatever the list's length, so a batch lookup's
        statement is prepared once per connection, not planned once per list length (16-key batch lookups
        in process, on an analyzed table: 42.6k -> 51.1k items/s)."""
        return f"{column} = ANY(?)", (list(values),)

    def latest_rows(self, columns_v: str, bucket: str, keys: list[str]) -> tuple[str, tuple]:
        """One index probe per key, whatever the table's statistics. As ``bucket = ? AND key = ANY(?)``,
        a bucket the statistics do not know yet (one just filled, before autovacuum analyzes it: a dataset
        read right after it was written) is planned as a scan of the whole bucket filtered by the keys,
        3,200 rows for 16 keys in a test; ``OFFSET 0`` keeps the per-key subquery from being flattened into
        that plan."""
        return (f"SELECT {columns_v} FROM buckets b LEFT JOIN LATERAL (SELECT found.* FROM unnest(CAST(? AS TEXT[])) "
                "AS wanted(key) JOIN LATERAL (SELECT * FROM versions WHERE bucket = b.name AND key = wanted.key "
                "AND is_latest = 1 OFFSET 0) found ON TRUE) v ON TRUE WHERE b.name = ?",
                (list(keys), bucket))  # fmt: skip

    def versions_of_keys(self, columns: str, bucket: str, keys: list[str], where: str,
                         args: tuple) -> tuple[str, tuple]:  # fmt: skip
        """One index probe per key, as ``latest_rows``: as ``key = ANY(?)``, a batch of 8 commits into a bucket
        of 3,200 keys never analyzed read all of them (0.39 ms; 0.64 ms a statement under 16 callers, the
        most costly of the commit), against 0.016 ms."""
        return (f"SELECT found.* FROM unnest(CAST(? AS TEXT[])) AS wanted(key) JOIN LATERAL (SELECT {columns} "
                f"FROM versions WHERE bucket = ? AND key = wanted.key AND ({where}) OFFSET 0) found ON TRUE",
                (list(keys), bucket, *args))  # fmt: skip

    def erase_replaced(self, tables: tuple[str, ...]) -> None:
        """A replaced row is a dead tuple in the table's heap until vacuumed (PostgreSQL's WAL segments are
        recycled on its own schedule, and its backups are the operator's)."""
        with self.connect() as db:
            db.execute(f"VACUUM {', '.join(tables)}")

    def reader(self) -> PostgresEngine:
        return self

    def close(self) -> None:
        self.pool.close()


def open_engine(target: str) -> Engine:
    """``postgresql://...`` (or ``postgres://``) opens PostgreSQL; anything else is a SQLite file path."""
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresEngine(target)
    return SqliteEngine(target)
