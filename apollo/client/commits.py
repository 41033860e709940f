"""Concurrent commits share one metadata call (``RemoteMeta.commit_version``): group commit through the service.

Every PUT ends in a commit, a signed HTTP call to a metadata service that the service answered with a pool
thread and a PostgreSQL transaction of its own. A gateway serving many PUTs, or a job writing many small
objects, makes many at once. So, as lookups do (``apollo.client.lookups``), up to ``IN_FLIGHT_MAX`` commits
go out as they come, and those that arrive while that many are in flight wait and go together, in one
``commit_versions`` call, when the next one answers: the service makes them in one transaction
(``apollo.meta.sql_shared_commits``). A commit that finds fewer in flight goes at once: sharing adds no
wait, it takes the queue's place.

Each commit gets what ``commit_version`` alone answers: the service makes every commit of a batch again on
its own when any of them fails. A batch refused whole (a policy that refuses one of its commits, or a
service too old to know the call, a body over the service's limit) is sent again one commit per call, so
each hears its own answer. A conditional commit (If-Match, If-None-Match), one with a tar index, and one of
more than ``SEGMENTS_SHARED_MAX`` segments go alone: a refusal would cost the others a second transaction,
and a few large layouts would fill a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from apollo import errors, limits
from apollo.proto import codec
from apollo.proto.records import Lookup, Version

IN_FLIGHT_MAX = 4  # calls at once before commits wait to share one
SEGMENTS_SHARED_MAX = 4  # 64 commits of 4 layouts each are ~0.2 MiB of a call's 4 MiB

Waiting = tuple[dict, asyncio.Future]


class SharedCommits:
    def __init__(self, call: Callable[..., Awaitable]) -> None:
        """``call(method, *args, **kwargs)``: a metadata call (``RemoteMeta.call``)."""
        self._call = call
        self._waiting: list[Waiting] = []
        self._in_flight = 0

    async def commit(self, commit: dict) -> Version:
        """``commit_version(**commit)`` (its bucket, key, size, etag, attrs and data).
        :raises: as ``commit_version``."""
        if self._in_flight < IN_FLIGHT_MAX and not self._waiting:
            self._in_flight += 1
            try:
                return await self._call("commit_version", **commit)
            finally:
                self._in_flight -= 1
                self._send_waiting()
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((commit, future))
        return await future

    def _send_waiting(self) -> None:
        if self._waiting and self._in_flight < IN_FLIGHT_MAX:
            batch = self._waiting[: limits.commits_per_call_max]
            del self._waiting[: len(batch)]
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[Waiting]) -> None:
        try:
            if len(batch) == 1:
                await self._alone(batch[0])
                return
            try:
                outcomes = await self._call("commit_versions", [commit for commit, _ in batch])
            except (errors.AccessDenied, errors.EntityTooLarge):  # refused whole, before anything ran: each alone
                await asyncio.gather(*(self._alone(item) for item in batch))
                return
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                _settle(future, outcome)
        except Exception as exc:  # the call failed (maybe after it committed): each waiter hears it, as from its own
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._in_flight -= 1
            self._send_waiting()

    async def _alone(self, item: Waiting) -> None:
        commit, future = item
        try:
            version = await self._call("commit_version", **commit)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(version)


def _settle(future: asyncio.Future, outcome: Lookup) -> None:
    if future.done():
        return
    if outcome.version is not None:
        future.set_result(outcome.version)
    else:
        future.set_exception(codec.error_from_wire({"type": outcome.error, "message": outcome.message}))
