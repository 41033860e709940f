"""Plans: a store call written once as a generator of statements, run by whoever holds a connection.

A plan yields each statement (``?`` SQL and its arguments, or ``Many`` of them) and is sent the rows it
answered; it returns the call's answer. It holds no connection and knows no driver: the store runs it on a
thread's transaction (``SqlBase.drive``, ``run_plan``), the metadata service on its event loop
(``apollo.meta.async_sql``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

T = TypeVar("T")
Row = Any  # sqlite3.Row, psycopg's dict row or asyncpg's Record: each indexes by column name
Conn = Any  # sqlite3.Connection or engine.PgConnection: execute / executemany with ``?`` parameters
Statement = tuple[str, tuple]  # SQL with ``?`` parameters, and its arguments


class Many(tuple):
    """A plan's statement run once per row of arguments (``executemany``): ``Many((sql, rows))``; sent no row."""


Plan = Generator[Statement | Many, list[Row], T]  # yields statements, is sent each one's rows, returns the answer


def run_plan(conn: Conn, plan: Plan[T]) -> T:
    """A plan's answer, its statements run on ``conn`` (the caller's open transaction's)."""
    try:
        statement = next(plan)
    except StopIteration as done:
        return done.value
    return run_from(conn, plan, statement)


def run_from(conn: Conn, plan: Plan[T], statement: Statement | Many) -> T:
    """What ``run_plan`` does once the plan has yielded its first statement."""
    while True:
        if isinstance(statement, Many):
            conn.executemany(*statement)
            rows = []
        else:
            cursor = conn.execute(*statement)
            rows = cursor.fetchall() if cursor.description is not None else []  # none for INSERT, DELETE...
        try:
            statement = plan.send(rows)
        except StopIteration as done:
            return done.value
