"""Six storage node processes and an engine over them, for the tests of the remote storage path."""

from __future__ import annotations

import asyncio

import aiohttp

from apollo import tokens
from apollo.client.context import ClientContext
from apollo.client.reader import read_range
from apollo.client.remote_storage import RemoteStorageNode, Timeouts
from apollo.client.writer import ObjectWriter
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.layout import Scheme
from apollo.proto.placement import Candidate

CELL = 64 * 1024
NODES = 6


class Engine:
    """What a gateway or native client holds: metadata, and a remote node per drive."""

    def __init__(self, tmp_path, nodes, keyring, timeouts: Timeouts):
        self.meta = MetaService(SqlStore(tmp_path / "meta.db"))
        self.session = aiohttp.ClientSession()
        self.remotes: dict[str, RemoteStorageNode] = {}
        candidates = []
        for index, node in enumerate(nodes):
            for drive_id in node.drive_ids():
                remote = RemoteStorageNode(node.endpoint, [drive_id], self.token, self.session, timeouts)
                self.remotes[drive_id] = remote
                candidates.append(Candidate(drive_id, f"node{index}"))
        self.keyring = keyring
        self.meta.placement.update(candidates, self.remotes)
        self.ctx = ClientContext(self.meta, dict(self.remotes))

    def token(self, op: str, segment_id: str) -> str:
        return self.keyring.issue(op, segment_id, tokens.TOKEN_TTL_S)

    async def write(self, data: bytes):
        async def chunks():
            for i in range(0, len(data), 256 * 1024):
                yield data[i : i + 256 * 1024]

        writer = ObjectWriter(self.ctx, Scheme.parse("4+2"), CELL, {"bucket": "b", "key": "k"})
        return await writer.write(chunks())

    async def read(self, result, start: int = 0, end: int | None = None) -> bytes:
        end = result.data.size if end is None else end
        return b"".join([piece async for piece in read_range(self.ctx, result.data, start, end)])

    async def close(self):
        for remote in self.remotes.values():
            remote.close()
        await self.session.close()
        self.meta.close()


def run(coro, limit_s: float = 120.0):
    """Run a scenario; a hang (a timeout that never fires) fails the test instead of stalling the suite."""
    return asyncio.run(asyncio.wait_for(coro, limit_s))
