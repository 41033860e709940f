"""Concurrent metadata calls of one kind that share one call: the queue behind ``LatestLookups`` and
``SharedCommits``.

Items wait for the end of the event loop's current turn, then go: those that arrived in one turn (the
callers an answered call just woke, the requests a gateway just read) share calls, at most
``in_flight_max`` at once, each taking its share of all the items waiting or in flight (and at least
``share_min`` of those waiting), so the calls stay even. What is left waits for the next call to answer.
A lone item costs the turn's wait, microseconds, and goes in a call of its own (``ask_alone``).

Sending the first item of a turn at once, as this did, cost a call per turn: 16 callers woken together
made one call of 1 and one of 15, turn after turn, and lookups through one service ran at 16.6k/s against
19k-21k/s shared evenly (``docs/benchmarks.md``). A subclass says how one item is asked alone and how a
batch is asked and settled (``share``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Waiting = tuple[Any, asyncio.Future]


class SharedCalls(Generic[Item]):
    in_flight_max = 2
    batch_max = 1000
    # A call takes at least this many of what waits before another opens: at 16 callers woken together one call
    # of 16 beat two of 8 (lookups through one service 20.8k-24.0k/s against 18.8k-20.6k: a call's fixed cost is
    # most of it), while a lookup made alone, with a call in flight, still goes at once in another.
    share_min = 16

    def __init__(self, call: Callable[..., Awaitable]) -> None:
        """``call(method, *args, **kwargs)``: a metadata call (``RemoteMeta.call``)."""
        self._call = call
        self._waiting: list[Waiting] = []
        self._in_flight = 0
        self._items_in_flight = 0
        self._sending_soon = False
        self._tasks: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    async def ask_alone(self, item: Item) -> Any:
        raise NotImplementedError

    async def share(self, batch: list[Waiting]) -> None:
        """Ask for every item of ``batch`` in one call and settle each future (``answer``; ``alone`` for any the
        batch cannot answer as the item's own call would)."""
        raise NotImplementedError

    async def submit(self, item: Item) -> Any:
        """The item's answer, from its own call or a shared one. :raises: as its own call."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._send_soon()
        return await future

    def _send_soon(self) -> None:
        """Send what waits once this turn of the event loop is over."""
        if not self._sending_soon:
            self._sending_soon = True
            asyncio.get_running_loop().call_soon(self._send_waiting)

    def _send_waiting(self) -> None:
        """The waiting items in calls of their share (at most ``batch_max``) while calls are free; those whose
        callers gave up are dropped."""
        self._sending_soon = False
        while self._waiting and self._in_flight < self.in_flight_max:
            total = len(self._waiting) + self._items_in_flight
            share = min(self.batch_max, max(-(-total // self.in_flight_max), self.share_min))
            batch = [waiting for waiting in self._waiting[:share] if not waiting[1].done()]
            del self._waiting[:share]
            if batch:
                self._in_flight += 1
                self._items_in_flight += len(batch)
                task = asyncio.get_running_loop().create_task(self._send(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Waiting]) -> None:
        try:
            if len(batch) == 1:
                await self.alone(batch[0])
            else:
                await self.share(batch)
        except Exception as exc:  # the shared call failed (maybe after it ran): each waiter hears it, as from its own
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._in_flight -= 1
            self._items_in_flight -= len(batch)
            self._send_soon()

    async def alone(self, waiting: Waiting) -> None:
        """Ask for one waiting item in a call of its own, and settle its future with what that call answers."""
        item, future = waiting
        try:
            result = await self.ask_alone(item)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            answer(future, result)


def answer(future: asyncio.Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)
