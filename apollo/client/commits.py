"""Concurrent commits share one metadata call (``RemoteMeta.commit_version``): group commit through the service.

Every PUT ends in a commit, a signed HTTP call to a metadata service that the service answered with a pool
thread and a PostgreSQL transaction of its own. A gateway serving many PUTs, or a job writing many small
objects, makes many at once. So, as lookups do (``apollo.client.lookups``), commits made together go
together, in ``commit_versions`` calls, at most ``IN_FLIGHT_MAX`` at once (``apollo.client.sharing``): the
service makes each call's commits in one transaction (``apollo.meta.sql_shared_commits``).

Each commit gets what ``commit_version`` alone answers: the service makes every commit of a batch again on
its own when any of them fails. A batch refused whole (a policy that refuses one of its commits, a
service too old to know the call, a body over the service's limit) is sent again one commit per call, so
each hears its own answer. A conditional commit (If-Match, If-None-Match), one with a tar index, and one of
more than ``SEGMENTS_SHARED_MAX`` segments go alone: a refusal would cost the others a second transaction,
and a few large layouts would fill a call.
"""

from __future__ import annotations

import asyncio

from apollo import errors, limits
from apollo.client.sharing import SharedCalls, Waiting, answer
from apollo.proto import codec
from apollo.proto.records import Version

IN_FLIGHT_MAX = 2  # calls at once: 3 or 4 measured slower (more, smaller transactions)
SEGMENTS_SHARED_MAX = 4  # 64 commits of 4 layouts each are ~0.2 MiB of a call's 4 MiB


class SharedCommits(SharedCalls[dict]):
    in_flight_max = IN_FLIGHT_MAX
    batch_max = limits.commits_per_call_max

    async def commit(self, commit: dict) -> Version:
        """``commit_version(**commit)`` (its bucket, key, size, etag, attrs and data).
        :raises: as ``commit_version``."""
        return await self.submit(commit)

    async def ask_alone(self, item: dict) -> Version:
        return await self._call("commit_version", **item)

    async def share(self, batch: list[Waiting]) -> None:
        try:
            outcomes = await self._call("commit_versions", [commit for commit, _ in batch])
        except (errors.AccessDenied, errors.EntityTooLarge):  # refused whole, before anything ran: each alone
            await asyncio.gather(*(self.alone(waiting) for waiting in batch))
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if outcome.version is not None:
                answer(future, outcome.version)
            elif not future.done():
                future.set_exception(codec.error_from_wire({"type": outcome.error, "message": outcome.message}))
