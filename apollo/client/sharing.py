"""Concurrent metadata calls of one kind that share one call: the queue behind ``LatestLookups`` and
``SharedCommits``.

Up to ``in_flight_max`` calls go out as they come; those that arrive while that many are in flight wait, and
go together in one batch call when the next one answers. A call that finds fewer in flight goes at once:
sharing adds no wait, it takes the queue's place. A subclass says how one item is asked alone
(``ask_alone``) and how a batch is asked and settled (``share``).
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

    def __init__(self, call: Callable[..., Awaitable]) -> None:
        """``call(method, *args, **kwargs)``: a metadata call (``RemoteMeta.call``)."""
        self._call = call
        self._waiting: list[Waiting] = []
        self._in_flight = 0

    async def ask_alone(self, item: Item) -> Any:
        raise NotImplementedError

    async def share(self, batch: list[Waiting]) -> None:
        """Ask for every item of ``batch`` in one call and settle each future (``answer``; ``alone`` for any the
        batch cannot answer as the item's own call would)."""
        raise NotImplementedError

    async def submit(self, item: Item) -> Any:
        """The item's answer, from its own call or a shared one. :raises: as its own call."""
        if self._in_flight < self.in_flight_max and not self._waiting:
            self._in_flight += 1
            try:
                return await self.ask_alone(item)
            finally:
                self._in_flight -= 1
                self._send_waiting()
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        return await future

    def _send_waiting(self) -> None:
        if self._waiting and self._in_flight < self.in_flight_max:
            batch = self._waiting[: self.batch_max]
            del self._waiting[: len(batch)]
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._send(batch))

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
            self._send_waiting()

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
