"""Event-loop plumbing shared by Apollo's processes: uvloop, periodic steps that must not die, peers
that stop sending or reading, and the bytes requests in progress may hold."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from apollo import metrics

log = logging.getLogger("apollo")

T = TypeVar("T")


def install_uvloop() -> None:
    """uvloop's C transports cut the per-write cost that bounds streaming; every Apollo process runs on it."""
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop not available; using the default asyncio loop")
        return
    uvloop.install()


async def every(seconds: float, step: Callable[[], Awaitable[object]], what: str, at_once: bool = False) -> None:
    """Run ``step`` every ``seconds`` until cancelled; a failing step is logged and the loop goes on."""
    if not at_once:
        await asyncio.sleep(seconds)
    while True:
        try:
            await step()
        except Exception as exc:
            log.warning("%s failed: %r", what, exc)
        await asyncio.sleep(seconds)


class StallGuard:
    """Cuts the connection of a peer we have waited on for ``stall_s`` without it moving a byte: a client
    that stops sending a body, or stops reading a response, must not hold its file descriptor and the
    buffers behind it (a GET's read-ahead) for ever.

    Only time spent waiting on the peer counts: a body read slowly because our own drives are busy is
    not the client's stall. One timer per connection, re-armed as waits end, rather than a deadline per
    chunk: ``asyncio.timeout`` costs ~5 us a chunk, on the storage node's busiest loop. Cutting means
    aborting the transport, so the pending read or write fails as a dropped connection would, and the
    caller's ordinary cleanup (abort the upload, close the reader) runs.
    """

    def __init__(self, transport: asyncio.BaseTransport | None, stall_s: float, direction: str) -> None:
        self._transport = transport
        self._stall_s = stall_s
        self._direction = direction  # "receive" or "send", the metric's label
        self._loop = asyncio.get_running_loop()
        self._waiting_since: float | None = None
        self._timer = self._loop.call_later(stall_s, self._check)
        self.stalled = False

    def _check(self) -> None:
        now = self._loop.time()
        since = self._waiting_since
        if since is not None and now - since >= self._stall_s:
            self.stalled = True
            metrics.stalled_peers.labels(self._direction).inc()
            if self._transport is not None:
                self._transport.abort()
            return
        self._timer = self._loop.call_at((since if since is not None else now) + self._stall_s, self._check)

    async def wait(self, step: Awaitable[T]) -> T:
        """``await step``, timed as a wait on the peer."""
        self._waiting_since = self._loop.time()
        try:
            return await step
        finally:
            self._waiting_since = None

    async def each(self, source: AsyncIterable[T]) -> AsyncIterator[T]:
        """The items of ``source``, each awaited as a wait on the peer."""
        iterator = aiter(source)
        while True:
            try:
                item = await self.wait(anext(iterator))
            except StopAsyncIteration:
                return
            yield item

    def close(self) -> None:
        self._timer.cancel()

    def __enter__(self) -> StallGuard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ByteBudget:
    """The bytes this process's requests of one kind (batch reads, batch GETs) may hold in memory at once:
    a request that would pass it is refused (503, SlowDown) rather than queued behind the others."""

    def __init__(self, bytes_max: int) -> None:
        self.bytes_max = bytes_max
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.bytes_max:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size
