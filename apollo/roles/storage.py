"""``apollo storage DIR...``: a storage node of a cluster.

At start it asks the metadata service for the deployment, formats new empty drives for
it, registers itself (name, endpoint, rack) with its drives, then heartbeats every
``HEARTBEAT_S`` with each drive's free space; every heartbeat answer carries the token
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

from apollo import tokens
from apollo.client.remote_meta import RemoteMeta
from apollo.errors import ApolloError, DriveError
from apollo.eventloop import every, install_uvloop
from apollo.proto.drive_format import read_format
from apollo.storage.drive import Drive, format_drive
from apollo.storage.node import LocalStorageNode
from apollo.storage.service import NodeState, build_storage_app

log = logging.getLogger("apollo.storage")
HEARTBEAT_S = 2.0


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
        heartbeat = asyncio.create_task(every(HEARTBEAT_S, lambda: self._heartbeat(meta), "heartbeat to meta"))
        yield
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        await session.close()
        self.node.close()

    async def _join(self, meta: RemoteMeta) -> None:
        """Register, format new empty drives for the deployment, attach them, register them, fetch keys.

        A directory that is missing, or that the cluster knows as a drive but that lost its format file,
        is never formatted: that is an unmounted disk (the directory is its mount point) or a wiped one,
        and formatting would put a new drive on the wrong disk.
        """
        config = self.config
        joined = await meta.register_node(config.name, self.endpoint, config.rack, [])
        deployment, known = joined["deployment_id"], joined["drives"]
        for root in config.drives:
            path = str(root.resolve())
            if not root.is_dir():
                log.error("drive %s does not exist (not mounted?); not serving it", root)
                continue
            if read_format(root) is None:
                if path in known:
                    log.error("drive %s (id %s) lost its format file: unmounted or wiped; not serving it "
                              "(its shards are rebuilt elsewhere after the offline grace)",
                              root, known[path])  # fmt: skip
                    continue
                if any(root.iterdir()):
                    raise SystemExit(f"drive {root} is not empty and not an Apollo drive; refusing to format it")
                format_drive(root, deployment)
                log.info("formatted new drive %s", root)
            try:
                drive = Drive(root.resolve(), deployment)
            except DriveError as exc:
                log.error("%s; not serving it", exc)
                continue
            removed = drive.clear_tmp()  # writes this node never finished: their clients saw them fail
            if removed:
                log.info("drive %s: removed %d temp files of interrupted writes", root, removed)
            self.node.attach(drive)
        drives = [(d.drive_id, str(d.root)) for d in self.node.drives.values()]
        await meta.register_node(config.name, self.endpoint, config.rack, drives)
        await self._heartbeat(meta)
        log.info("storage node %s joined with %d drives at %s", config.name, len(drives), self.endpoint)

    async def _heartbeat(self, meta: RemoteMeta) -> None:
        drives = await asyncio.to_thread(self._probe)
        answer = await meta.node_heartbeat(self.config.name, drives)
        self.state.epoch = answer["epoch"]
        self.keyring.replace([tokens.TokenKey(k["key_id"], bytes.fromhex(k["secret"]), k["created"])
                              for k in answer["keys"]])  # fmt: skip

    def _probe(self) -> dict[str, tuple[str, int, int]]:
        """(health, free, total) per drive; a drive whose directory no longer holds it is never touched again."""
        report = {}
        for drive_id, drive in list(self.node.drives.items()):
            health = drive.probe()
            try:
                free, total = drive.usage() if health == "ok" else (0, 0)
            except OSError:
                health, free, total = "unreachable", 0, 0
            if health == "gone" and self.node.detach(drive_id):
                log.error("drive %s (%s): its format file is gone; no longer served", drive_id, drive.root)
            report[drive_id] = (health, free, total)
        return report


def run(config: StorageConfig) -> None:
    install_uvloop()
    process = StorageProcess(config)
    web.run_app(process.app, host=config.host, port=config.port, print=None, access_log=None)
