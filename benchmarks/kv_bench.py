"""The KV-cache tier (``apollo.kv.KVStore``): ``get_into`` of large values against the native client's plain
single-stream GET of an object of the same size (the baseline, measured in the same run, alternating) and
its ``get_into`` (the same read, into a buffer, without the KV lookup), and
``prefix_hits`` of 64 keys: its metadata round trips (counted by the metadata service's own
``apollo_meta_rpc_total``, over every method) and its latency, against 64 HEADs, what a connector without
it pays (LMCache's S3 connector asks one per chunk).

The deployment is one ``apollo server`` (6 directory drives, 4+2) or a cluster (``--cluster``: one ``apollo
meta`` on PostgreSQL, six ``apollo storage`` processes). Values are random bytes, ``--value-mib`` each (an 8B
model's 256-token KV chunk is ~32 MiB), read into one preallocated buffer; every read is compared with what
was written. Rates are medians of ``--rounds``.

    .venv/bin/python benchmarks/kv_bench.py
    .venv/bin/python benchmarks/kv_bench.py --cluster
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apollo.client import AsyncClient  # noqa: E402
from apollo.kv import KVStore  # noqa: E402
from apollo.testing.cluster import LocalCluster  # noqa: E402
from apollo.testing.postgres import TempPostgres  # noqa: E402
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess  # noqa: E402

PREFIX_KEYS = 64


def metadata_calls(meta_url: str) -> float:
    """Every metadata call the service has answered, of any method and outcome."""
    with urllib.request.urlopen(meta_url.split(",")[0] + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(n) for n in re.findall(r"^apollo_meta_rpc_total\{[^}]*\} ([0-9.e+]+)$", text, re.MULTILINE))


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(meta_url: str, options: argparse.Namespace) -> None:
    size = options.value_mib << 20
    values = [os.urandom(size) for _ in range(options.values)]
    async with AsyncClient(meta_url, DEV_ACCESS_KEY, DEV_SECRET_KEY) as client:
        await client.create_bucket("plain")
        cache = KVStore(client, "kv")
        await cache.create(budget_bytes=(options.values + 1) * size)
        put_s: dict[str, list[float]] = {"plain put": [], "KV put": []}
        for n, value in enumerate(values):
            for name, put in (("plain put", client.put("plain", f"v{n}", value)),
                              ("KV put", cache.put(f"v{n}", value))):  # fmt: skip
                started = time.perf_counter()
                await put
                put_s[name].append(time.perf_counter() - started)
        buffer = bytearray(size)
        get_s: dict[str, list[float]] = {"native GET (get, one stream)": [], "native get_into": [], "KV get_into": []}
        for round_number in range(options.rounds):
            n = round_number % options.values
            started = time.perf_counter()
            plain = await client.get("plain", f"v{n}")
            get_s["native GET (get, one stream)"].append(time.perf_counter() - started)
            for name, read in (("native get_into", client.get_into("plain", f"v{n}", buffer)),
                               ("KV get_into", cache.get_into(f"v{n}", buffer))):  # fmt: skip
                buffer[:] = bytes(size)
                started = time.perf_counter()
                got = await read
                get_s[name].append(time.perf_counter() - started)
                if got != size or buffer != values[n]:
                    raise RuntimeError(f"{name}: value {n} read back wrong")
            if plain != values[n]:
                raise RuntimeError(f"value {n} read back wrong")
        print(f"{'large values':<32} {'median':>9} {'MB/s':>8} {'vs baseline':>12}")
        for rows, baseline in ((put_s, "plain put"), (get_s, "native GET (get, one stream)")):
            base = statistics.median(rows[baseline])
            for name, samples in rows.items():
                median = statistics.median(samples)
                print(f"{name:<32} {median * 1000:7.1f}ms {size / median / 1e6:8.0f} {base / median:11.2f}x")

        keys = [f"v{n % options.values}" for n in range(PREFIX_KEYS - 1)] + ["missing"]
        hits_s, heads_s, calls = [], [], []
        for _ in range(options.prefix_rounds):
            before = metadata_calls(meta_url)
            started = time.perf_counter()
            hits = await cache.prefix_hits(keys)
            hits_s.append(time.perf_counter() - started)
            calls.append(metadata_calls(meta_url) - before)
            if hits != PREFIX_KEYS - 1:
                raise RuntimeError(f"prefix_hits said {hits}")
            started = time.perf_counter()
            for key in keys:
                await client.head("kv", key)
            heads_s.append(time.perf_counter() - started)
        print(f"\nprefix_hits of {PREFIX_KEYS} keys ({PREFIX_KEYS - 1} hits), {options.prefix_rounds} rounds")
        print(f"{'way':<32} {'p50':>9} {'p99':>9} {'metadata calls':>15}")
        print(f"{'KVStore.prefix_hits':<32} {percentile(hits_s, 0.5) * 1000:7.2f}ms "
              f"{percentile(hits_s, 0.99) * 1000:7.2f}ms {statistics.mean(calls):15.2f}")  # fmt: skip
        print(f"{'64 HEADs (head, one by one)':<32} {percentile(heads_s, 0.5) * 1000:7.2f}ms "
              f"{percentile(heads_s, 0.99) * 1000:7.2f}ms {PREFIX_KEYS:15d}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--value-mib", type=int, default=32)
    parser.add_argument("--values", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--prefix-rounds", type=int, default=200)
    parser.add_argument("--cluster", action="store_true", help="a cluster on PostgreSQL, not apollo server")
    options = parser.parse_args()
    kind = "cluster (apollo meta on PostgreSQL, 6 storage processes)" if options.cluster else "apollo server"
    print(f"{options.values} values of {options.value_mib} MiB, {options.rounds} reads of each way (median), "
          f"{kind}, 4+2; cpus={os.cpu_count()}\n")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="apollo-kv-bench-") as root:
        if options.cluster:
            with TempPostgres(durable=True) as pg, LocalCluster(Path(root) / "c", pg.create_database("b")) as cluster:
                asyncio.run(run(cluster.meta_urls, options))
        else:
            with ServerProcess(Path(root) / "server") as server:
                asyncio.run(run(server.endpoint, options))


if __name__ == "__main__":
    main()
