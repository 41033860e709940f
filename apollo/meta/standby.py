"""Metadata reads answered by PostgreSQL standbys, with read-your-writes (``apollo meta --standby-reads``).

The primary commits every write; its standbys replay its WAL and can answer reads,
taking them off the one server that must also commit. A standby lags by the time its
replay takes, so a read goes to one only when that cannot show the caller something
older than what it has been told (``apollo.proto.read_after``):

- a caller's read waits for nothing: a standby that has not replayed up to the caller's
  last write position (``StandbyBehind``) hands the read to the primary;
- what a standby does not find (an object, a bucket) is asked of the primary too, so a
  new object is never missed by a reader who learned of it elsewhere. What remains is
  an overwrite or a delete read by someone who did not make it, for as long as the
  replay lags (milliseconds): the consistency the operator opts into with the flag.

Standbys are found by libpq from the database URL's hosts (``target_session_attrs=
prefer-standby``, ``load_balance_hosts=random``: each pooled connection goes to a random
standby, or to the primary when none is up).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from apollo import errors, metrics
from apollo.meta.engine import PgConnection, PostgresEngine
from apollo.meta.sqlbase import SqlBase
from apollo.proto import read_after
from apollo.proto.records import Lookup, Version

log = logging.getLogger("apollo.meta.standby")
# The calling task's positions (set by the RPC service around a call): the one its reads must see, and the
# one its write reached.
READ_AFTER: contextvars.ContextVar[int | None] = contextvars.ContextVar("read_after", default=None)
WRITTEN_AT: contextvars.ContextVar[int | None] = contextvars.ContextVar("written_at", default=None)

STANDBY_SESSION = {"target_session_attrs": "prefer-standby", "load_balance_hosts": "random"}
# Replayed, or for a primary written: what the server behind a connection can answer for.
_POSITION_SQL = ("SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                 "ELSE pg_current_wal_lsn() END)::text AS at")  # fmt: skip


class StandbyBehind(Exception):
    """The standby has not replayed the WAL up to the position the caller reads after."""


def standby_url(url: str) -> str:
    """The database URL with libpq told to prefer standbys, spread at random over them."""
    parts = urlsplit(url)
    query = {**dict(parse_qsl(parts.query)), **STANDBY_SESSION}
    return urlunsplit(parts._replace(query=urlencode(query)))


class PostgresStandbyEngine(PostgresEngine):
    """Read-only connections to the standbys, each checked against the position its caller reads after."""

    def __init__(self, url: str, pool_size: int = 16) -> None:
        super().__init__(standby_url(url), pool_size)
        self._after = threading.local()
        # connection -> the highest position its server was seen to have. Per connection, not per server: a
        # server can only go back (an old primary rewound to follow the new one) across a restart, which ends
        # its connections.
        self._replayed: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    @contextlib.contextmanager
    def reading_after(self, position: int | None) -> Iterator[None]:
        """The calling thread's reads in this block see everything up to ``position`` (None: anything)."""
        self._after.position = position
        try:
            yield
        finally:
            self._after.position = None

    @contextlib.contextmanager
    def connect(self) -> Iterator[PgConnection]:
        """:raises StandbyBehind: the server has not replayed up to the thread's ``reading_after`` position."""
        with super().connect() as conn:
            needed = getattr(self._after, "position", None)
            if needed is not None and self._replayed.get(conn.raw, -1) < needed:
                replayed = read_after.parse(conn.execute(_POSITION_SQL).fetchone()["at"])
                self._replayed[conn.raw] = replayed
                if replayed < needed:
                    server = f"{conn.raw.info.host}:{conn.raw.info.port}"
                    raise StandbyBehind(f"{server} has replayed to "
                                        f"{read_after.format_lsn(replayed)}, not yet "
                                        f"{read_after.format_lsn(needed)}")  # fmt: skip
            yield conn

    def reader(self) -> PostgresStandbyEngine:
        return self


def written_position(engine: PostgresEngine) -> int:
    """The primary's WAL position now: past the commit of every transaction that has returned."""
    with engine.connect() as db:
        return read_after.parse(db.execute("SELECT pg_current_wal_lsn()::text AS at").fetchone()["at"])


def _found_nothing(result: object) -> bool:
    """No object (or a delete marker: the primary may have a newer version), or a batch with such an item."""
    if result is None or (isinstance(result, Version) and result.delete_marker):
        return True
    return isinstance(result, list) and any(isinstance(item, Lookup) and item.version is None for item in result)


class StandbyReads:
    """The standby side of a metadata service: a reader store on the standbys, with threads of its own."""

    def __init__(self, store: SqlBase, engine: PostgresStandbyEngine) -> None:
        self.engine = engine
        self.store = store.open_reader(engine)
        self._pool = ThreadPoolExecutor(engine.pool_size, thread_name_prefix="meta-standby")

    async def answer(self, name: str, args: tuple, kwargs: dict) -> tuple[bool, object]:
        """(True, the standby's result), or (False, None) when the primary must answer: the standby is behind
        the caller's ``READ_AFTER``, found nothing, or failed. Errors of the call itself (a bad argument) are
        raised: the primary would raise the same."""
        run = functools.partial(self._run, READ_AFTER.get(), getattr(self.store, name), args, kwargs)
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._pool, run)
        except StandbyBehind:
            return self._primary("behind")
        except errors.NotFound:
            return self._primary("not_found")
        except errors.ApolloError:
            raise
        except Exception as exc:  # unreachable, restarting, promoted mid-call: the primary answers
            log.debug("standby read %s failed: %r", name, exc)
            return self._primary("failed")
        if _found_nothing(result):
            return self._primary("not_found")
        metrics.standby_reads.labels("standby").inc()
        return True, result

    def _run(self, after: int | None, method: Callable, args: tuple, kwargs: dict) -> object:
        with self.engine.reading_after(after):
            return method(*args, **kwargs)

    @staticmethod
    def _primary(why: str) -> tuple[bool, None]:
        metrics.standby_reads.labels(why).inc()
        return False, None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()
