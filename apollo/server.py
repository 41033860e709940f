"""The all-in-one server: metadata, one storage node, client and S3 gateway in one process.

Start-up order: open the metadata database, check and attach drives (a
drive whose format file is missing or foreign is refused, never reused),
clear temp files of interrupted writes, release pending writes of dead
processes to GC, then serve. Background tasks: drive health/free-space
probe and garbage collection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from apollo import limits
from apollo.client.context import ClientContext
from apollo.client.core import ApolloClient
from apollo.gateway import metrics
from apollo.gateway.app import build_app
from apollo.meta.placement import Candidate
from apollo.meta.service import MetaService
from apollo.meta.sql_admin import DriveRecord
from apollo.meta.store import SqlStore
from apollo.storage.drive import Drive, format_drive, read_format
from apollo.storage.ec import Scheme
from apollo.storage.node import LocalStorageNode

log = logging.getLogger("apollo.server")
NODE_NAME = "local"
HEALTH_INTERVAL_S = 2.0


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
    # Set by the supervisor of ``--workers N`` (apollo/workers.py); None for a single-process server.
    worker_index: int | None = None
    listen_fd: int | None = None
    owner: str | None = None


def open_store(meta_dir: Path) -> SqlStore:
    meta_dir.mkdir(parents=True, exist_ok=True)
    return SqlStore(meta_dir / "apollo.db")


def attach_drives(store: SqlStore, roots: list[Path]) -> tuple[list[Drive], list[str]]:
    """Open every drive; format new empty ones. Returns (attached drives, problems)."""
    deployment = store.get_setting("deployment_id")
    if deployment is None:
        deployment = uuid.uuid4().hex
        store.set_setting("deployment_id", deployment)
    known = {record.path: record for record in store.list_drives()}
    attached, problems = [], []
    for root in roots:
        path = str(root.resolve())
        info = read_format(root) if root.exists() else None
        if info is None and path in known:
            problems.append(f"drive {path} (id {known[path].drive_id}) lost its format file: wiped or replaced; "
                            "it will not be used until it is replaced with `apollo admin drive replace`")  # fmt: skip
            continue
        if info is None:
            if root.exists() and any(root.iterdir()):
                problems.append(f"drive {path} is not empty and not an Apollo drive; refusing to format it")
                continue
            drive_id = format_drive(root, deployment)
            store.put_drive(DriveRecord(drive_id, NODE_NAME, path, "online", 1.0), time.time())
            log.info("formatted new drive %s as %s", path, drive_id)
        try:
            drive = Drive(root, deployment)
        except Exception as exc:
            problems.append(str(exc))
            continue
        store.put_drive(DriveRecord(drive.drive_id, NODE_NAME, path, "online", 1.0), time.time())
        attached.append(drive)
    return attached, problems


def recover_interrupted_writes(store: SqlStore, drives: list[Drive], live_owner: str) -> None:
    """At start-up: temp files of unfinished writes go, and their segments' pending rows become due for GC."""
    for drive in drives:
        removed = drive.clear_tmp()
        if removed:
            log.info("drive %s: removed %d temp files of interrupted writes", drive.root, removed)
    released = store.release_orphans(live_owner, time.time())
    if released:
        log.info("queued %d segments of interrupted writes for GC", released)


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = open_store(config.meta_dir)
        self.store.gc_delay_s = config.gc_delay_s
        drives, problems = attach_drives(self.store, config.drives)
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
        self.node = LocalStorageNode(drives)
        self.meta = MetaService(self.store, owner=config.owner)
        ctx = ClientContext(
            self.meta,
            {d: self.node for d in self.node.drive_ids()},
            on_damage=[metrics.record_damage],
            on_decode=[metrics.ec_decoded_stripes.inc],
        )
        self.known_drive_ids = [r.drive_id for r in self.store.list_drives()]
        self.client = ApolloClient(ctx, self.scheme, config.cell_size)
        if config.root_user:
            self.store.put_key(config.root_user, config.root_password, time.time(), is_root=True)
        self.app = build_app(self.client, config.domain)
        self.app.cleanup_ctx.append(self._background)
        self._probe_drives()

    def _probe_drives(self) -> None:
        """Health and free space of every drive; placement only uses healthy drives with room."""
        candidates, writable = [], set()
        for drive_id in self.known_drive_ids:
            candidates.append(Candidate(drive_id, NODE_NAME))
            drive = self.node.drives.get(drive_id)
            healthy = drive is not None and drive.is_healthy()
            free = drive.usage()[0] if healthy else 0
            if healthy and free >= limits.drive_free_bytes_min:
                writable.add(drive_id)
            metrics.drive_up.labels(drive_id, str(drive.root) if drive else "").set(1 if healthy else 0)
            metrics.drive_free_bytes.labels(drive_id).set(free)
        if writable != self.meta.writable:
            log.info("writable drives: %d of %d", len(writable), len(candidates))
        self.meta.set_drives(candidates, writable)

    async def _background(self, app: web.Application):
        if self.config.worker_index is None:  # with workers, the supervisor did this before starting them
            # Runs during app start-up, before the socket accepts anything: nothing else uses the store yet.
            await asyncio.to_thread(recover_interrupted_writes, self.store, self.drives, self.meta.owner)
        loops = [self._health_loop, self._flush_logs_loop]
        if self.config.worker_index in (None, 0):  # one garbage collector per server
            loops.append(self._gc_loop)
        tasks = [asyncio.create_task(loop()) for loop in loops]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.node.close()
        self.meta.close()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            await asyncio.to_thread(self._probe_drives)
            metrics.repair_backlog.set(self.meta.reader.repair_backlog())  # one COUNT on the read connection

    @staticmethod
    async def _flush_logs_loop() -> None:
        """Buffered log handlers (the access log) reach the log within a second."""
        try:
            while True:
                await asyncio.sleep(1.0)
                for handler in logging.getLogger("apollo.access").handlers:
                    handler.flush()
        finally:
            for handler in logging.getLogger("apollo.access").handlers:
                handler.flush()

    async def _gc_loop(self) -> None:
        while True:
            try:
                await self.collect_garbage()
            except Exception:
                log.exception("garbage collection pass failed")
            await asyncio.sleep(limits.gc_interval_s)

    async def collect_garbage(self) -> int:
        """Delete shard files of due garbage rows, then forget the rows."""
        batch = await self.meta.due_garbage(time.time(), 256)
        for item in batch:
            layout = item.layout
            for index, drive_id in enumerate(layout.drives):
                if drive_id in self.node.drives:
                    try:
                        if await self.node.delete(drive_id, layout.shard(index)):
                            metrics.gc_deleted_shards.inc()
                    except OSError:
                        log.warning("GC could not delete shard %d of %s on %s", index, layout.segment_id, drive_id)
        if batch:
            await self.meta.forget_garbage([item.layout.segment_id for item in batch])
        return len(batch)


def run(config: ServerConfig) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        log.warning("uvloop not available; using the default asyncio loop")
    server = Server(config)
    if config.worker_index is None:
        log.info("Apollo S3 endpoint http://%s:%d  drives=%d  scheme=%s  meta=%s", config.host, config.port,
                 len(server.drives), server.scheme, config.meta_dir)  # fmt: skip
    else:
        log.info("worker %d (pid %d) serving", config.worker_index, os.getpid())
    if config.listen_fd is not None:  # a worker: the supervisor's listening socket, shared by all workers
        listen = {"sock": socket.socket(fileno=config.listen_fd)}
    else:
        listen = {"host": config.host, "port": config.port}
    web.run_app(server.app, **listen, print=None, access_log=None, shutdown_timeout=limits.shutdown_grace_s)
