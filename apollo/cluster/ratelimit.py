"""Pacing for background work (repair, scrub) so foreground requests keep their latency."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """``await take(n)`` returns once ``n`` more units fit the rate; a rate of 0 means unlimited.

    A virtual clock (``_next``) advances by ``n / rate`` per take and the caller sleeps until
    it catches up. Idle time earns at most ``burst_s`` of credit, so a quiet minute does not
    turn into a burst that starves foreground traffic. The rate may change at any time.
    """

    def __init__(self, rate: float, burst_s: float = 0.2) -> None:
        self.rate = rate
        self.burst_s = burst_s
        self._next = time.monotonic()

    async def take(self, amount: float) -> None:
        if self.rate <= 0 or amount <= 0:
            return
        now = time.monotonic()
        self._next = max(self._next, now - self.burst_s) + amount / self.rate
        delay = self._next - now
        if delay > 0:
            await asyncio.sleep(delay)
