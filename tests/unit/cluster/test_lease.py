"""The lease keeper stops a holder's work before the lease can pass to anyone else, even while the database is away."""

from __future__ import annotations

import asyncio
import time

from apollo.cluster.lease import LeaseKeeper
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore


def test_a_holder_whose_renewals_fail_stops_its_work_before_its_lease_expires(tmp_path):
    meta = MetaService(SqlStore(tmp_path / "meta.db"))
    ttl = 0.9
    events: list[tuple[str, float]] = []

    async def scenario() -> None:
        keeper = LeaseKeeper(meta, "holder-a", ttl)
        real_acquire = meta.acquire_lease

        async def failing_acquire(*args):  # the database goes away after the first renewal
            if events:
                raise ConnectionError("database unreachable")
            return await real_acquire(*args)

        meta.acquire_lease = failing_acquire

        async def gained() -> None:
            events.append(("gain", time.monotonic()))

        async def lost() -> None:
            events.append(("loss", time.monotonic()))

        task = asyncio.create_task(keeper.keep(gained, lost))
        await asyncio.sleep(ttl * 2.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        lease = await real_acquire("manager", "holder-b", ttl)  # another process after the expiry
        assert lease.holder == "holder-b"

    try:
        asyncio.run(scenario())
    finally:
        meta.close()
    assert [kind for kind, _ in events] == ["gain", "loss"]
    held_for = events[1][1] - events[0][1]
    assert held_for <= ttl, f"work went on {held_for:.2f} s, past the {ttl} s lease"


def test_a_holder_whose_work_fails_to_start_hands_the_lease_on_and_competes_again(tmp_path):
    meta = MetaService(SqlStore(tmp_path / "meta.db"))
    ttl = 0.6
    events: list[str] = []

    async def scenario() -> None:
        keeper = LeaseKeeper(meta, "holder-a", ttl)

        async def gained() -> None:
            events.append("gain")
            if events.count("gain") == 1:  # e.g. the database dropped the call that reads the knobs
                lease = await meta.acquire_lease("manager", "holder-b", ttl)
                assert lease.holder == "holder-a", "the lease should still be held while the work starts"
                raise ConnectionError("database went away while starting the work")

        async def lost() -> None:
            events.append("loss")

        task = asyncio.create_task(keeper.keep(gained, lost))
        await asyncio.sleep(0.05)
        assert (await meta.acquire_lease("manager", "holder-b", ttl)).holder == "holder-b", "not handed on"
        await asyncio.sleep(ttl * 3)  # holder-b stops renewing; holder-a's next rounds take it back
        assert not task.done(), "the keeper stopped competing for the lease"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(scenario())
    finally:
        meta.close()
    assert events == ["gain", "loss", "gain", "loss"]
