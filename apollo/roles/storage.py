"""``apollo storage DIR...``: a storage node of a cluster.

At start it asks the metadata service for the deployment, formats new empty drives for
it, registers itself (name, endpoint, rack) with its drives, then heartbeats every
``limits.node_heartbeat_interval_s`` with each drive's free space; every heartbeat answer carries the token
keys, so the node checks capability tokens with no call of its own. A node that
cannot reach the metadata service keeps serving with the keys it has. It also scrubs its own
drives at ``--scrub-rate`` (``apollo.cluster.node_scrub``), reporting damaged shards for repair.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from apollo import __version__, errors, limits, metrics, tokens
from apollo.client.context import ClientContext
from apollo.client.directory import NodeDirectory
from apollo.client.remote_meta import RemoteMeta
from apollo.client.remote_storage import Timeouts
from apollo.cluster.node_scrub import NodeScrubber
from apollo.cluster.rebuild import ShardRebuilder
from apollo.errors import ApolloError
from apollo.eventloop import every, install_uvloop
from apollo.proto.layout import SegmentLayout
from apollo.roles import log_shutdown
from apollo.roles.serving import serve
from apollo.roles.tls import ServingCerts, check_https, serving_certs
from apollo.storage.attach import attach_drives, clear_interrupted
from apollo.storage.node import LocalStorageNode
from apollo.storage.service import NodeState, add_rebuild_route, build_storage_app

log = logging.getLogger("apollo.storage")


@dataclass
class StorageConfig:
    drives: list[Path]
    meta_url: str
    access_key: str
    secret_key: str
    host: str = "127.0.0.1"
    port: int = 9200
    name: str = field(default_factory=socket.gethostname)
    rack: str = ""
    advertise: str = ""  # the endpoint others use to reach this node; default http(s)://host:port
    certs: Path | None = None  # --certs: mutual TLS (DIR/public.crt, DIR/private.key, the cluster CA in DIR/CAs)
    max_connections: int = 0  # --max-connections; 0: half the process's file-descriptor limit
    scrub_bytes_per_s: float = 32 * 1024**2  # --scrub-rate: the node's own drives, checked locally; 0: none
    scrub_interval_s: float = 7 * 24 * 3600.0  # --scrub-interval: a pass starts this long after the last began


def endpoint(config: StorageConfig) -> str:
    """What the node registers in the cluster map: ``--advertise``, else its address, ``https://`` with
    ``--certs`` (the port then speaks nothing else, and clients choose TLS by the map's scheme).

    :raises SystemExit: an ``http://`` ``--advertise`` with ``--certs``: nobody could reach the node at it.
    """
    scheme = "https" if config.certs else "http"
    if config.advertise and config.certs and not config.advertise.startswith("https://"):
        raise SystemExit(f"apollo storage: --advertise {config.advertise} is not https://, but --certs makes "
                         f"this node speak TLS only")  # fmt: skip
    return (config.advertise or f"{scheme}://{config.host}:{config.port}").rstrip("/")


class StorageProcess:
    def __init__(self, config: StorageConfig, certs: ServingCerts | None = None) -> None:
        """``certs``: the port's TLS and, for the calls to the metadata service, this node's client certificate
        and the cluster CA."""
        self.config = config
        self.certs = certs
        self.endpoint = endpoint(config)
        self.keyring = tokens.Keyring()
        self.state = NodeState()
        self.node = LocalStorageNode([])
        self.app = build_storage_app(self.node, self.keyring, self.state)
        add_rebuild_route(self.app, self._rebuild)
        self.rebuilder: ShardRebuilder | None = None  # once joined: the metadata service, for the cluster map
        self.peers: NodeDirectory | None = None  # the cluster's nodes, a rebuild's survivors, as of ``peers_epoch``
        self.peers_epoch = -1
        self.app.cleanup_ctx.append(self._lifecycle)
        if certs is not None:
            certs.install(self.app)

    async def _lifecycle(self, app: web.Application):
        session = aiohttp.ClientSession()
        meta = RemoteMeta(self.config.meta_url, self.config.access_key, self.config.secret_key, session,
                          ssl_context=self.certs.client if self.certs else None)  # fmt: skip
        try:
            await self._join(meta)
        except ApolloError as exc:  # a wrong key, the service unreachable for long: say so, no traceback
            await session.close()
            raise SystemExit(f"apollo storage: cannot join the cluster: {exc}") from None
        self.peers = NodeDirectory(session, self._service_token, Timeouts(),
                                   ssl_context=self.certs.client if self.certs else None)  # fmt: skip
        self.rebuilder = ShardRebuilder(
            ClientContext(meta, {}, cpu=ThreadPoolExecutor(2, thread_name_prefix="rebuild"))
        )
        beat = every(limits.node_heartbeat_interval_s, lambda: self._heartbeat(meta), "heartbeat to meta")
        tasks = [asyncio.create_task(beat)]
        if self.config.scrub_bytes_per_s > 0:
            scrubber = NodeScrubber(meta, self.node, self.config.scrub_bytes_per_s, self.config.scrub_interval_s)
            tasks.append(asyncio.create_task(scrubber.run_forever()))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.peers.close()
        await session.close()
        self.node.close()

    def _service_token(self, op: str, segment_id: str) -> str:
        """A token for this node's own calls to its peers (reading a rebuild's survivors): it holds the keys."""
        return self.keyring.issue(op, tokens.ANY_SEGMENT, tokens.SERVICE_TOKEN_TTL_S)

    async def _rebuild(self, layout: SegmentLayout, targets: dict[int, str], copy_from: dict[int, str]) -> int:
        """The manager's rebuild job (``add_rebuild_route``): survivors read from the peers (the cluster map's
        nodes, fetched again when a heartbeat brought a new epoch) or from this node's own drives directly."""
        if self.rebuilder is None or self.peers is None:
            raise errors.MetadataUnavailable("this storage node has not joined its cluster yet")
        if self.peers_epoch != self.state.epoch:
            cluster = await self.rebuilder.ctx.meta.call_briefly("cluster_map")
            self.peers.update(cluster)
            self.peers_epoch = cluster.epoch
        self.rebuilder.ctx.nodes = {**self.peers.nodes, **self.node.serving()}
        written = await self.rebuilder.rebuild(layout, targets, copy_from)
        metrics.repaired_shards.inc(len(targets))  # this node's share of the cluster's repairs
        metrics.repair_bytes.inc(written)
        return written

    async def _join(self, meta: RemoteMeta) -> None:
        """Register, attach the drives by the rules of ``apollo.storage.attach`` (never formatting a missing
        directory, or one the cluster knows as a drive: an unmounted or wiped disk), register them, fetch keys."""
        config = self.config
        joined = await meta.register_node(config.name, self.endpoint, config.rack, [])
        found = attach_drives(config.drives, joined["deployment_id"], joined["drives"], removed=joined["removed"])
        for problem in found.problems:
            log.error("%s", problem)
        if found.foreign:
            raise SystemExit(f"drive {found.foreign[0]} is not empty and not an Apollo drive; refusing to format it")
        clear_interrupted(found.drives)
        for drive in found.drives:
            self.node.attach(drive)
        drives = [(d.drive_id, str(d.root)) for d in self.node.drives.values()]
        await meta.register_node(config.name, self.endpoint, config.rack, drives)
        await self._heartbeat(meta)
        log.info("storage node %s joined with %d drives at %s", config.name, len(drives), self.endpoint)

    async def _heartbeat(self, meta: RemoteMeta) -> None:
        drives = await asyncio.to_thread(self._probe)
        answer = await meta.call_briefly("node_heartbeat", self.config.name, drives)
        self.state.epoch = answer["epoch"]
        self.keyring.replace_from_json(answer["keys"])

    def _probe(self) -> dict[str, tuple[str, int, int, str]]:
        """(health, free, total, filesystem) per drive; a drive whose directory no longer holds it is never
        touched again. /metrics shows the same per drive, as the all-in-one server's probe does (the "nearly
        full" alert)."""
        report = {}
        for drive_id, drive in list(self.node.drives.items()):
            health, free, total, _ = report[drive_id] = drive.check()
            metrics.drive_up.labels(drive_id).set(1 if health == "ok" else 0)
            metrics.drive_free_bytes.labels(drive_id).set(free)
            metrics.drive_total_bytes.labels(drive_id).set(total)
            if report[drive_id][0] == "gone" and self.node.detach(drive_id):
                log.error("drive %s (%s): its format file is gone; no longer served", drive_id, drive.root)
        return report


def run(config: StorageConfig) -> None:
    certs = None
    if config.certs:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload once the event loop runs; never an exit
        # First: a bad directory is one line and exit 1 before a drive is touched.
        certs = serving_certs(config.certs, log, "apollo storage", require_client_certs=True)
        check_https(config.meta_url, "apollo storage", "--meta")
    install_uvloop()
    metrics.serve_role("storage")
    process = StorageProcess(config, certs)
    log.info("Apollo %s storage node %s %s://%s:%d  drives=%d  metadata %s", __version__, config.name,
             "https" if certs else "http", config.host, config.port, len(config.drives), config.meta_url)  # fmt: skip
    log_shutdown(process.app, log, f"storage node {config.name}")
    serve(process.app, role="storage", max_connections=config.max_connections, host=config.host, port=config.port,
          ssl_context=certs.context if certs else None)  # fmt: skip
