"""Batch GET vs single GETs on the native path, on ``apollo server`` and on a cluster, with requests counted.

Deployments (``--targets``): one ``apollo server`` (6 directory drives, 4+2, one process serving metadata
and every drive), and a cluster (PostgreSQL from Debian's packages in a temp dir, one ``apollo meta``, six
``apollo storage`` processes of one directory drive each, 4+2). The same 1,000 objects are read four ways,
in one run, by one client process:

- **single, one at a time**: ``AsyncClient.get`` per object, each awaited before the next (a naive loop);
- **single, 64 at once**: the same ``get`` calls, 64 in flight (what a tuned data loader does);
- **batch**: ``AsyncClient.get_batch`` of all 1,000 (one metadata call, then waves of one request per
  storage node);
- **cat_ranges**: the ``apollo://`` fsspec filesystem's ``cat_ranges`` of one 4 KiB range of each object.

Each way reads every object once per round; rounds alternate the ways so that drift on a shared machine
hits them alike, and the median round is reported. The client's layout cache is bypassed for single GETs
(each is a fresh lookup, as for a key seen the first time): a training epoch reads each sample once. Every
byte read is compared with what was written. Requests are counted at the servers, from their own metrics,
in the last round: shard requests at every storage process, and metadata calls other than the periodic
ones (cluster map refreshes, node heartbeats).

    .venv/bin/python benchmarks/batch_get_bench.py          # 10 KiB, 100 KiB, 1 MiB; server and cluster
    .venv/bin/python benchmarks/batch_get_bench.py --sizes 10240 --objects 200 --rounds 1 --targets server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apollo.client import AsyncClient  # noqa: E402
from apollo.integrations.fsspec import ApolloFileSystem  # noqa: E402
from apollo.testing.cluster import LocalCluster  # noqa: E402
from apollo.testing.postgres import TempPostgres  # noqa: E402
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess  # noqa: E402

CONCURRENCY = 64
RANGE_BYTES = 4096
PERIODIC_CALLS = {"cluster_map", "node_heartbeat"}  # a client's map refresh, a node's heartbeat: not the reads'


class Deployment:
    """Where the objects live: the client's endpoint, and every process whose requests are counted."""

    def __init__(self, name: str, endpoint: str, meta_urls: list[str], node_urls: list[str]) -> None:
        self.name, self.endpoint, self.meta_urls, self.node_urls = name, endpoint, meta_urls, node_urls

    def requests(self) -> int:
        """Shard requests at every storage process, plus metadata calls that are not periodic."""
        total = 0
        for url in self.node_urls:
            total += sum(int(float(n)) for _, n in _samples(url, "apollo_shard_requests_total"))
        for url in self.meta_urls:
            for labels, n in _samples(url, "apollo_meta_rpc_total"):
                if re.search(r'method="([^"]+)"', labels).group(1) not in PERIODIC_CALLS:
                    total += int(float(n))
        return total


def _samples(url: str, metric: str) -> list[tuple[str, str]]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return re.findall(rf"^{metric}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE)


async def _single_sequential(client: AsyncClient, fs, bucket: str, keys: list[str]) -> list[bytes]:
    return [await client.get(bucket, key) for key in keys]


async def _single_concurrent(client: AsyncClient, fs, bucket: str, keys: list[str]) -> list[bytes]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(key: str) -> bytes:
        async with gate:
            return await client.get(bucket, key)

    return await asyncio.gather(*(one(key) for key in keys))


async def _batch(client: AsyncClient, fs, bucket: str, keys: list[str]) -> list[bytes]:
    results = [r async for r in client.get_batch([(bucket, key) for key in keys])]
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} batch items failed, e.g. {failed[0].error!r}")
    return [r.data for r in results]


async def _cat_ranges(client: AsyncClient, fs: ApolloFileSystem, bucket: str, keys: list[str]) -> list[bytes]:
    starts = [_range_start(n) for n in range(len(keys))]
    return await fs._cat_ranges([f"{bucket}/{key}" for key in keys], starts, [s + RANGE_BYTES for s in starts])


