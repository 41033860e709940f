"""The all-in-one server: metadata, one storage node, client and S3 gateway in one process.

Start-up order: open the metadata database, check and attach drives (a
drive whose format file is missing or foreign is refused, never reused),
clear temp files of interrupted writes, release pending writes of dead
processes to GC, start the metadata journal, probe the drives once, then serve.
Background tasks: the drive probe and the journal flush, and on the manager
process repair, scrub and drive jobs (``apollo.cluster``), garbage collection
and metadata checkpoints.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from apollo import __version__, limits, metrics, tokens
from apollo.client.context import ClientContext
from apollo.client.engine import ObjectEngine
from apollo.client.writer import write_quorum
from apollo.cluster import admin
from apollo.cluster.keys import TokenKeys, ensure_first_key, install_root_key
from apollo.cluster.manager import BackgroundManager
from apollo.console import add_console_routes
from apollo.console.state import Directory
from apollo.eventloop import install_uvloop
from apollo.gateway.app import ApolloRoutes, build_app
from apollo.meta import journal
from apollo.meta.location import make_private, meta_target
from apollo.meta.lock import MetaDirInUse, MetaDirLock
from apollo.meta.rpc_service import MetaRpc, add_rpc_routes
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.cluster_map import NODE_NAME, SERVING_STATES, DriveRecord
from apollo.proto.drive_format import FORMAT_FILE
from apollo.proto.layout import Scheme
from apollo.proto.routes import Wrap
from apollo.roles import log_shutdown
from apollo.roles.serving import serve
from apollo.roles.tls import serving_certs
from apollo.storage.attach import attach_drives as open_drives
from apollo.storage.attach import clear_interrupted
from apollo.storage.drive import Drive
from apollo.storage.node import LocalStorageNode
from apollo.storage.service import add_shard_routes

log = logging.getLogger("apollo.server")
CONSOLE_DIR = "console"  # under the metadata directory: the workers' shared count of failed console logins


def default_scheme(drive_count: int) -> Scheme:
    """EC width follows the drive count; 1-2 drives can only replicate."""
    if drive_count <= 2:
        return Scheme("rep", 1, drive_count - 1)
    if drive_count == 3:
        return Scheme("ec", 2, 1)
    if drive_count < 6:
        return Scheme("ec", drive_count - 2, 2)
    if drive_count < 12:
        return Scheme("ec", 4, 2)
    return Scheme("ec", 8, 4)


@dataclass
class ServerConfig:
    drives: list[Path]
    meta_dir: Path
    host: str = "127.0.0.1"
    port: int = 9000
    scheme: Scheme | None = None
    cell_size: int = limits.cell_size_bytes_default
    domain: str | None = None
    root_user: str = ""
    root_password: str = ""
    gc_delay_s: float = limits.gc_deleted_data_delay_s
    drive_reserve_bytes: int = limits.drive_free_bytes_min  # placement skips drives with less free space
    upload_expiry_s: float = limits.upload_expiry_s_default
    txn_ttl_min_s: float = limits.txn_ttl_s_min  # --txn-ttl-min: the shortest transaction lifetime granted
    journal_checkpoint_interval_s: float = limits.journal_checkpoint_interval_s_default
    manager_lease_ttl_s: float = limits.manager_lease_ttl_s_default
    write_quorum: int | None = None  # shards durable before a write is acknowledged; None: k+1
    client_limits: limits.ClientLimits = field(default_factory=limits.ClientLimits)
    create_missing_drives: bool = False  # --dev, or no drives named: the default ./apollo-data/drive*
    # Set by the supervisor of ``--workers N`` (apollo/roles/workers.py); None for a single-process server.
    worker_index: int | None = None
    listen_fd: int | None = None
    owner: str | None = None
    advertise: str | None = None  # the URL native clients reach this server at; default http(s)://<address>
    certs: Path | None = None  # --certs: serve HTTPS only, with DIR/public.crt and DIR/private.key
    max_connections: int = 0  # --max-connections; 0: half the process's file-descriptor limit


def lease_holder(config: ServerConfig) -> str:
    """This process's name for the manager lease: host, metadata directory and worker slot.

    Stable across restarts, so a server (or a worker its supervisor restarts) that died holding
    the lease takes it straight back instead of waiting out the expiry. Safe because the
    directory's lock admits one server per directory, and the supervisor one worker per slot.
    """
    slot = "" if config.worker_index is None else f"#w{config.worker_index}"
    return f"{socket.gethostname()}:{config.meta_dir.resolve()}{slot}"


def open_store(meta_dir: Path | None = None, database: str | None = None) -> SqlStore:
    """The store of a metadata directory (SQLite in it, or the URL it names), or of a cluster's database URL."""
    if database is not None:
        return SqlStore(database)
    meta_dir.mkdir(parents=True, exist_ok=True)
    make_private(meta_dir)
    return SqlStore(meta_target(meta_dir))


