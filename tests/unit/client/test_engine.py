"""Writer + reader over real directory drives: byte-exact ranges, degraded reads, CRC damage."""

from __future__ import annotations

import asyncio
import random
import shutil

import pytest

from apollo.client.reader import read_range
from apollo.client.writer import ObjectWriter
from apollo.errors import InsufficientFragments, InsufficientStorage
from apollo.proto.layout import Scheme
from apollo.storage.shardfile import HEADER_BYTES

CELL = 64 * 1024


@pytest.fixture
def engine(drives):
    return drives


async def _write(ctx, data: bytes, scheme: str = "4+2"):
    async def chunks():
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    return await ObjectWriter(ctx, Scheme.parse(scheme), CELL, {"bucket": "b", "key": "k"}).write(chunks())


async def _read(ctx, result, start, end) -> bytes:
    return b"".join([piece async for piece in read_range(ctx, result.data, start, end)])


def _shard_files(roots):
    return [p for root in roots for p in (root / "shards").rglob("*") if p.is_file()]


@pytest.mark.parametrize("size", [0, 1, 16 * 1024, 16 * 1024 + 1, 4 * CELL, 4 * CELL + 1, 9 * 1024**2 + 3])
def test_roundtrip_and_random_ranges(engine, seed, size):
    ctx, _ = engine
    rng = random.Random(seed)
    data = rng.randbytes(size)
    result = asyncio.run(_write(ctx, data))
    assert result.size == size
    assert result.etag == __import__("hashlib").md5(data).hexdigest()
    assert (result.data.inline is not None) == (size <= 16 * 1024)
    assert asyncio.run(_read(ctx, result, 0, size)) == data
    for _ in range(25):
        a = rng.randint(0, size)
        b = rng.randint(a, size)
        assert asyncio.run(_read(ctx, result, a, b)) == data[a:b], (a, b)


def test_reads_survive_losing_m_drives_and_report_damage(engine, seed):
    ctx, roots = engine
    data = random.Random(seed).randbytes(3 * 1024**2 + 77)
    result = asyncio.run(_write(ctx, data))
    # The drives holding data shards 0 and 1: a healthy read never touches parity, so losing only
    # parity drives would report nothing (placement depends on the random segment id, not the seed).
    data_roots = [root for root in roots if any(p.name.endswith((".0", ".1")) for p in (root / "shards").rglob("*"))]
    assert len(data_roots) == 2
    for root in data_roots:
        shutil.rmtree(root / "shards")
    assert asyncio.run(_read(ctx, result, 0, len(data))) == data
    assert asyncio.run(_read(ctx, result, 12345, 2 * 1024**2)) == data[12345 : 2 * 1024**2]
    assert ctx.meta.store.repair_backlog() >= 1
    shutil.rmtree(next(root for root in roots if root not in data_roots) / "shards")
    with pytest.raises(InsufficientFragments):
        asyncio.run(_read(ctx, result, 0, len(data)))


def test_flipped_bytes_are_caught_by_cell_crc(engine, seed):
    ctx, roots = engine
    rng = random.Random(seed)
    data = rng.randbytes(2 * 1024**2 + 5)
    result = asyncio.run(_write(ctx, data))
    by_shard: dict[int, list] = {}
    for path in _shard_files(roots):
        by_shard.setdefault(int(path.name.rsplit(".", 1)[1]), []).append(path)
    data_shard = rng.randrange(4)  # a healthy read touches only data shards: damage one of them at least
    other = rng.choice([i for i in sorted(by_shard) if i != data_shard])
    for index in (data_shard, other):  # two of the six shards: still decodable
        path = by_shard[index][0]
        blob = bytearray(path.read_bytes())
        for _ in range(5):
            blob[rng.randrange(HEADER_BYTES, len(blob) - 64)] ^= 0xFF
        path.write_bytes(bytes(blob))
    assert asyncio.run(_read(ctx, result, 0, len(data))) == data
    assert ctx.meta.store.repair_backlog() >= 1


def test_write_needs_quorum(engine):
    ctx, _ = engine
    ctx.placement.update(ctx.placement.candidates, list(ctx.placement.writable)[:4])
    with pytest.raises(InsufficientStorage):
        asyncio.run(_write(ctx, b"x" * (1024**2)))
    ctx.placement.update(ctx.placement.candidates, ctx.nodes)
    assert ctx.meta.store.garbage_count() == 0


def test_write_quorum_is_configurable_but_never_below_k_plus_1(engine):
    ctx, _ = engine
    ctx.placement.update(ctx.placement.candidates, list(ctx.placement.writable)[:5])  # 5 of 6 shards written

    def write(quorum: int | None):
        writer = ObjectWriter(ctx, Scheme.parse("4+2"), CELL, {"bucket": "b", "key": "k"}, quorum=quorum)

        async def body():
            yield b"x" * (1024**2)

        return asyncio.run(writer.write(body()))

    assert write(None).size == write(5).size == 1024**2
    with pytest.raises(InsufficientStorage, match="need 6"):
        write(6)  # every shard, and one drive is out
    for bad in (4, 7):
        with pytest.raises(ValueError, match="between 5 and 6"):
            write(bad)


def test_replication_scheme(engine, seed):
    ctx, roots = engine
    data = random.Random(seed).randbytes(700_001)
    result = asyncio.run(_write(ctx, data, "rep3"))
    replicas = _shard_files(roots)
    assert len(replicas) == 3
    for path in replicas[:2]:
        path.unlink()
    assert asyncio.run(_read(ctx, result, 0, len(data))) == data


class _CountingNode:
    """Wraps the real node and records every shard read: which shard index, how many bytes."""

    def __init__(self, node) -> None:
        self._node = node
        self.reads: list[tuple[int, int]] = []

    async def read(self, drive_id, shard, offset, length):
        self.reads.append((shard.index, length))
        return await self._node.read(drive_id, shard, offset, length)

    async def read_many(self, reads):
        self.reads.extend((read.shard.index, read.length) for read in reads)
        return await self._node.read_many(reads)

    def __getattr__(self, name):
        return getattr(self._node, name)


def test_a_small_range_reads_only_the_cells_holding_it_and_a_healthy_read_never_decodes(engine):
    ctx, _ = engine
    data = random.Random(5).randbytes(40 * CELL)  # 10 full stripes of 4 x 64 KiB
    result = asyncio.run(_write(ctx, data))
    counting = _CountingNode(next(iter(ctx.nodes.values())))
    ctx.nodes = {drive: counting for drive in ctx.nodes}
    decoded = []
    ctx.on_decode.append(decoded.append)
    start = 17 * CELL + 100  # inside stripe 4, data cell 1
    assert asyncio.run(_read(ctx, result, start, start + 1000)) == data[start : start + 1000]
    assert [index for index, _ in counting.reads] == [1]  # one data shard, no parity, no other cell
    assert all(length <= CELL + 1024 for _, length in counting.reads)  # one cell record (codec header + CRC)
    counting.reads.clear()
    assert asyncio.run(_read(ctx, result, 0, len(data))) == data
    assert {index for index, _ in counting.reads} == {0, 1, 2, 3}  # data shards only
    assert decoded == []
