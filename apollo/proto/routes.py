"""Where Apollo's own HTTP APIs live, and the app a role serves them in.

Every Apollo route is under ``INTERNAL_PREFIX``, which no S3 request can use: a path-style
request starts with a bucket name, and a bucket name starts with a letter or a digit. So the
all-in-one server serves the metadata API and its drives' shards beside S3 on one port, as
``apollo meta`` and ``apollo storage`` serve them on theirs, at the same paths.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from apollo import metrics

INTERNAL_PREFIX = "/_apollo"
RPC_PREFIX = INTERNAL_PREFIX + "/rpc/"  # POST + <call name>: the metadata API (apollo.proto.meta_api)
SHARDS_PREFIX = INTERNAL_PREFIX + "/shards"  # + /{drive}/{pg}/{segment}/{index}: a storage node's shards
REBUILD = INTERNAL_PREFIX + "/rebuild"  # POST: a storage node rebuilds shards of a segment for the manager
REBUILD_BODY_BYTES_MAX = 16 * 1024  # a layout and two small maps: far less


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Wrap = Callable[[Handler], Handler]  # what a host app puts around each Apollo route (the S3 server: see add_to)


def unwrapped(handler: Handler) -> Handler:
    return handler


def role_app(client_max_size: int) -> web.Application:
    """The app of a role that serves only Apollo's APIs: health and metrics; the caller adds its routes.

    ``client_max_size`` bounds what a handler may read whole.
    """
    app = web.Application(client_max_size=client_max_size)
    app.router.add_get("/health/live", _live)
    app.router.add_get("/metrics", _metrics)
    return app


async def _live(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _metrics(request: web.Request) -> web.Response:
    return metrics.response()
