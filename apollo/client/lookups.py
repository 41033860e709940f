"""Concurrent lookups of latest versions share one metadata call (``RemoteMeta.get_version``).

Every GET begins with a lookup, a signed HTTP call to a metadata service. Through the
service, the fixed cost of a call (its HTTP exchange, signature and task on both ends)
is most of a lookup's: about 250 µs of the service's CPU where the lookup itself takes
tens. A gateway serving many clients, or a data loader's workers, make many at once. So
lookups made together go together, in ``get_versions`` calls, at most ``IN_FLIGHT_MAX`` at
once (``apollo.client.sharing``).

A batched lookup answers what ``get_version`` would: the version it found. Any other
outcome (no object, a delete marker, no bucket, a refusal) is asked again alone, because
``get_version`` answers those differently than a batch item (a delete marker is a version
to it, an error to a batch).
"""

from __future__ import annotations

import asyncio

from apollo import limits
from apollo.client.sharing import SharedCalls, Waiting, answer
from apollo.proto.records import Version

IN_FLIGHT_MAX = 2  # calls at once: a lookup made while a call is in flight goes at once in another


class LatestLookups(SharedCalls[tuple[str, str]]):
    in_flight_max = IN_FLIGHT_MAX
    batch_max = limits.batch_lookup_items_max

    async def get(self, bucket: str, key: str) -> Version | None:
        """``get_version(bucket, key)``: the latest version (maybe a delete marker) or None.
        :raises: as ``get_version``."""
        return await self.submit((bucket, key))

    async def ask_alone(self, item: tuple[str, str]) -> Version | None:
        return await self._call("get_version", *item)

    async def share(self, batch: list[Waiting]) -> None:
        lookups = await self._call("get_versions", [[bucket, key, None] for (bucket, key), _ in batch])
        unanswered = []
        for waiting, lookup in zip(batch, lookups, strict=True):
            if lookup.version is None:
                unanswered.append(waiting)
            else:
                answer(waiting[1], lookup.version)
        await asyncio.gather(*(self.alone(waiting) for waiting in unanswered))
