"""Event-loop plumbing shared by Apollo's processes: uvloop, and periodic steps that must not die."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("apollo")


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