def open_admin_store(meta_dir: Path) -> SqlStore:
    """The store of an admin command that changes the namespace (access keys): journaled like the server's."""
    store = open_store(meta_dir)
    if store.path is None:  # PostgreSQL: its own WAL and replication protect the namespace
        return store
    drives = [(r.drive_id, Path(r.path)) for r in store.list_drives()
              if r.node == NODE_NAME and r.state == "online" and (Path(r.path) / FORMAT_FILE).is_file()]  # fmt: skip
    if drives:  # no drives yet: nothing to recover the namespace onto either
        journal.enable(store, f"admin{os.getpid()}", drives)
    return store


def attach_drives(store: SqlStore, roots: list[Path], create_missing: bool = False) -> tuple[list[Drive], list[str]]:
    """Open every drive of the command line and every serving drive the database knows, by the rules of
    ``apollo.storage.attach``; record them.

    The database is the list of drives: an empty directory on the command line joins it as a new drive,
    ``apollo admin drive add`` adds one while the server runs, and only ``drive remove`` (after a drain)
    takes one out, for good, even if it stays on the command line. A drive the database serves that the
    command line does not name is still served, with a warning: the command line should say what the
    server uses. Missing directories are created only when ``create_missing`` (a development server's
    default drives); otherwise a missing mount point is an unmounted disk, never to be formatted.

    Returns (attached drives, problems).
    """
    deployment = store.get_setting("deployment_id")
    if deployment is None:
        deployment = uuid.uuid4().hex
        store.set_setting("deployment_id", deployment)
    records = store.list_drives()
    wanted = [root.resolve() for root in roots]
    unnamed = [Path(r.path) for r in records if r.node == NODE_NAME and r.state in SERVING_STATES
               and Path(r.path) not in wanted]  # fmt: skip
    for path in unnamed:
        log.warning("drive %s is in use but not on the command line (added with `apollo admin drive add`?): "
                    "add it there, or drain and remove it", path)  # fmt: skip
    known = {r.path: r.drive_id for r in records if r.state != "retired"}
    found = open_drives(wanted + unnamed, deployment, known, create_missing=create_missing,
                        removed=store.removed_drive_ids())  # fmt: skip
    states = {r.drive_id: r.state for r in records}
    attached, problems = [], found.problems
    for drive in found.drives:
        state = states.get(drive.drive_id, "online")
        if state not in SERVING_STATES:
            problems.append(f"drive {drive.root} (id {drive.drive_id}) is {state}; not serving it")
            continue
        store.put_drive(DriveRecord(drive.drive_id, NODE_NAME, str(drive.root), "online", 1.0), time.time())
        attached.append(drive)
    return attached, problems


