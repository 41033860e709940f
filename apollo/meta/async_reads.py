"""The metadata service's hottest reads on PostgreSQL, run on its event loop: no thread per call.

Every GET starts with a lookup (``get_version``; a batch of them for a dataset's reads, ``get_versions``).
Through ``apollo meta`` each was a hop to a pool thread that waited on PostgreSQL and a hop back; with the
event loop and 16 pool threads taking turns at one interpreter, a quarter of the service's CPU went to
switching between them. These lookups are written once as plans (``SqlBase.drive``'s generators of
statements), which this runs on psycopg's asynchronous connections on the loop itself, retrying an
unreachable database as ``Engine.run`` does (``engine.Attempts``). The plans never write: one of them
answered on a connection whose session broke is simply run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from apollo.meta.engine import POOL_RECONNECT_S, Attempts, PostgresEngine, pg_statement
from apollo.meta.sqlbase import Plan

T = TypeVar("T")
CONNECTIONS_MAX = 4  # lookups at once on the loop: each is a round trip or three, the loop is one core


class AsyncReads:
    """A small pool of asynchronous connections to the service's database, opened on first use."""

    def __init__(self, engine: PostgresEngine, size: int = CONNECTIONS_MAX) -> None:
        import psycopg_pool

        self.engine = engine
        self.pool = psycopg_pool.AsyncConnectionPool(
            engine.url, min_size=1, max_size=size, open=False, timeout=5.0, name="apollo-meta-loop",
            reconnect_timeout=POOL_RECONNECT_S, kwargs=engine.connection_options,
        )  # fmt: skip
        self._opened: asyncio.Task | None = None

    async def run(self, make_plan: Callable[[], Plan[T]]) -> T:
        """The answer of the plan ``make_plan`` makes, made again from the start while the database is away.

        :raises MetadataUnavailable: the database stayed unreachable for ``engine.RETRY_FOR_S``.
        """
        attempts = Attempts(self.engine)
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
        if self._opened is None:
            self._opened = asyncio.ensure_future(self.pool.open(wait=False))
        await asyncio.shield(self._opened)
        async with self.pool.connection() as conn:  # a broken connection is discarded on return, never reused
            while True:
                cursor = await conn.execute(*pg_statement(*statement))
                rows = await cursor.fetchall()
                try:
                    statement = plan.send(rows)
                except StopIteration as done:
                    return done.value

    async def close(self) -> None:
        if self._opened is not None:
            await self.pool.close()
