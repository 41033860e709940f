"""Running a role's web app until SIGTERM/SIGINT, with a cap on the connections it holds open.

aiohttp's ``web.run_app`` offers no hook between building its server and accepting connections, so this is
its loop on aiohttp's public runner API (``AppRunner``, ``TCPSite``, ``SockSite``) plus the cap: what every
connection costs (a file descriptor, buffers, a protocol object) is held by idle keep-alive connections and
half-sent request heads too, which the per-key and per-process request limits (``apollo.gateway.admission``)
do not see. Past ``--max-connections`` open ones (``connections_max``), a new connection is closed as it
arrives (nginx's ``worker_connections`` does the same) and counted in ``apollo_refused_connections_total``;
the process keeps its descriptors for the connections it serves.

Shutdown is aiohttp's: a signal raises ``GracefulExit`` in the loop, the main task is cancelled and
``runner.cleanup()`` closes the listeners, lets requests in flight finish within ``shutdown_timeout`` and
runs the app's cleanup contexts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
from collections.abc import Awaitable

from aiohttp import web

from apollo import metrics

log = logging.getLogger("apollo.serving")
CONNECTIONS_MIN = 64
CONNECTIONS_DEFAULT_MAX = 65536
FDS_MAX = 1 << 20  # what "unlimited" descriptors are taken as


class ConnectionCap:
    """Counts the connections of one aiohttp ``web.Server`` and closes those past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def attach(self, server: web.Server) -> None:
        """Wrap the server's connection callbacks (its request handlers call them on their manager)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler, transport) -> None:
            made(handler, transport)
            self.open += 1
            if self.open > self.limit:
                metrics.refused_connections.inc()
                transport.abort()  # connection_lost follows, and counts it out

        def connection_lost(handler, exc) -> None:
            self.open -= 1
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]


async def _serve(app: web.Application | Awaitable[web.Application], cap: ConnectionCap,
                 sites: dict[str, object], shutdown_timeout: float) -> None:  # fmt: skip
    if not isinstance(app, web.Application):
        app = await app
    runner = web.AppRunner(app, handle_signals=True, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        cap.attach(runner.server)
        ssl_context = sites.get("ssl_context")
        if sites.get("sock") is not None:
            site: web.BaseSite = web.SockSite(runner, sites["sock"], ssl_context=ssl_context, backlog=1024)
        else:
            site = web.TCPSite(runner, sites.get("host"), sites.get("port"), ssl_context=ssl_context, backlog=1024)
        await site.start()
        await asyncio.Event().wait()  # until a signal's GracefulExit cancels this task
    finally:
        await runner.cleanup()


def connections_max(given: int) -> int:
    """``--max-connections``, or by default half the file-descriptor limit (raised to the hard limit first,
    as MinIO and Go programs do: the soft default of 1024 is far below what a storage server holds); the
    other half is for drives' files, the database and the connections this process opens itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else FDS_MAX
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if given > 0:
        return given
    limit = FDS_MAX if soft == resource.RLIM_INFINITY else soft
    return max(CONNECTIONS_MIN, min(CONNECTIONS_DEFAULT_MAX, limit // 2))


def serve(app: web.Application | Awaitable[web.Application], *, role: str, max_connections: int = 0,
          shutdown_timeout: float = 60.0, host: str | None = None, port: int | None = None,
          sock: socket.socket | None = None, ssl_context: ssl.SSLContext | None = None) -> None:  # fmt: skip
    """Serve ``app`` (or the app a coroutine builds inside the loop) until SIGTERM/SIGINT. ``shutdown_timeout``:
    how long requests in flight may finish (aiohttp's default, 60 s, unless the role says)."""
    cap = ConnectionCap(connections_max(max_connections))
    log.info("%s: at most %d connections (--max-connections)", role, cap.limit)
    sites = {"host": host, "port": port, "sock": sock, "ssl_context": ssl_context}
    loop = asyncio.new_event_loop()  # the policy's: uvloop (apollo.eventloop.install_uvloop)
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, cap, sites, shutdown_timeout))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))  # runner.cleanup()
        _cancel_the_rest(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


def _cancel_the_rest(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