def recover_interrupted_writes(store: SqlStore, drives: list[Drive], live_owner: str) -> None:
    """At start-up: temp files of unfinished writes go, and their segments' pending rows become due for GC."""
    clear_interrupted(drives)
    released = store.release_orphans(live_owner, time.time())
    if released:
        log.info("queued %d segments of interrupted writes for GC", released)


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = open_store(config.meta_dir)
        self.store.gc_delay_s = config.gc_delay_s
        self.store.txn_ttl_s_min = config.txn_ttl_min_s
        drives, problems = attach_drives(self.store, config.drives, config.create_missing_drives)
        for problem in problems:
            log.error("%s", problem)
        if not drives:
            raise SystemExit("no usable drives")
        self.drives = drives
        self.scheme = config.scheme or default_scheme(len(config.drives))
        if self.scheme.kind == "rep":
            log.warning("only %d drive(s): storing %d replica(s) instead of erasure coding; "
                        "add drives for real durability", len(config.drives), self.scheme.width)  # fmt: skip
        if self.scheme.width > len(config.drives):
            raise SystemExit(f"erasure code {self.scheme} needs {self.scheme.width} drives, have {len(config.drives)}")
        self.store.set_setting("scheme", str(self.scheme))  # for `apollo admin drive drain` checks
        self.node = LocalStorageNode(drives)
        self.meta = MetaService(self.store, owner=config.owner)
        # The drive journal protects a SQLite file; PostgreSQL has its own WAL, backups and replicas.
        self.journal = None if self.store.path is None else journal.enable(
            self.store, self.meta.owner, [(d.drive_id, d.root) for d in drives], on_error=metrics.journal_errors.inc
        )  # fmt: skip
        ctx = ClientContext(
            self.meta,
            {d: self.node for d in self.node.drive_ids()},
            on_damage=[metrics.record_damage],
            on_decode=[metrics.ec_decoded_stripes.inc],
        )
        try:
            self.client = ObjectEngine(
                ctx, self.scheme, config.cell_size, write_quorum(self.scheme, config.write_quorum)
            )
        except ValueError as exc:
            raise SystemExit(f"--write-quorum: {exc}") from None
        self.manager = BackgroundManager(
            ctx, self.node, self.store.get_setting("deployment_id") or "", holder=lease_holder(config),
            lease_ttl_s=config.manager_lease_ttl_s, reserve_bytes=config.drive_reserve_bytes,
            upload_expiry_s=config.upload_expiry_s,
        )  # fmt: skip
        if self.journal is not None:  # one checkpointer per deployment, as one garbage collector
            self.manager.duties.add(self._checkpoint_loop)
        if config.root_user:
            install_root_key(self.store, config.root_user, config.root_password)
        self.app = build_app(self.client, config.domain, apollo_routes=self._native_path(),
                             client_limits=config.client_limits)  # fmt: skip
        self.app.cleanup_ctx.append(self._background)

    def _native_path(self) -> ApolloRoutes:
        """The metadata API and the drives' shards for native clients, beside S3 on the same port, as a
        cluster's ``apollo meta`` and ``apollo storage`` serve them: ``Client(<this server's URL>, ...)``
        works here as against a cluster, with the same capability tokens.

        The cluster map names this server as node ``local`` at ``endpoint``; the drive probe keeps the
        node alive. Placement stays the server's own (every drive a failure domain), not the map's.
        """
        ensure_first_key(self.store)
        keyring = tokens.Keyring(self.store.token_keys())
        self.keys = TokenKeys(self.meta, keyring)
        self.manager.duties.add(self.keys.rotation_duty())
        rpc = MetaRpc(self.meta, keyring, self.config.drive_reserve_bytes, places=False)
        self.store.register_node(NODE_NAME, self.endpoint, "", [(d.drive_id, str(d.root)) for d in self.drives],
                                 time.time())  # fmt: skip
        self.manager.heartbeat = True

        def add(app: web.Application, wrap: Wrap) -> None:
            add_rpc_routes(app, rpc, wrap)
            add_shard_routes(app, self.node, keyring, wrap=wrap)
            # The console's overview is `apollo admin status`; on SQLite through its own connection, as the command's.
            status_store = self.store if self.store.path is None else SqlStore(self.store.path)
            shared = Path(self.config.meta_dir) / CONSOLE_DIR if self.config.worker_index is not None else None
            add_console_routes(app, wrap, self.client, lambda: admin.status(status_store), shared,
                               admin.ConsoleControls(status_store),
                               lambda: Directory(*admin.directory(status_store)))  # fmt: skip
            if status_store is not self.store:

                async def close_status_store(app: web.Application) -> None:
                    status_store.close()

                app.on_cleanup.append(close_status_store)

        return add

    @property
    def endpoint(self) -> str:
        """Where native clients and other hosts reach this server: ``--advertise``, else its address."""
        if self.config.advertise:
            return self.config.advertise.rstrip("/")
        host = self.config.host if self.config.host not in ("", "0.0.0.0", "::") else socket.gethostname()
        return f"{url_scheme(self.config)}://{host}:{self.config.port}"

    async def _background(self, app: web.Application):
        if self.config.worker_index is None:  # with workers, the supervisor did this before starting them
            # Runs during app start-up, before the socket accepts anything: nothing else uses the store yet.
            await asyncio.to_thread(recover_interrupted_writes, self.store, self.drives, self.meta.owner)
        tasks = await self.manager.start()
        tasks.append(asyncio.create_task(self.keys.refresh_forever()))
        if self.journal is not None:
            tasks.append(asyncio.create_task(self._journal_loop()))
        yield
        await self.manager.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.node.close()
        self.meta.close()

    def _journal_drives(self) -> list[tuple[str, Path]]:
        """Drives journal records may go to: writable ones as of the last probe (all attached before the first)."""
        attached = list(self.node.drives.values())
        writable = [d for d in attached if d.drive_id in self.manager.drives.writable]
        return [(d.drive_id, d.root) for d in writable or attached]

    async def _journal_loop(self) -> None:
        """Follow drive health, and fsync the journal appends of the last second."""
        while True:
            await asyncio.sleep(limits.journal_flush_interval_s)
            try:
                self.journal.files.set_drives(self._journal_drives())
                await asyncio.to_thread(self.journal.files.flush)
            except Exception:
                log.exception("metadata journal flush failed")

    async def _checkpoint_loop(self) -> None:
        """A checkpoint at once if a journal drive has none (a new deployment, a replaced drive), then periodically."""
        self.journal.files.set_drives(self._journal_drives())
        missing = any(not journal.checkpoints(root) for _, root in self.journal.files.targets())
        wait = 0.0 if missing else self.config.journal_checkpoint_interval_s
        while True:
            await asyncio.sleep(wait)
            wait = self.config.journal_checkpoint_interval_s
            try:
                await asyncio.to_thread(self._checkpoint)
            except Exception:
                log.exception("metadata checkpoint failed")

    def _checkpoint(self) -> None:
        """Runs on a thread: the copy takes as long as the database is large, and must not stall requests."""
        roots = [root for _, root in self.journal.files.targets()]
        result = journal.checkpoint(Path(self.store.path), roots, [d.root for d in self.node.drives.values()])
        seqs = ", ".join(str(seq) for seq in sorted({seq for seq, _ in result.written})) or "-"
        log.info("metadata checkpoint at journal seq %s on %d drives; removed %d old checkpoints, %d journal files",
                 seqs, len(result.written), result.checkpoints_removed, result.journal_files_removed)  # fmt: skip


