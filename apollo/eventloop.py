"""uvloop for every Apollo process: its C transports cut the per-write cost that bounds streaming."""

from __future__ import annotations

import logging

log = logging.getLogger("apollo")


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop not available; using the default asyncio loop")
        return
    uvloop.install()
