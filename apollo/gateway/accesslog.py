"""The access log: one line per S3 request, written in batches and never more than a second late.

A write per line cost ~6% of a small GET, so lines collect in a buffer of ``BUFFER_RECORDS``; every
app that serves S3 (the all-in-one server, ``apollo gateway``) flushes it every ``FLUSH_S`` and at
shutdown, so the log keeps up with traffic and a kill -9 loses at most a second of lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
from collections.abc import AsyncIterator

from aiohttp import web

access_log = logging.getLogger("apollo.access")
BUFFER_RECORDS = 256
FLUSH_S = 1.0


def buffer_lines() -> None:
    """Send access-log lines through a buffer in front of the process's log handler (once per process)."""
    root_handlers = logging.getLogger().handlers
    if root_handlers and not access_log.handlers:
        access_log.addHandler(logging.handlers.MemoryHandler(BUFFER_RECORDS, logging.WARNING, root_handlers[0]))
        access_log.propagate = False


def _flush() -> None:
    for handler in access_log.handlers:
        handler.flush()


async def _flush_forever() -> None:
    while True:
        await asyncio.sleep(FLUSH_S)
        _flush()


async def flushing(app: web.Application) -> AsyncIterator[None]:
    """An app's ``cleanup_ctx``: flush every second while it serves, and once more when it stops."""
    task = asyncio.create_task(_flush_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    _flush()
