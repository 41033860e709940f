"""``apollo meta``: the metadata service of a cluster. Stateless: everything is in the database.

Any number run side by side on one PostgreSQL database; clients and gateways may use
any of them. Each keeps the token keyring in step with the database (a key another
instance added verifies here within seconds: ``apollo.cluster.keys``), follows the cluster map, and
competes for the manager lease. The holder runs the duties of ``apollo.cluster.duties``
(as the all-in-one server's manager does): it turns heartbeats into drive states (a node
silent past the grace fails its drives), walks failed drives and rebuilds their shards
on the storage nodes, scrubs and rebalances, publishes repair progress, collects garbage
(all with service tokens it signs itself), expires abandoned uploads, adds a new token
key every ``tokens.ROTATE_S`` and drops keys no token can still need.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from apollo import __version__, limits, metrics, tokens
from apollo.client.context import ClientContext
from apollo.client.directory import NodeDirectory
from apollo.client.remote_storage import Timeouts
from apollo.cluster.duties import ManagerDuties
from apollo.cluster.keys import TokenKeys, ensure_first_key, install_root_key
from apollo.cluster.remote_drives import ClusterDrives
from apollo.cluster.tuning import SETTING_PREFIX
from apollo.eventloop import every, install_uvloop
from apollo.meta.async_sql import AsyncSql
from apollo.meta.engine import PostgresEngine
from apollo.meta.rpc_service import MetaRpc, build_meta_app
from apollo.meta.service import MetaService
from apollo.meta.standby import PostgresStandbyEngine, StandbyReads
from apollo.meta.store import SqlStore
from apollo.roles import log_shutdown
from apollo.roles.serving import serve
from apollo.roles.tls import ServingCerts, serving_certs

# A cluster's own default: the lease holder's pass checks that every shard the metadata names is present and
# whole (no cell crosses the network), while each storage node reads every cell of its drives.
SCRUB_MODE = SETTING_PREFIX + "scrub_mode"
log = logging.getLogger("apollo.meta")


@dataclass
class MetaConfig:
    database: str  # postgresql:// URL (or a SQLite path, for a single metadata process)
    host: str = "127.0.0.1"
    port: int = 9100
    root_user: str = ""
    root_password: str = ""
    drive_reserve_bytes: int = limits.drive_free_bytes_min
    manager_lease_ttl_s: float = limits.manager_lease_ttl_s_default
    gc_delay_s: float = limits.gc_deleted_data_delay_s
    upload_expiry_s: float = limits.upload_expiry_s_default
    txn_ttl_min_s: float = limits.txn_ttl_s_min  # --txn-ttl-min: the shortest transaction lifetime granted
    certs: Path | None = None  # --certs: mutual TLS (DIR/public.crt, DIR/private.key, the cluster CA in DIR/CAs)
    max_connections: int = 0  # --max-connections; 0: half the process's file-descriptor limit
    standby_reads: bool = False  # --standby-reads: lookups and listings offered to PostgreSQL standbys first


class MetaProcess:
    def __init__(self, config: MetaConfig, certs: ServingCerts | None = None) -> None:
        """``certs``: the port's TLS and, for the calls to storage nodes (repair, scrub, GC), this
        service's client certificate and the cluster CA."""
        self.config = config
        self.certs = certs
        self.store = SqlStore(config.database)
        self.store.gc_delay_s = config.gc_delay_s
        self.store.txn_ttl_s_min = config.txn_ttl_min_s
        if self.store.get_setting("deployment_id") is None:
            self.store.set_setting("deployment_id", uuid.uuid4().hex)
        ensure_first_key(self.store)
        if self.store.get_setting(SCRUB_MODE) is None:  # storage nodes deep-scrub their own drives, locally
            self.store.set_setting(SCRUB_MODE, "shallow")
        if config.root_user:
            install_root_key(self.store, config.root_user, config.root_password)
        # Lookups and small commits on PostgreSQL run on the event loop, not a thread each (``apollo.meta.async_sql``).
        async_sql = AsyncSql(self.store.engine) if isinstance(self.store.engine, PostgresEngine) else None
        self.meta = MetaService(self.store, standby=self._standby_reads(config), async_sql=async_sql)
        self.keyring = tokens.Keyring(self.store.token_keys())
        self.keys = TokenKeys(self.meta, self.keyring)
        self.rpc = MetaRpc(self.meta, self.keyring, config.drive_reserve_bytes)
        self.app = build_meta_app(self.rpc)
        self.app.cleanup_ctx.append(self._background)
        if certs is not None:
            certs.install(self.app)

    def _standby_reads(self, config: MetaConfig) -> StandbyReads | None:
        if not config.standby_reads:
            return None
        if not isinstance(self.store.engine, PostgresEngine):
            raise SystemExit("apollo meta: --standby-reads needs a PostgreSQL database (a postgresql:// URL)")
        return StandbyReads(self.store, PostgresStandbyEngine(config.database, self.store.engine.pool_size))

    async def _background(self, app: web.Application):
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.directory = NodeDirectory(session, self._service_token, Timeouts(),
                                       ssl_context=self.certs.client if self.certs else None)  # fmt: skip
        self.drives = ClusterDrives(self.meta, self.rpc.cluster_map)
        ctx = ClientContext(self.meta, self.directory.nodes)
        holder = f"meta@{socket.gethostname()}:{self.config.port}"
        self.duties = ManagerDuties(ctx, self.drives, holder, self.config.manager_lease_ttl_s)
        # Over the network: scrub reads every shard at its paced rate (a node-local scrubber would not), the
        # orphan sweep lists the nodes' drives.
        self.duties.add_healing(ctx, lambda: self.directory.nodes, self.config.upload_expiry_s)
        self.duties.add(self.drives.run_forever)
        self.duties.add(self.keys.rotation_duty())
        loops = (self.keys.refresh_forever(),
                 every(limits.cluster_map_refresh_s, self._follow_map, "cluster map refresh", at_once=True),
                 self.duties.keep())  # fmt: skip
        tasks = [asyncio.create_task(loop) for loop in loops]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.duties.stop()
        self.directory.close()
        await session.close()
        await self.meta.aclose()

    def _service_token(self, op: str, segment_id: str) -> str:
        return self.keyring.issue(op, tokens.ANY_SEGMENT, tokens.SERVICE_TOKEN_TTL_S)

    async def _follow_map(self) -> None:
        """Placement and the garbage collector follow the cluster map."""
        self.directory.update(await self.rpc.cluster_map())


def run(config: MetaConfig) -> None:
    certs = None
    if config.certs:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload once the event loop runs; never an exit
        # First: a bad directory is one line and exit 1 before the database is touched.
        certs = serving_certs(config.certs, log, "apollo meta", require_client_certs=True)
    install_uvloop()
    metrics.serve_role("meta")
    process = MetaProcess(config, certs)
    log.info("Apollo %s metadata service %s://%s:%d  database=%s", __version__, "https" if certs else "http",
             config.host, config.port, process.store.engine.name)  # fmt: skip
    log_shutdown(process.app, log, "metadata service")
    serve(process.app, role="meta", max_connections=config.max_connections, host=config.host, port=config.port,
          ssl_context=certs.context if certs else None)  # fmt: skip
