"""A storage node that is alive but does not answer (SIGSTOP: connections accepted, nothing read) must not
set the read's latency: a read waits for it only as long as the hedge threshold learned from recent reads,
then decodes from parity; the node is marked slow (read around at once for a while), not reported damaged.
The same holds for batch reads, one request per node. Six real node processes; the node's request timeout
is 10 s, the reads are held to well under it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from storage_processes import Engine, run

from apollo.client.context import HEDGE_AFTER_S
from apollo.client.node_batches import NodeReads
from apollo.client.remote_storage import Timeouts

REQUEST_S = 10.0  # what a read of the stopped node would wait without a hedge


@contextlib.asynccontextmanager
async def watched_engine(tmp_path, nodes, keyring) -> AsyncIterator[tuple[Engine, list]]:
    """An engine over the nodes whose requests time out after ``REQUEST_S``, and the damage its reads report."""
    engine = Engine(tmp_path, nodes, keyring, Timeouts(request_s=REQUEST_S))
    damage = []
    engine.ctx.on_damage.append(damage.append)
    try:
        yield engine, damage
    finally:
        await engine.close()


def test_a_stopped_node_costs_the_hedge_threshold_not_its_timeout(tmp_path, nodes, keyring, seed):
    rng = random.Random(seed)

    async def scenario():
        async with watched_engine(tmp_path, nodes, keyring) as (engine, damage):
            data = rng.randbytes(3 * 1024 * 1024)
            result = await engine.write(data)
            for _ in range(64):  # recent healthy reads teach the threshold (3x their 95th percentile)
                start = rng.randrange(len(data) - 4096)
                assert await engine.read(result, start, start + 4096) == data[start : start + 4096]
            threshold = engine.ctx.latency.hedge_after()
            assert threshold < 1.0, f"64 healthy reads should teach a threshold under the 1 s default: {threshold}"
            segment = result.data.segments[0]
            stopped = next(node for node in nodes if node.drive_ids()[0] == segment.drives[0])  # a data shard's
            stopped.pause()
            try:
                started = time.monotonic()
                assert await engine.read(result) == data
                whole = time.monotonic() - started
                small = segment.cell_size // 4  # inside data cell 0 of stripe 0: a part read of the stopped node
                started = time.monotonic()
                assert await engine.read(result, 100, 100 + small) == data[100 : 100 + small]
                part = time.monotonic() - started
            finally:
                stopped.resume()
            assert engine.ctx.latency.is_slow(segment.drives[0]), "the stopped node's drive is marked slow"
            assert not damage, f"a slow node is not damaged: {damage}"
            return whole, part

    whole, part = run(scenario())
    assert whole < REQUEST_S / 2 and part < REQUEST_S / 2, (whole, part)


async def teach_batch_threshold(engine, batch: Callable[[], Awaitable]) -> float:
    """Healthy batches teach the batch threshold: at least 8, more while it is still its 1 s ceiling (a machine
    busy with other tests can keep their 95th percentile over half a second for a while). The checks after
    hold at the ceiling too: it is a tenth of a request's timeout."""
    for done in range(32):
        await batch()
        if done >= 7 and engine.ctx.batch_latency.hedge_after() < HEDGE_AFTER_S[1]:
            break
    return engine.ctx.batch_latency.hedge_after()


def test_a_stopped_node_costs_a_batch_the_hedge_threshold_and_later_waves_read_around_it(tmp_path, nodes, keyring,
                                                                                         seed):  # fmt: skip
    """A batch read sends each node one request for all its shard reads; a stopped node's request is given up on
    after the threshold learned from recent batch requests, and each range it held is read around it from
    parity. The next wave does not ask it at all."""
    rng = random.Random(seed)

    async def scenario():
        async with watched_engine(tmp_path, nodes, keyring) as (engine, damage):
            objects = []
            for _ in range(24):
                data = rng.randbytes(rng.randrange(40_000, 300_000))
                objects.append((await engine.write(data), data))
            ranges = [(result, data, 0, len(data)) for result, data in objects]
            for result, data in objects:  # small ranges too: parts of cells
                start = rng.randrange(len(data) - 5000)
                ranges.append((result, data, start, start + rng.randrange(1, 5000)))

            async def batch() -> float:
                started = time.monotonic()
                reads = NodeReads(engine.ctx, [(result.data, start, end) for result, _, start, end in ranges])
                for (_, data, start, end), read in zip(ranges, reads.results, strict=True):
                    assert await read == data[start:end]
                return time.monotonic() - started

            await teach_batch_threshold(engine, batch)
            stopped = nodes[rng.randrange(len(nodes))]
            stopped.pause()
            try:
                first = await batch()
                assert all(engine.ctx.latency.is_slow(drive) for drive in stopped.drive_ids())
                second = await batch()  # the stopped node's drives are read around, not asked
            finally:
                stopped.resume()
            assert not damage, f"a slow node is not damaged: {damage}"
            return first, second

    first, second = run(scenario())
    assert first < REQUEST_S / 2 and second < REQUEST_S / 2, (first, second)


def test_when_every_node_is_late_a_batch_waits_and_marks_no_drive_slow(tmp_path, nodes, keyring, seed):
    """A cluster that is behind everywhere (here: every node stopped for a while) is no slow node to read
    around: the parity is as late as the data. A batch waits for its requests, reads nothing on its own and
    marks no drive slow, so later reads keep their one request per node (before, every range was read alone
    around "slow" drives: thousands of requests into the busy cluster, a batch slower than single GETs)."""
    rng = random.Random(seed)

    async def scenario():
        async with watched_engine(tmp_path, nodes, keyring) as (engine, damage):
            objects = []
            for _ in range(12):
                data = rng.randbytes(rng.randrange(40_000, 300_000))
                objects.append((await engine.write(data), data))
            ranges = [(result.data, 0, len(data)) for result, data in objects]
            threshold = await teach_batch_threshold(
                engine, lambda: asyncio.gather(*NodeReads(engine.ctx, ranges).results))  # fmt: skip
            for node in nodes:
                node.pause()
            loop = asyncio.get_running_loop()
            loop.call_later(threshold * 3 + 0.5, lambda: [node.resume() for node in nodes])
            reads = NodeReads(engine.ctx, ranges)
            got = await asyncio.gather(*reads.results)
            assert got == [data for _, data in objects]
            slow = [drive for node in nodes for drive in node.drive_ids() if engine.ctx.latency.is_slow(drive)]
            assert not slow, f"no drive is slower than the others: {slow}"
            assert not damage

    run(scenario())
