"""The metadata service's hottest reads on PostgreSQL, run on its event loop: no thread per call.

Every GET starts with a lookup (``get_version``; a batch of them for a dataset's reads, ``get_versions``).
Through ``apollo meta`` each was a hop to a pool thread that waited on PostgreSQL and a hop back; with the
event loop and 16 pool threads taking turns at one interpreter, a quarter of the service's CPU went to
switching between them. These lookups are written once as plans (``SqlBase.drive``'s generators of
statements), which this runs on the loop itself, retrying an unreachable database as ``Engine.run`` does
(``engine.Attempts``). The plans never write: one of them answered on a connection whose session broke is
simply run again.

The connections are asyncpg's, not psycopg's as the store's threads use: a lookup's statement costs the
loop a third of the CPU (8 rows: 27 µs against 89 µs, ``docs/benchmarks.md``), and the loop is one core
serving every call. Its statements are planned generically, once per connection (``plan_cache_mode``):
each is an index probe by bucket and key whatever the arguments, and replanning one for its arguments
cost PostgreSQL three times the lookup itself.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from typing import TypeVar

import asyncpg

from apollo.meta.engine import SESSION_SETTINGS, Attempts, PostgresEngine
from apollo.meta.sqlbase import Plan

T = TypeVar("T")
CONNECTIONS_MAX = 4  # lookups at once on the loop: each is a round trip or three, the loop is one core
CONNECT_TIMEOUT_S = 5.0
READ_SETTINGS = {**SESSION_SETTINGS, "plan_cache_mode": "force_generic_plan"}


@functools.lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """The store's ``?`` SQL with PostgreSQL's numbered parameters (the store's SQL has no ``?`` in a literal)."""
    count = iter(range(1, 1 << 16))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


async def _unchanged(conn: asyncpg.Connection) -> None:
    """A connection handed back to the pool needs no reset: its plans only read, each statement a transaction
    of its own, and change nothing of the session. (asyncpg's default reset is a round trip per lookup, a
    tenth of the loop's time on it; any open transaction is still rolled back.)"""


class AsyncReads:
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
            while True:
                sql, args = statement
                rows = await conn.fetch(numbered(sql), *(int(a) if isinstance(a, bool) else a for a in args))
                try:
                    statement = plan.send(rows)
                except StopIteration as done:
                    return done.value

    async def _connections(self) -> asyncpg.Pool:
        """The pool, made on first use with no connection open (so making it never fails): it connects, and
        reconnects, as calls need."""
        if self._pool is None:
            self._pool = asyncio.ensure_future(asyncpg.create_pool(
                self.engine.url, min_size=0, max_size=self.size, timeout=CONNECT_TIMEOUT_S,
                server_settings=READ_SETTINGS, reset=_unchanged,
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
