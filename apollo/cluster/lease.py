"""Holding the manager lease: one process per deployment runs the background managers.

Every server process (and, in cluster mode, every metadata process) runs a
``LeaseKeeper``. It renews the lease every third of its lifetime. It counts itself the
holder only until ``ttl`` after the start of its last successful renewal, measured on
its own monotonic clock: if the database is unreachable, or the process stalls, it
gives the role up before the database could hand it to another process. The
database hands it over only once the expiry passes on the database's clock, which
started no earlier, so two holders never overlap by design (clock rates aside).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("apollo.lease")
MANAGER_LEASE = "manager"


class LeaseKeeper:
    def __init__(self, meta, holder: str, ttl_s: float, name: str = MANAGER_LEASE) -> None:
        self.meta = meta
        self.holder = holder
        self.ttl_s = ttl_s
        self.name = name
        self._valid_until = 0.0  # monotonic; the role is ours before this instant
        # Give the role up this much early: waking to stop takes the event loop a moment too.
        self.margin_s = min(0.5, ttl_s / 10)

    @property
    def held(self) -> bool:
        return time.monotonic() < self._valid_until - self.margin_s

    async def renew(self) -> bool:
        """One attempt to take or extend the lease; returns whether this process holds it now.

        A holder waits for the answer no longer than its role lasts: a call stuck on an
        unreachable database must not keep the role alive past the lease.
        """
        started = time.monotonic()
        timeout = self._valid_until - self.margin_s - started if self.held else self.ttl_s
        try:
            lease = await asyncio.wait_for(self.meta.acquire_lease(self.name, self.holder, self.ttl_s), timeout)
        except Exception as exc:  # the database is away: keep the role only until the lease would run out
            log.warning("could not renew the %s lease: %r", self.name, exc)
            return self.held
        self._valid_until = started + self.ttl_s if lease.holder == self.holder else 0.0
        return self.held

    async def keep(self, on_gain: Callable[[], Awaitable[None]], on_loss: Callable[[], Awaitable[None]]) -> None:
        """Renew every third of the lifetime; call ``on_gain`` when the role becomes ours, ``on_loss`` when it ends.

        Runs for the life of the process: an ``on_gain`` that fails (the database dropped a
        call while the work was being set up) is undone with ``on_loss`` and the lease handed
        on, and the next round competes again. Were the failure to end this loop, the process
        would never again compete for the role, and once the others died nobody would hold it.
        """
        holding = False
        try:
            while True:
                if holding and not self.held:  # ran out while renewals failed: stop before anyone may take over
                    log.warning("the %s lease ran out unrenewed (holder %s): stopping its work", self.name, self.holder)
                    holding = False
                    await self._survive(on_loss)
                now_held = await self.renew()
                if now_held and not holding:
                    log.info("took the %s lease (holder %s)", self.name, self.holder)
                    if not await self._survive(on_gain):
                        await self._survive(on_loss)
                        await self.release()
                        now_held = False
                elif holding and not now_held:
                    log.warning("lost the %s lease (holder %s): stopping its work", self.name, self.holder)
                    await self._survive(on_loss)
                holding = now_held
                wait = self.ttl_s / 3
                if holding:  # wake no later than the role runs out
                    wait = min(wait, max(0.0, self._valid_until - self.margin_s - time.monotonic()))
                await asyncio.sleep(wait)
        finally:
            if holding:
                await on_loss()

    async def _survive(self, callback: Callable[[], Awaitable[None]]) -> bool:
        """Run a gain or loss callback; a failure is logged and reported, never allowed to end ``keep``."""
        try:
            await callback()
        except Exception:
            log.exception("the %s lease's %s failed (holder %s)", self.name, callback.__name__, self.holder)
            return False
        return True

    async def release(self) -> None:
        """Hand the role on at once (clean shutdown) rather than after the expiry."""
        if self.held:
            self._valid_until = 0.0
            try:
                await self.meta.release_lease(self.name, self.holder)
            except Exception as exc:
                log.warning("could not release the %s lease: %s", self.name, exc)
