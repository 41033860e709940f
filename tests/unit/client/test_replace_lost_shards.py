"""A shard stream that fails mid-write is rebuilt on a spare before the write is acknowledged
(``apollo.client.replace``): the write keeps its full redundancy, and two lost shards of a 4+2 segment
no longer fail it. Real drives and a real node; only the failing streams are made to fail."""

from __future__ import annotations

import asyncio
import errno
import json
import random
import time

import pytest

from apollo.client.context import ClientContext
from apollo.client.reader import read_range
from apollo.client.writer import ObjectWriter
from apollo.cluster.shardcheck import check_shard
from apollo.errors import InsufficientStorage
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.cluster_map import DriveRecord
from apollo.proto.layout import Scheme
from apollo.proto.placement import Candidate
from apollo.storage.drive import format_drive
from apollo.storage.node import LocalStorageNode, ShardSink

CELL = 64 * 1024
FAILING = (1, 4)  # shard indexes whose first stream dies after its first batch


class DyingSink(ShardSink):
    """A real shard stream that fails from its second append on, as one to a node that just went away."""

    def __init__(self, sink: ShardSink, step: str) -> None:
        self.sink, self.step, self.appends = sink, step, 0

    async def append(self, records: list[bytes]) -> None:
        self.appends += 1
        if self.step == "append" and self.appends > 1:
            raise ConnectionResetError(errno.ECONNRESET, "storage node connection failed")
        await self.sink.append(records)

    async def finish(self, footer: bytes) -> None:
        if self.step == "finish":
            raise TimeoutError(errno.ETIMEDOUT, "storage node did not confirm the shard in time")
        await self.sink.finish(footer)

    async def abort(self) -> None:
        await self.sink.abort()


class FlakyNode(LocalStorageNode):
    """The first stream of each ``FAILING`` shard of a segment dies; a spare's stream for it works."""

    step = "append"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failed: dict[int, str] = {}  # shard index -> the drive its dying stream was on

    async def open_shard(self, drive_id, shard, header):
        sink = await super().open_shard(drive_id, shard, header)
        if shard.index in FAILING and shard.index not in self.failed:
            self.failed[shard.index] = drive_id
            return DyingSink(sink, self.step)
        return sink


@pytest.fixture
def cluster(tmp_path):
    """(context, node, drive roots) over ``drives`` directory drives of one node (8 unless a test says)."""
    made = []

    def make(drives: int = 8, step: str = "append"):
        roots = [tmp_path / f"d{i}" for i in range(drives)]
        for root in roots:
            format_drive(root, "dep")
        node = FlakyNode.open(roots, "dep")
        node.step = step
        meta = MetaService(SqlStore(tmp_path / "meta.db"))
        for drive_id, root in zip(node.drive_ids(), roots, strict=True):  # the drives a layout may be repointed to
            meta.store.put_drive(DriveRecord(drive_id, "node", str(root), "online", 1.0), time.time())
        meta.placement.update([Candidate(d, f"n{i}") for i, d in enumerate(node.drive_ids())], node.drive_ids())
        made.append((node, meta))
        return ClientContext(meta, {d: node for d in node.drive_ids()}), node, roots

    yield make
    for node, meta in made:
        node.close()
        meta.close()


def _write(ctx, data: bytes):
    async def chunks():
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    return asyncio.run(ObjectWriter(ctx, Scheme.parse("4+2"), CELL, {"bucket": "b", "key": "k"}).write(chunks()))


def _read(ctx, data) -> bytes:
    async def go():
        return b"".join([bytes(p) async for p in read_range(ctx, data, 0, data.size)])

    return asyncio.run(go())


@pytest.mark.parametrize("step", ["append", "finish"])
def test_two_shards_lost_mid_write_are_rebuilt_on_spares_before_the_ack(cluster, seed, step):
    ctx, node, roots = cluster(step=step)
    data = random.Random(seed).randbytes(20 * 1024**2 + 1234)  # three 8 MiB batches: the dying streams miss two
    result = _write(ctx, data)  # before re-placing, 4 of 6 shards < the write quorum of 5: InsufficientStorage
    (layout,) = result.data.segments
    assert len(set(layout.drives)) == 6
    for index, dead in node.failed.items():
        assert layout.drives[index] != dead, f"shard {index} still on the drive whose stream died"
    for index, drive in enumerate(layout.drives):
        assert asyncio.run(check_shard(ctx, layout, index, drive, deep=True)) is None, index
    for index in (0, 2):  # the read must now decode from the rebuilt shards 1 and 4
        asyncio.run(node.delete(layout.drives[index], layout.shard(index)))
    assert _read(ctx, result.data) == data
    assert [p for root in roots for p in (root / "tmp").iterdir()] == []  # the dead streams left no temp file
    (row,) = ctx.meta.store.all("SELECT layout FROM garbage WHERE segment_id = ?", (layout.segment_id,))
    assert json.loads(row["layout"])["drives"] == list(layout.drives)  # the pending record names the spares


def test_with_one_spare_for_two_lost_shards_one_is_rebuilt_and_one_left_to_repair(cluster, seed):
    ctx, node, _ = cluster(drives=7)
    data = random.Random(seed).randbytes(9 * 1024**2)
    result = _write(ctx, data)  # 5 of 6 shards: the write quorum
    (layout,) = result.data.segments
    moved = [i for i, dead in node.failed.items() if layout.drives[i] != dead]
    assert len(moved) == 1
    assert ctx.meta.store.repair_backlog() >= 1  # the other one is queued for repair
    assert _read(ctx, result.data) == data


def test_with_no_spare_two_lost_shards_still_fail_the_write(cluster, seed):
    ctx, _, _ = cluster(drives=6)
    with pytest.raises(InsufficientStorage, match="only 4 of 6 shards writable, need 5"):
        _write(ctx, random.Random(seed).randbytes(9 * 1024**2))
