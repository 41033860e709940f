"""The console's routes under ``/_apollo/console/``, added beside S3 by the server that hosts it.

Routes are one table, ``ROUTES``: method, path under ``PREFIX``, view, and how its CSRF token is
checked. Every route is wrapped twice: by ``errors_to_pages`` (one table turns ``apollo.errors``
into an error page with a status) and by the host's ``wrap`` (the all-in-one server's hands a
virtual-host request to S3, where ``/_apollo/...`` is an ordinary key).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from apollo import errors
from apollo.client.engine import ObjectEngine
from apollo.console import auth, views
from apollo.console.render import PREFIX, SECURITY_HEADERS, esc, page, redirect, static, url
from apollo.console.state import Console, Controls, DirectorySource, StatusSource
from apollo.proto.cluster_map import ClusterMap
from apollo.proto.routes import Handler, Wrap

# (method, path under PREFIX, view, CSRF check: "form" or "stream"; see auth.guarded)
ROUTES: list[tuple[str, str, auth.View, str]] = [
    ("GET", "/", views.overview, "form"),
    ("GET", "/activity", views.activity, "form"),
    ("GET", "/keys", views.keys, "form"),
    ("GET", "/buckets", views.buckets, "form"),
    ("GET", "/buckets/{bucket}", views.objects, "form"),
    ("GET", "/buckets/{bucket}/download", views.download, "form"),
    ("GET", "/buckets/{bucket}/versions", views.versions, "form"),
    ("POST", "/buckets/{bucket}/upload", views.upload, "stream"),
    ("POST", "/background", views.background, "form"),
    ("POST", "/logout", auth.logout, "form"),
]

# The first matching class wins: what the console answers for an error of the object engine.
ERROR_PAGES: list[tuple[type[Exception], int, str]] = [
    (errors.NotFound, 404, "Not found"),
    (errors.EntityTooLarge, 413, "Too large"),
    (errors.InvalidRequest, 400, "Invalid request"),
    (errors.Conflict, 409, "Conflict"),
    (errors.AccessDenied, 403, "Access denied"),
    (errors.InsufficientStorage, 507, "Not enough drives"),
    (errors.MetadataUnavailable, 503, "Metadata unavailable"),
    (errors.StorageError, 503, "Storage unavailable"),
]


def errors_to_pages(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def route(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.ApolloError as exc:
            for cls, status, title in ERROR_PAGES:
                if isinstance(exc, cls):
                    back = f'<p><a href="{esc(url("/"))}">Back to the overview</a></p>'
                    return page(title, f'<p class="error">{esc(exc)}</p>{back}', status=status)
            raise

    return route


async def _static(request: web.Request) -> web.Response:
    body = static(request.match_info["name"])
    if body is None:
        raise web.HTTPNotFound()
    kind = "text/css" if request.match_info["name"].endswith(".css") else "application/octet-stream"
    return web.Response(body=body, content_type=kind, headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})


async def _to_overview(request: web.Request) -> web.Response:
    raise redirect(url("/"))


def add_console_routes(app: web.Application, wrap: Wrap, engine: ObjectEngine, status: StatusSource | None,
                       shared_dir: Path | None = None, controls: Controls | None = None,
                       directory: DirectorySource | None = None,
                       cluster_map: Callable[[], ClusterMap] | None = None) -> Console:  # fmt: skip
    """Serve the console in ``app``: ``engine`` for objects and sessions (the metadata store's, so every
    gateway and worker knows them), ``status()`` (blocking) for the overview, ``shared_dir`` for the failed
    logins every worker of a ``--workers`` server counts together, ``controls`` for the
    background work's rates and passes, ``directory()`` (blocking) for the keys page. A gateway gives no
    status, controls or directory (it holds no database) but its ``cluster_map`` for the overview.

    Call before the S3 catch-all route is added (``build_app``'s ``apollo_routes`` hook is that place).
    """
    console = Console(engine, status, shared_dir, controls, directory, cluster_map)

    def add(method: str, path: str, handler: Handler) -> None:
        app.router.add_route(method, PREFIX + path, wrap(errors_to_pages(handler)))

    add("GET", "", _to_overview)
    add("GET", "/login", functools.partial(auth.login_form, console))
    add("POST", "/login", functools.partial(auth.login, console))
    add("GET", "/static/{name}", _static)
    for method, path, view, csrf in ROUTES:
        add(method, path, auth.guarded(console, view, csrf))

    app.cleanup_ctx.append(console.activity.sampling)

    async def close(app: web.Application) -> None:
        console.close()

    app.on_cleanup.append(close)
    return console
