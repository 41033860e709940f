"""Background passes that run every so often or on request, and survive restarts mid-way.

A pass (a scrub, an orphan sweep) walks something large a page at a time. Its
progress lives in the ``settings`` table as JSON under ``<name>.state``
(``{"current": {...}}`` while running, ``{"last": {...}}`` after), saved after
every page, so a restarted server resumes the pass rather than starting over.
A pass starts ``interval_s`` after the previous one started, or when an
operator writes a new timestamp to ``<name>.requested``; the pass records the
request it serves, so ``--wait`` knows when its request is done. A pass that
left work for a follow-up (the rebalancer, after planning moves off crowded
failure domains, measures again once they are done) ends with ``again`` set,
and the next pass starts at once without touching the operators' requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from apollo.meta.service import MetaService

log = logging.getLogger("apollo.passes")


def state_setting(name: str) -> str:
    return f"{name}.state"


def request_setting(name: str) -> str:
    return f"{name}.requested"


class PeriodicPass(ABC):
    name = ""

    def __init__(self, meta: MetaService, interval_s: float) -> None:
        self.meta = meta
        self.interval_s = interval_s
        self.state: dict = {}
        # Rereads the knobs before a pass starts, so `apollo admin sweep --min-age 0 --now` applies to that pass.
        self.retune: Callable[[], Awaitable[None]] | None = None

    @abstractmethod
    async def begin(self) -> dict:
        """Fields of a new pass (its cursor and counters)."""

    @abstractmethod
    async def advance(self, current: dict) -> bool:
        """Do one page of work, updating ``current``; True when the pass is complete."""

    def summary(self, current: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in current.items() if isinstance(v, int))

    async def run_forever(self) -> None:
        raw = await self.meta.get_setting(state_setting(self.name))
        self.state = json.loads(raw) if raw else {}
        if self.state.get("current"):
            log.info("resuming the %s pass started %s: %s", self.name, time.ctime(self.state["current"]["started"]),
                     self.summary(self.state["current"]))  # fmt: skip
        while True:
            try:
                if not await self.step():
                    await asyncio.sleep(1.0)
            except Exception:
                log.exception("%s pass step failed", self.name)
                await asyncio.sleep(5.0)

    async def step(self) -> bool:
        """One page of the current pass, starting one if due; False when idle."""
        current = self.state.get("current")
        if current is None:
            requested = float(await self.meta.get_setting(request_setting(self.name)) or 0)
            last = self.state.get("last", {})
            due = time.time() >= last.get("started", 0.0) + self.interval_s or last.get("again", False)
            if not (due or requested > last.get("request", 0.0)):
                return False
            if self.retune is not None:
                await self.retune()
            current = self.state["current"] = {"started": time.time(), "request": requested, **await self.begin()}
            log.info("%s pass started: %s", self.name, self.summary(current))
        if await self.advance(current):
            current["finished"] = time.time()
            self.state = {"last": current}
            log.info("%s pass done in %.1f s: %s", self.name, current["finished"] - current["started"],
                     self.summary(current))  # fmt: skip
        await self.meta.set_setting(state_setting(self.name), json.dumps(self.state))
        return True
