"""A node's scrub schedule lives on its drives (``apollo.cluster.node_scrub``): a restarted node neither
reads its drives again before the interval has run nor starts an unfinished pass over. Real drives and
shard files, the in-process metadata service taking the reports."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from apollo.client.context import ClientContext
from apollo.client.writer import ObjectWriter
from apollo.cluster.node_scrub import DriveScrubState, NodeScrubber
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.layout import Scheme
from apollo.proto.placement import Candidate
from apollo.storage.drive import format_drive
from apollo.storage.node import LocalStorageNode
from apollo.storage.shardfile import HEADER_BYTES

CELL = 64 * 1024


@pytest.fixture
def written(tmp_path, seed):
    """(metadata service, node, drive roots) after three 2 MiB objects were written over six drives."""
    roots = [tmp_path / f"d{i}" for i in range(6)]
    for root in roots:
        format_drive(root, "dep")
    node = LocalStorageNode.open(roots, "dep")
    meta = MetaService(SqlStore(tmp_path / "meta.db"))
    meta.placement.update([Candidate(d, f"n{i}") for i, d in enumerate(node.drive_ids())], node.drive_ids())
    ctx = ClientContext(meta, {d: node for d in node.drive_ids()})
    rng = random.Random(seed)

    async def body(data: bytes):
        yield data

    async def write() -> None:
        for n in range(3):
            writer = ObjectWriter(ctx, Scheme.parse("4+2"), CELL, {"bucket": "b", "key": f"k{n}"})
            await writer.write(body(rng.randbytes(2 * 1024**2)))

    asyncio.run(write())
    yield meta, node, roots
    node.close()
    meta.close()


def _shards(root):
    return sorted(p for p in (root / "shards").rglob("*") if p.is_file())


def test_a_pass_is_resumed_where_it_stopped_and_not_repeated_before_its_interval(written):
    meta, node, roots = written
    counts = asyncio.run(NodeScrubber(meta, node, 0, interval_s=3600).scrub_due())
    assert (counts.shards, counts.damaged) == (18, 0)  # 3 segments x 6 shards, all whole
    victim = _shards(roots[2])[0]
    blob = bytearray(victim.read_bytes())
    blob[HEADER_BYTES + 777] ^= 0x10
    victim.write_bytes(bytes(blob))

    restarted = NodeScrubber(meta, node, 0, interval_s=3600)  # a node started again within the interval
    assert asyncio.run(restarted.scrub_due()).shards == 0

    groups = sorted(int(p.parent.name, 16) for p in _shards(roots[4]))
    stopped = DriveScrubState(started=time.time() - 5, finished=time.time() - 3600, cursor_pg=groups[0])
    stopped.save(roots[4])  # drive 4's pass stopped after its first group
    resumed = asyncio.run(restarted.scrub_due())
    assert resumed.shards == sum(1 for g in groups if g > groups[0])  # only the groups after it
    assert not DriveScrubState.load(roots[4]).under_way()

    due = NodeScrubber(meta, node, 0, interval_s=0)  # the interval is over: every drive again
    counts = asyncio.run(due.scrub_due())
    assert (counts.shards, counts.damaged) == (18, 1)
    assert meta.store.repair_backlog() == 1
