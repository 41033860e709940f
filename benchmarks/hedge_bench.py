"""GET latency with one storage node stalling: hedged reads against waiting for the node.

A cluster on this machine (PostgreSQL from Debian's packages in a temp dir, one ``apollo meta``, six
``apollo storage`` processes of one directory drive each, 4+2). One client process reads whole objects
one GET at a time and records each GET's latency, in three phases of the same run:

- **healthy**: every node answers;
- **stalled, hedged**: one node holding shards of every object is stopped (SIGSTOP) for ``--stall-ms`` out
  of every ``2 x --stall-ms``, the client as shipped (a read hedges past 3x the recent 95th percentile);
- **stalled, not hedged**: the same stalls, the same client with its hedge threshold held at 10 s (the
  node's request timeout: what reads did before hedging).

The stopped node is alive: its connections are accepted and nothing is answered until it is continued. The
phases print p50, p90, p99 and the worst GET, and the hedged phase's p99 against the healthy one. Every byte
read is compared with what was written. With ``--batch N`` each GET is a batch GET (``get_batch``) of N
objects, one request per storage node, hedged per node request.

    .venv/bin/python benchmarks/hedge_bench.py            # 200 objects of 1 MiB, 400 GETs per phase
    .venv/bin/python benchmarks/hedge_bench.py --batch 32 --size 102400 --objects 1000 --gets 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apollo.client import AsyncClient  # noqa: E402
from apollo.client.context import ReadLatency  # noqa: E402
from apollo.testing.cluster import LocalCluster  # noqa: E402
from apollo.testing.postgres import TempPostgres  # noqa: E402
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY  # noqa: E402


class _NeverHedge(ReadLatency):
    """The reader as it was before hedging: wait for a shard as long as its node's request timeout."""

    def hedge_after(self) -> float:
        return 10.0

    def is_slow(self, drive_id: str) -> bool:
        return False


class _Staller:
    """Stops a process for ``stall_s`` out of every ``2 * stall_s`` until stopped itself."""

    def __init__(self, pid: int, stall_s: float) -> None:
        self.pid, self.stall_s = pid, stall_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Staller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        os.kill(self.pid, signal.SIGCONT)

    def _run(self) -> None:
        while not self._done.is_set():
            os.kill(self.pid, signal.SIGSTOP)
            time.sleep(self.stall_s)
            os.kill(self.pid, signal.SIGCONT)
            self._done.wait(self.stall_s)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _gets(client: AsyncClient, bucket: str, bodies: dict[str, bytes], count: int, rng: random.Random,
                batch: int = 0) -> list[float]:  # fmt: skip
    """``count`` GETs one at a time (each of a batch of ``batch`` objects when it is not 0); their latencies."""
    keys = list(bodies)
    latencies = []
    for _ in range(count):
        chosen = rng.sample(keys, batch) if batch else [rng.choice(keys)]
        started = time.perf_counter()
        if batch:
            got = [result.data async for result in client.get_batch([(bucket, key) for key in chosen])]
        else:
            got = [await client.get(bucket, chosen[0])]
        latencies.append(time.perf_counter() - started)
        for key, data in zip(chosen, got, strict=True):
            if data != bodies[key]:
                raise RuntimeError(f"{key}: bytes differ from those written")
    return latencies


async def _run(cluster: LocalCluster, options: argparse.Namespace) -> dict[str, list[float]]:
    rng = random.Random(7)
    bodies = {f"obj/{n:05d}": rng.randbytes(options.size) for n in range(options.objects)}
    results: dict[str, list[float]] = {}
    async with AsyncClient(cluster.meta_urls, DEV_ACCESS_KEY, DEV_SECRET_KEY, **cluster.native_options()) as client:
        await client.create_bucket("hedge")
        for key, body in bodies.items():
            await client.put("hedge", key, body)
        batch = options.batch
        await _gets(client, "hedge", bodies, 50, rng, batch)  # warm-up: connections, layouts, learned thresholds
        results["healthy"] = await _gets(client, "hedge", bodies, options.gets, rng, batch)
        drive_counts: dict[str, int] = {}
        for key in bodies:  # the node holding the most first data shards
            version = await client._engine.head("hedge", key)
            first = version.data.segments[0].drives[0]
            drive_counts[first] = drive_counts.get(first, 0) + 1
        target = max(drive_counts, key=drive_counts.get)
        serving = client._engine.ctx.node(target).endpoint
        node = next(node for node in cluster.nodes if node.endpoint == serving)
        ctx = client._engine.ctx
        learned = (ctx.batch_latency if batch else ctx.latency).hedge_after()
        print(f"stalling {node.endpoint} (pid {node.process.pid}), first data shard of {drive_counts[target]} of "
              f"{len(bodies)} objects; hedge threshold learned: {learned * 1000:.1f} ms")
        with _Staller(node.process.pid, options.stall_ms / 1000):
            results["stalled, hedged"] = await _gets(client, "hedge", bodies, options.gets, rng, batch)
            shipped = ctx.latency, ctx.batch_latency
            ctx.latency, ctx.batch_latency = _NeverHedge(), _NeverHedge()
            try:
                results["stalled, not hedged"] = await _gets(client, "hedge", bodies, options.gets, rng, batch)
            finally:
                ctx.latency, ctx.batch_latency = shipped
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--gets", type=int, default=400, help="GETs per phase, one at a time")
    parser.add_argument("--stall-ms", type=float, default=200.0)
    parser.add_argument("--batch", type=int, default=0, help="objects per GET: a batch GET of this many (0: single)")
    options = parser.parse_args()
    each = f"batch GETs of {options.batch} objects" if options.batch else "GETs"
    print(f"4+2, 6 storage processes, {options.objects} objects of {options.size} bytes, {options.gets} {each} per "
          f"phase one at a time, stalls of {options.stall_ms:.0f} ms every {2 * options.stall_ms:.0f} ms; "
          f"cpus={os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="apollo-hedge-bench-") as root, TempPostgres(durable=True) as pg, \
            LocalCluster(Path(root) / "cluster", pg.create_database("bench")) as cluster:  # fmt: skip
        results = asyncio.run(_run(cluster, options))
    healthy_p99 = _percentile(results["healthy"], 0.99)
    for name, latencies in results.items():
        p50, p90, p99 = (_percentile(latencies, f) for f in (0.5, 0.9, 0.99))
        print(f"  {name:<22} p50 {p50 * 1000:8.1f} ms  p90 {p90 * 1000:8.1f} ms  p99 {p99 * 1000:8.1f} ms  "
              f"worst {max(latencies) * 1000:8.1f} ms  mean {statistics.mean(latencies) * 1000:7.1f} ms  "
              f"p99 vs healthy {p99 / healthy_p99:5.2f}x")


if __name__ == "__main__":
    main()
