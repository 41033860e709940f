"""A reader holding a layout from before a shard moved (a drain, a rebalance) still reads the object.

The repair worker copies the shard to its new drive, commits the new layout, then deletes the old copy: a
reader that looked the layout up before finds that shard gone. Alone that costs nothing (another shard
decodes), but beside shards it cannot reach it can leave fewer than k (a CI run read an object while a rack
was cut off just as a move completed). The reader then looks the version up again and resumes with the
layout as it is now. Real drives, a real node and the metadata store; the move is made as the worker makes it.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time

import pytest

from apollo.client.context import ClientContext
from apollo.client.engine import ObjectEngine
from apollo.errors import InsufficientFragments
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.cluster_map import DriveRecord
from apollo.proto.layout import Scheme
from apollo.proto.placement import Candidate
from apollo.proto.records import ObjectAttrs
from apollo.storage.drive import format_drive
from apollo.storage.node import LocalStorageNode

CELL = 64 * 1024


@pytest.fixture
def engine(tmp_path):
    roots = [tmp_path / f"d{i}" for i in range(8)]
    for root in roots:
        format_drive(root, "dep")
    node = LocalStorageNode.open(roots, "dep")
    meta = MetaService(SqlStore(tmp_path / "meta.db"))
    for drive_id, root in zip(node.drive_ids(), roots, strict=True):
        meta.store.put_drive(DriveRecord(drive_id, "node", str(root), "online", 1.0), time.time())
    meta.placement.update([Candidate(d, f"n{i}") for i, d in enumerate(node.drive_ids())], node.drive_ids())
    asyncio.run(meta.create_bucket("b", time.time()))
    yield ObjectEngine(ClientContext(meta, {d: node for d in node.drive_ids()}), Scheme.parse("4+2"), CELL), node
    node.close()
    meta.close()


def _move_shard(engine: ObjectEngine, node: LocalStorageNode, layout, index: int) -> str:
    """What the repair worker does for a move: copy, commit the new layout, delete the old copy."""
    spare = next(d for d in node.drive_ids() if d not in layout.drives)
    old, new = node.drives[layout.drives[index]], node.drives[spare]
    new.group_dir(layout.pg).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(old.shard_path(layout.shard(index)), new.shard_path(layout.shard(index)))
    assert engine.ctx.meta.store.commit_repair(layout.segment_id, layout.drives, {index: spare})
    old.shard_path(layout.shard(index)).unlink()
    return spare


def _put(engine: ObjectEngine, data: bytes) -> None:
    async def body():
        yield data

    asyncio.run(engine.put_object("b", "k", body(), ObjectAttrs()))


def _read(engine: ObjectEngine, version, start: int = 0) -> bytes:
    async def go():
        return b"".join([bytes(p) async for p in engine.read(version, start)])

    return asyncio.run(go())


def test_a_layout_read_before_a_move_reads_through_the_new_one(engine, seed):
    engine, node = engine
    data = random.Random(seed).randbytes(3 * 1024**2 + 77)
    _put(engine, data)
    before = asyncio.run(engine.head("b", "k"))
    (layout,) = before.data.segments
    spare = _move_shard(engine, node, layout, 0)
    for index in (1, 2):  # unreachable in the layout from before and in the new one alike
        node.drives[layout.drives[index]].shard_path(layout.shard(index)).unlink()
    relaid: list = []
    engine.on_relayout = relaid.append  # the native client's layout cache takes the new one
    # From before the move, 3 shards of 4+2 remain where it says; now, 4 do.
    assert _read(engine, before) == data
    assert [v.data.segments[0].drives[0] for v in relaid] == [spare]
    assert _read(engine, before, start=1_000_000) == data[1_000_000:]


def test_too_few_shards_under_an_unchanged_layout_still_fail(engine, seed):
    engine, node = engine
    data = random.Random(seed).randbytes(1024**2)
    _put(engine, data)
    version = asyncio.run(engine.head("b", "k"))
    (layout,) = version.data.segments
    for index in (0, 1, 2):
        node.drives[layout.drives[index]].shard_path(layout.shard(index)).unlink()
    with pytest.raises(InsufficientFragments):
        _read(engine, version)