def url_scheme(config: ServerConfig) -> str:
    """``https`` with ``--certs``: the port then speaks nothing else, so banners and the advertised URL say so."""
    return "https" if config.certs else "http"


def lock_meta_dir(meta_dir: Path) -> MetaDirLock:
    """Refuse to start beside another server (or a restore) on the same metadata directory."""
    try:
        return MetaDirLock(meta_dir, "an Apollo server")
    except MetaDirInUse as exc:
        raise SystemExit(str(exc)) from None


def run(config: ServerConfig) -> None:
    certs = None
    if config.certs:
        # Until the event loop takes SIGHUP over (a reload), one sent early must not end the process.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # First: a bad pair is one line and exit 1 before the database or a drive is touched.
        certs = serving_certs(config.certs, log, "apollo server")
    # Held while the process lives (the kernel drops it on exit, even after kill -9); workers run under
    # their supervisor's.
    lock = lock_meta_dir(config.meta_dir) if config.worker_index is None else None
    install_uvloop()
    server = Server(config)
    if certs is not None:
        certs.install(server.app)
    if config.worker_index is None:
        log.info("Apollo %s S3 endpoint %s://%s:%d  drives=%d  scheme=%s  meta=%s", __version__, url_scheme(config),
                 config.host, config.port, len(server.drives), server.scheme, config.meta_dir)  # fmt: skip
        log_shutdown(server.app, log, "server")
    else:
        log.info("Apollo %s worker %d (pid %d) serving", __version__, config.worker_index, os.getpid())
        log_shutdown(server.app, log, f"worker {config.worker_index}")
    if config.listen_fd is not None:  # a worker: the supervisor's listening socket, shared by all workers
        listen = {"sock": socket.socket(fileno=config.listen_fd)}
    else:
        listen = {"host": config.host, "port": config.port}
    serve(server.app, role="server", max_connections=config.max_connections, **listen,
          shutdown_timeout=limits.shutdown_grace_s, ssl_context=certs.context if certs else None)  # fmt: skip
    if lock is not None:
        lock.release()
