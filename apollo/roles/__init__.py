"""The processes Apollo runs: the all-in-one server (and the supervisor of its ``--workers``), and the cluster
roles ``apollo meta``, ``apollo storage`` and ``apollo gateway``.

Each role logs under its own name (``apollo.server``, ``apollo.meta``, ``apollo.storage``, ``apollo.gateway``),
starts with a banner that names the Apollo version, and says when a shutdown starts and when it is over
(``log_shutdown``), so an operator tells a slow stop (requests finishing) from a hung one.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web


def log_shutdown(app: web.Application, log: logging.Logger, what: str) -> None:
    """Log when ``app`` starts shutting down and when it is done; call it after every other ``on_cleanup``
    hook is added, so that the last line comes after all of them.

    aiohttp stops accepting connections, then runs ``on_shutdown``, lets requests in flight finish (up to the
    shutdown timeout), then runs ``on_cleanup`` (``cleanup_ctx`` first, hooks in the order added).
    """
    started: list[float] = []

    async def starting(app: web.Application) -> None:
        started.append(time.monotonic())
        log.info("%s shutting down: no new connections; finishing the requests in flight", what)

    async def done(app: web.Application) -> None:
        took = f" in {time.monotonic() - started[0]:.1f} s" if started else ""  # none if it never started
        log.info("%s shut down%s", what, took)

    app.on_shutdown.append(starting)
    app.on_cleanup.append(done)
