"""``apollo storage DIR...``: a storage node of a cluster.

At start it asks the metadata service for the deployment, formats new empty drives for
it, registers itself (name, endpoint, rack) with its drives, then heartbeats every
``limits.node_heartbeat_interval_s`` with each drive's free space; every heartbeat answer carries the token
keys, so the node checks capability tokens with no call of its own. A node that
cannot reach the metadata service keeps serving with the keys it has.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from apollo import __version__, limits, metrics, tokens
from apollo.client.remote_meta import RemoteMeta
from apollo.errors import ApolloError
from apollo.eventloop import every, install_uvloop
from apollo.roles import log_shutdown
from apollo.storage.attach import attach_drives, clear_interrupted
from apollo.storage.node import LocalStorageNode
from apollo.storage.service import NodeState, build_storage_app

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
    advertise: str = ""  # the endpoint others use to reach this node; default http://host:port


class StorageProcess:
    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.endpoint = config.advertise or f"http://{config.host}:{config.port}"
        self.keyring = tokens.Keyring()
        self.state = NodeState()
        self.node = LocalStorageNode([])
        self.app = build_storage_app(self.node, self.keyring, self.state)
        self.app.cleanup_ctx.append(self._lifecycle)

    async def _lifecycle(self, app: web.Application):
        session = aiohttp.ClientSession()
        meta = RemoteMeta(self.config.meta_url, self.config.access_key, self.config.secret_key, session)
        try:
            await self._join(meta)
        except ApolloError as exc:  # a wrong key, the service unreachable for long: say so, no traceback
            await session.close()
            raise SystemExit(f"apollo storage: cannot join the cluster: {exc}") from None
        beat = every(limits.node_heartbeat_interval_s, lambda: self._heartbeat(meta), "heartbeat to meta")
        heartbeat = asyncio.create_task(beat)
        yield
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        await session.close()
        self.node.close()

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
        answer = await meta.node_heartbeat(self.config.name, drives)
        self.state.epoch = answer["epoch"]
        self.keyring.replace_from_json(answer["keys"])

    def _probe(self) -> dict[str, tuple[str, int, int]]:
        """(health, free, total) per drive; a drive whose directory no longer holds it is never touched again.
        /metrics shows the same per drive, as the all-in-one server's probe does (the "nearly full" alert)."""
        report = {}
        for drive_id, drive in list(self.node.drives.items()):
            health, free, total = report[drive_id] = drive.check()
            metrics.drive_up.labels(drive_id).set(1 if health == "ok" else 0)
            metrics.drive_free_bytes.labels(drive_id).set(free)
            metrics.drive_total_bytes.labels(drive_id).set(total)
            if report[drive_id][0] == "gone" and self.node.detach(drive_id):
                log.error("drive %s (%s): its format file is gone; no longer served", drive_id, drive.root)
        return report


def run(config: StorageConfig) -> None:
    install_uvloop()
    metrics.serve_role("storage")
    process = StorageProcess(config)
    log.info("Apollo %s storage node %s http://%s:%d  drives=%d  metadata %s", __version__, config.name, config.host,
             config.port, len(config.drives), config.meta_url)  # fmt: skip
    log_shutdown(process.app, log, f"storage node {config.name}")
    web.run_app(process.app, host=config.host, port=config.port, print=None, access_log=None)
