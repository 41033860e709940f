"""The metadata service's hottest calls on PostgreSQL, run on its event loop: no thread per call.

Every GET starts with a lookup (``get_version``; a batch of them for a dataset's reads, ``get_versions``),
and every small PUT ends in a commit, most of them shared (``commit_versions``). Through ``apollo meta``
each was a hop to a pool thread that waited on PostgreSQL and a hop back; with the event loop and 16 pool
threads taking turns at one interpreter, a quarter of the service's CPU went to switching between them.
These calls are written once as plans (``apollo.meta.plans``), which this runs on the loop itself:

- ``run``: a read, retried while the database is unreachable as ``Engine.run`` does (``engine.Attempts``).
  A read answered on a connection whose session broke is simply run again.
- ``write``: a plan in one transaction of its own, tried once. It answers None when the plan did (it makes
  only the commonest kind of a call) or raised before its COMMIT: the caller then makes the call on a
  thread as before, with every retry and fallback that path has. Only a COMMIT cut off is final
  (``MetadataUnavailable``: whether it committed is unknown).

The connections are asyncpg's, not psycopg's as the store's threads use: a lookup's statement costs the
loop a third of the CPU (8 rows: 27 µs against 89 µs, ``docs/benchmarks.md``), and the loop is one core
serving every call. Their statements are planned generically, once per connection (``plan_cache_mode``):
each reads or writes rows by bucket and key, or by row id, whatever the arguments, and replanning a
lookup for its arguments cost PostgreSQL three times the lookup itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Callable
from typing import TypeVar

import asyncpg

from apollo import errors, faults
from apollo.meta.engine import SESSION_SETTINGS, Attempts, PostgresEngine, pg_args
from apollo.meta.plans import Many, Plan, Statement

T = TypeVar("T")
# Calls at once on the loop: a lookup is a round trip or three; a shared commit holds its connection for a
# transaction of five and PostgreSQL's flush of its WAL.
CONNECTIONS_MAX = 8
CONNECT_TIMEOUT_S = 5.0
SETTINGS = {**SESSION_SETTINGS, "plan_cache_mode": "force_generic_plan"}


@functools.lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """The store's ``?`` SQL with PostgreSQL's numbered parameters (the store's SQL has no ``?`` in a literal)."""
    count = iter(range(1, 1 << 16))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


async def _unchanged(conn: asyncpg.Connection) -> None:
    """A connection handed back to the pool needs no reset: its plans' statements and transactions change
    nothing of the session. (asyncpg's default reset is a round trip per call, a tenth of the loop's time on
    lookups; any transaction left open is still rolled back.)"""


class _Declined(Exception):
    """The plan answered None: it cannot make this call, and changed nothing."""


async def _run_from(conn: asyncpg.Connection, plan: Plan[T], statement: Statement | Many) -> T:
    """The plan's answer from its first statement on, each run on ``conn``."""
    while True:
        sql, args = statement
        if isinstance(statement, Many):
            await conn.executemany(numbered(sql), [pg_args(row) for row in args])
            rows = []
        else:
            rows = await conn.fetch(numbered(sql), *pg_args(args))
        try:
            statement = plan.send(rows)
        except StopIteration as done:
            return done.value


class AsyncSql:
    """A small pool of asyncpg connections to the service's database, each opened when first needed.

    It answers ``engine.Attempts`` what an asyncpg error means (``conflict``, ``full``, ``unreachable``), as
    an ``Engine`` does for its own driver's."""

    def __init__(self, engine: PostgresEngine, size: int = CONNECTIONS_MAX) -> None:
        self.engine = engine
        self.size = size
        self._pool: asyncio.Future[asyncpg.Pool] | None = None

    async def run(self, make_plan: Callable[[], Plan[T]]) -> T:
        """The answer of the plan ``make_plan`` makes, made again from the start while the database is away.

        :raises MetadataUnavailable: the database stayed unreachable for ``engine.RETRY_FOR_S``.
        """
        attempts = Attempts(self)
        while True:
            try:
                return await self._drive(make_plan())
            except Exception as exc:
                wait = attempts.wait_after(exc)
                if wait is None:
                    raise
                await asyncio.sleep(wait)

    async def _drive(self, plan: Plan[T]) -> T:
        try:
            statement = next(plan)
        except StopIteration as done:
            return done.value
        pool = await self._connections()
        # A connection whose session broke is closed by the pool on release, never handed out again.
        async with pool.acquire() as conn:
            return await _run_from(conn, plan, statement)

    async def write(self, plan: Plan[T | None], fault_point: str = "meta.tx.before_commit") -> T | None:
        """The plan's answer, made in one transaction (REPEATABLE READ, as the store's own); None when the plan
        answered None or raised before the COMMIT (rolled back, or never begun: nothing of it is visible).

        :raises MetadataUnavailable: the COMMIT was sent and cut off: whether it committed is unknown.
        """
        try:
            statement = next(plan)
        except StopIteration as done:  # declined before its first statement
            return done.value
        try:
            pool = await self._connections()
            async with pool.acquire() as conn:
                transaction = conn.transaction(isolation="repeatable_read")
                await transaction.start()
                try:
                    answer = await _run_from(conn, plan, statement)
                    if answer is None:
                        raise _Declined
                    faults.point(fault_point)
                except BaseException:
                    with contextlib.suppress(Exception):  # a broken connection has nothing left to roll back
                        await transaction.rollback()
                    raise
                try:
                    await transaction.commit()
                except Exception as exc:
                    if self.unreachable(exc):
                        raise errors.MetadataUnavailable(f"metadata commit outcome unknown: {exc}") from exc
                    raise
                return answer
        except errors.MetadataUnavailable:
            raise
        except Exception:  # declined, refused, conflicting or unreachable: the caller's thread path decides
            return None

    async def _connections(self) -> asyncpg.Pool:
        """The pool, made on first use with no connection open (so making it never fails): it connects, and
        reconnects, as calls need."""
        if self._pool is None:
            self._pool = asyncio.ensure_future(asyncpg.create_pool(
                self.engine.url, min_size=0, max_size=self.size, timeout=CONNECT_TIMEOUT_S,
                server_settings=SETTINGS, reset=_unchanged,
            ))  # fmt: skip
        return await asyncio.shield(self._pool)

    def conflict(self, exc: BaseException) -> bool:
        return False  # a read loses no conflict

    def full(self, exc: BaseException) -> bool:
        return isinstance(exc, asyncpg.DiskFullError)

    def unreachable(self, exc: BaseException) -> bool:
        """Refused or broken connections, a server starting or shutting down, one too busy to take a connection,
        or an answer that never came: what a failover or restart looks like from here."""
        return isinstance(exc, OSError | TimeoutError | asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError
                          | asyncpg.AdminShutdownError | asyncpg.TooManyConnectionsError)  # fmt: skip

    async def close(self) -> None:
        if self._pool is not None:
            await (await self._pool).close()
