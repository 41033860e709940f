"""``apollo gateway``: the S3 front door of a cluster, itself a user of the native client.

Stateless: it holds a ``RemoteMeta`` (cluster map, service tokens) and streams object
bytes straight between S3 clients and storage nodes. While no metadata service answers,
``/health/ready`` answers 503 and requests fail at once with 503 ServiceUnavailable. Run as many as the network needs,
behind any load balancer; conditional writes are settled in the metadata database, so
two gateways racing on one key still have exactly one winner.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from apollo import __version__, limits, metrics
from apollo.client.context import ClientContext
from apollo.client.engine import ObjectEngine
from apollo.client.remote_meta import RemoteMeta
from apollo.console import add_console_routes
from apollo.eventloop import install_uvloop
from apollo.gateway.app import READY, build_app
from apollo.proto.layout import Scheme
from apollo.proto.routes import Wrap
from apollo.roles import log_shutdown
from apollo.roles.serving import serve
from apollo.roles.tls import ServingCerts, check_https, serving_certs

log = logging.getLogger("apollo.gateway")


@dataclass
class GatewayConfig:
    meta_url: str
    access_key: str  # a root key: the gateway checks S3 signatures with the secrets the service hands it
    secret_key: str
    host: str = "127.0.0.1"
    port: int = 9000
    scheme: Scheme = Scheme.parse("4+2")
    cell_size: int = limits.cell_size_bytes_default
    domain: str | None = None
    write_quorum: int | None = None  # default k+1
    client_limits: limits.ClientLimits = field(default_factory=limits.ClientLimits)
    # --certs: serve S3 over HTTPS only (DIR/public.crt, DIR/private.key); with the cluster CA in DIR/CAs,
    # also call the metadata service and the storage nodes over mutual TLS, presenting DIR/public.crt.
    certs: Path | None = None
    max_connections: int = 0  # --max-connections; 0: half the process's file-descriptor limit


async def build_gateway(config: GatewayConfig, certs: ServingCerts | None = None) -> web.Application:
    """The S3 app over a remote metadata service; built inside the running event loop (``run_app`` awaits it)."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    meta = RemoteMeta(config.meta_url, config.access_key, config.secret_key, session,
                      ssl_context=certs.client if certs else None)  # fmt: skip
    await meta.start(service=True)
    ctx = ClientContext(meta, meta.nodes, on_damage=[metrics.record_damage], on_decode=[metrics.ec_decoded_stripes.inc])
    engine = ObjectEngine(ctx, config.scheme, config.cell_size, config.write_quorum)
    def console(app: web.Application, wrap: Wrap) -> None:  # the map it routes by is what its overview shows
        add_console_routes(app, wrap, engine, None, cluster_map=lambda: meta.map)

    app = build_app(engine, config.domain, apollo_routes=console, client_limits=config.client_limits)
    # Not ready while no metadata service answers: load balancers send S3 clients to another gateway, and
    # apollo_meta_reachable tells the operator (readiness alone looks like a gateway problem).
    metrics.meta_reachable.set(1)  # start() returned: a service answered

    def availability(available: bool) -> None:
        app[READY][0] = available
        metrics.meta_reachable.set(1 if available else 0)

    meta.on_availability = availability

    async def close(app: web.Application) -> None:
        await meta.close()
        await session.close()

    app.on_cleanup.append(close)
    if certs is not None:
        certs.install(app)
    log_shutdown(app, log, "gateway")
    return app


def run(config: GatewayConfig) -> None:
    certs = None
    if config.certs:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload once the event loop runs; never an exit
        certs = serving_certs(config.certs, log, "apollo gateway", cluster=True)  # a bad pair: one line, exit 1
        if certs.client is not None:
            check_https(config.meta_url, "apollo gateway", "--meta")
    install_uvloop()
    metrics.serve_role("gateway")
    log.info("Apollo %s S3 gateway %s://%s:%d  metadata %s", __version__, "https" if certs else "http", config.host,
             config.port, config.meta_url)  # fmt: skip
    serve(build_gateway(config, certs), role="gateway", max_connections=config.max_connections, host=config.host,
          port=config.port, shutdown_timeout=limits.shutdown_grace_s, ssl_context=certs.context if certs else None)
