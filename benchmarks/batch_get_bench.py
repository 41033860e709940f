"""Batch GET vs single GETs on the native path, against one ``apollo server`` (6 directory drives, 4+2).

The same 1,000 objects are read three ways, in one run, by one client process:

- **single, one at a time**: ``AsyncClient.get`` per object, each awaited before the next (a naive loop);
- **single, 64 at once**: the same ``get`` calls, 64 in flight (what a tuned data loader does);
- **batch**: ``AsyncClient.get_batch`` of all 1,000 (one metadata call; at most 64 reads in flight).

Each way reads every object once per round; rounds alternate the three ways so that drift on a shared
machine hits them alike, and the median round is reported. The client's layout cache is bypassed for
single GETs (each is a fresh lookup, as for a key seen the first time): a training epoch reads each
sample once. Every byte read is compared with what was written.

    .venv/bin/python benchmarks/batch_get_bench.py                 # 10 KiB and 1 MiB, 1,000 objects
    .venv/bin/python benchmarks/batch_get_bench.py --sizes 10240 --objects 200 --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apollo.client import AsyncClient  # noqa: E402
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess  # noqa: E402

CONCURRENCY = 64


async def _single_sequential(client: AsyncClient, bucket: str, keys: list[str]) -> list[bytes]:
    return [await client.get(bucket, key) for key in keys]


async def _single_concurrent(client: AsyncClient, bucket: str, keys: list[str]) -> list[bytes]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(key: str) -> bytes:
        async with gate:
            return await client.get(bucket, key)

    return await asyncio.gather(*(one(key) for key in keys))


async def _batch(client: AsyncClient, bucket: str, keys: list[str]) -> list[bytes]:
    results = [r async for r in client.get_batch([(bucket, key) for key in keys], window=CONCURRENCY)]
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} batch items failed, e.g. {failed[0].error!r}")
    return [r.data for r in results]


WAYS = {"single, one at a time": _single_sequential, f"single, {CONCURRENCY} at once": _single_concurrent,
        "batch": _batch}  # fmt: skip


async def _measure(endpoint: str, size: int, count: int, rounds: int) -> dict[str, list[float]]:
    bucket = f"bench-{size}"
    keys = [f"sample/{n:06d}" for n in range(count)]
    bodies = {key: os.urandom(size) for key in keys}
    async with AsyncClient(endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as client:
        await client.create_bucket(bucket)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def put(key: str) -> None:
            async with gate:
                await client.put(bucket, key, bodies[key])

        await asyncio.gather(*(put(key) for key in keys))
        expected = [bodies[key] for key in keys]
        seconds: dict[str, list[float]] = {name: [] for name in WAYS}
        for _ in range(rounds + 1):  # the first round warms connections and is not counted
            for name, way in WAYS.items():
                client._layouts.clear()  # every single GET looks its key up, as on first sight
                started = time.perf_counter()
                got = await way(client, bucket, keys)
                elapsed = time.perf_counter() - started
                if got != expected:
                    raise RuntimeError(f"{name}: bytes differ from those written")
                seconds[name].append(elapsed)
        return {name: times[1:] for name, times in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10240,1048576", help="object sizes in bytes, comma-separated")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="apollo-batch-bench-") as root:
        server = ServerProcess(Path(root)).start()
        try:
            print(f"apollo server, 6 directory drives under {root}, 4+2; one client process, "
                  f"{options.objects} objects per size, median of {options.rounds} rounds; cpus={os.cpu_count()}")
            for size in (int(s) for s in options.sizes.split(",")):
                times = asyncio.run(_measure(server.endpoint, size, options.objects, options.rounds))
                batch = statistics.median(times["batch"])
                print(f"\nobject size {size} bytes ({'inline in metadata' if size <= 16384 else 'on the drives'})")
                for name, measured in times.items():
                    median = statistics.median(measured)
                    print(f"  {name:<24} {median * 1000:9.1f} ms  {options.objects / median:9.0f} objects/s  "
                          f"{options.objects * size / median / 1e6:8.1f} MB/s  batch is {median / batch:5.2f}x")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
