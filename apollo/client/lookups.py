"""Concurrent lookups of latest versions share one metadata call (``RemoteMeta.get_version``).

Every GET begins with a lookup, a signed HTTP call to a metadata service. Through the
service, the fixed cost of a call (its HTTP exchange, signature and task on both ends)
is most of a lookup's: about 350 µs of CPU where the lookup itself takes tens. A gateway
serving many clients, or a data loader's workers, make many at once. So up to
``IN_FLIGHT_MAX`` lookups go out as they come, and those that arrive while that many are
in flight wait and go together, in one ``get_versions`` call, when the next one answers.
A lookup that finds fewer in flight goes at once: batching adds no wait, it takes the
queue's place.

A batched lookup answers what ``get_version`` would: the version it found. Any other
outcome (no object, a delete marker, no bucket, a refusal) is asked again alone, because
``get_version`` answers those differently than a batch item (a delete marker is a version
to it, an error to a batch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from apollo import limits
from apollo.proto.records import Lookup, Version

IN_FLIGHT_MAX = 2  # calls at once before lookups wait to share one: about 8 a call at 16 concurrent lookups

Waiting = tuple[str, str, asyncio.Future]


class LatestLookups:
    def __init__(self, call: Callable[..., Awaitable]) -> None:
        """``call(method, *args)``: a metadata call (``RemoteMeta.call``)."""
        self._call = call
        self._waiting: list[Waiting] = []
        self._in_flight = 0

    async def get(self, bucket: str, key: str) -> Version | None:
        """``get_version(bucket, key)``: the latest version (maybe a delete marker) or None.
        :raises: as ``get_version``."""
        if self._in_flight < IN_FLIGHT_MAX and not self._waiting:
            self._in_flight += 1
            try:
                return await self._call("get_version", bucket, key)
            finally:
                self._in_flight -= 1
                self._send_waiting()
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((bucket, key, future))
        return await future

    def _send_waiting(self) -> None:
        if self._waiting and self._in_flight < IN_FLIGHT_MAX:
            batch = self._waiting[: limits.batch_lookup_items_max]
            del self._waiting[: len(batch)]
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[Waiting]) -> None:
        try:
            if len(batch) == 1:
                await self._alone(batch[0])
            else:
                lookups = await self._call("get_versions", [[bucket, key, None] for bucket, key, _ in batch])
                found = [self._settle(item, lookup) for item, lookup in zip(batch, lookups, strict=True)]
                await asyncio.gather(*(self._alone(item) for item, ok in zip(batch, found, strict=True) if not ok))
        except Exception as exc:  # the call failed: each waiter hears it, as from its own call
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._in_flight -= 1
            self._send_waiting()

    @staticmethod
    def _settle(item: Waiting, lookup: Lookup) -> bool:
        """Answer ``item`` from the batch when it found a version; False: it must be asked alone."""
        future = item[2]
        if lookup.version is None:
            return False
        if not future.done():
            future.set_result(lookup.version)
        return True

    async def _alone(self, item: Waiting) -> None:
        bucket, key, future = item
        try:
            version = await self._call("get_version", bucket, key)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(version)