def _range_start(number: int) -> int:
    return (number * 7919) % 4096  # spread over the first cells, some across a cell boundary


WAYS = {"single, one at a time": _single_sequential, f"single, {CONCURRENCY} at once": _single_concurrent,
        "batch": _batch, "cat_ranges": _cat_ranges}  # fmt: skip


async def _measure(deployment: Deployment, size: int, count: int, rounds: int, options: dict
                   ) -> tuple[dict[str, list[float]], dict[str, int]]:  # fmt: skip
    bucket = f"bench-{size}"
    keys = [f"sample/{n:06d}" for n in range(count)]
    bodies = {key: os.urandom(size) for key in keys}
    async with AsyncClient(deployment.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY, **options) as client:
        fs = ApolloFileSystem(deployment.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY, asynchronous=True,
                              skip_instance_cache=True, client_kwargs=options)  # fmt: skip
        await client.create_bucket(bucket)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def put(key: str) -> None:
            async with gate:
                await client.put(bucket, key, bodies[key])

        await asyncio.gather(*(put(key) for key in keys))
        expected = {name: [bodies[key] for key in keys] for name in WAYS}
        expected["cat_ranges"] = [bodies[key][_range_start(n) : _range_start(n) + RANGE_BYTES]
                                  for n, key in enumerate(keys)]  # fmt: skip
        seconds: dict[str, list[float]] = {name: [] for name in WAYS}
        requests: dict[str, int] = {}
        for _ in range(rounds + 1):  # the first round warms connections and is not counted
            for name, way in WAYS.items():
                client._layouts.clear()  # every single GET looks its key up, as on first sight
                before = deployment.requests()
                started = time.perf_counter()
                got = await way(client, fs, bucket, keys)
                elapsed = time.perf_counter() - started
                requests[name] = deployment.requests() - before
                if got != expected[name]:
                    raise RuntimeError(f"{name}: bytes differ from those written")
                seconds[name].append(elapsed)
        await fs.close_client()
        return {name: times[1:] for name, times in seconds.items()}, requests


@contextlib.contextmanager
def _deployment(kind: str, root: Path) -> Iterator[tuple[Deployment, dict]]:
    if kind == "server":
        server = ServerProcess(root / "server").start()
        try:
            yield Deployment("apollo server (6 drives, one process)", server.endpoint, [server.endpoint],
                             [server.endpoint]), {}  # fmt: skip
        finally:
            server.stop()
        return
    with TempPostgres(durable=True) as pg, LocalCluster(root / "cluster", pg.create_database("bench")) as cluster:
        name = f"cluster ({len(cluster.nodes)} storage processes x 1 drive, one apollo meta, PostgreSQL)"
        yield Deployment(name, cluster.meta_urls, cluster.meta_urls.split(","),
                         [node.endpoint for node in cluster.nodes]), cluster.native_options()  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10240,102400,1048576", help="object sizes in bytes, comma-separated")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", default="server,cluster", help="server, cluster or both (comma-separated)")
    options = parser.parse_args()
    print(f"4+2; one client process, {options.objects} objects per size, median of {options.rounds} rounds; "
          f"cpus={os.cpu_count()}")
    for kind in options.targets.split(","):
        with tempfile.TemporaryDirectory(prefix="apollo-batch-bench-") as root, \
                _deployment(kind, Path(root)) as (deployment, client_options):  # fmt: skip
            print(f"\n== {deployment.name}")
            for size in (int(s) for s in options.sizes.split(",")):
                times, requests = asyncio.run(_measure(deployment, size, options.objects, options.rounds,
                                                       client_options))  # fmt: skip
                batch = statistics.median(times["batch"])
                print(f"\nobject size {size} bytes ({'inline in metadata' if size <= 16384 else 'on the drives'})")
                for name, measured in times.items():
                    median = statistics.median(measured)
                    print(f"  {name:<24} {median * 1000:9.1f} ms  {options.objects / median:9.0f} objects/s  "
                          f"batch is {median / batch:5.2f}x  requests at the servers: {requests[name]}")


if __name__ == "__main__":
    main()
