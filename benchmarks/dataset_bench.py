"""Iterable dataset samples/s: ``ApolloIterableDataset`` (native client) vs s3torchconnector's
``S3IterableDataset`` over Apollo's own S3 gateway, the same DataLoader around each, one ``apollo server``.

The server has 6 directory drives (4+2). N objects of SIZE bytes (default 4,000 of 100 KiB) are written
once under ``sample/`` through the native client. Each round is one epoch of every sample through:

- **apollo**: ``ApolloIterableDataset.from_prefix`` (one snapshot and listing, before the rounds) under
  ``ApolloDataLoader``: each worker reads its share with batch GETs, straight from the storage service;
- **s3torchconnector**: ``S3IterableDataset.from_objects`` (the same keys, so no listing and no HEAD: its
  leanest form) with ``enable_sharding=True`` under a ``DataLoader``, through the server's S3 endpoint
  (plain HTTP, path-style addressing: ``S3ClientConfig(force_path_style=True)``).

Both loaders have ``num_workers`` workers (default 4), persistent across rounds (worker start-up is not
storage), the same ``batch_size``, and the same work per sample in the worker: read it, then its CRC32C and
length. The main process checks that every key came exactly once with the CRC32C written, so a fast but
wrong path cannot win. A warm-up epoch of each (connections, clients) is not counted; rounds alternate so
that drift on a shared machine hits both alike; the medians and their ratio are printed.

    pip install --no-deps s3torchconnector==1.5.0 s3torchconnectorclient==1.5.0   # --no-deps: keeps torch
    .venv/bin/python benchmarks/dataset_bench.py                                    # 4,000 x 100 KiB, 4 workers
    .venv/bin/python benchmarks/dataset_bench.py --objects 500 --rounds 1           # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import crc32c  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from apollo.client import AsyncClient  # noqa: E402
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess  # noqa: E402
from apollo.torch import ApolloDataLoader, ApolloIterableDataset, ApolloSample  # noqa: E402

BUCKET = "dataset-bench"
PREFIX = "sample/"
REGION = "us-east-1"
PUT_CONCURRENCY = 64
APOLLO, S3 = "apollo (native, batch GET)", "s3torchconnector (S3 gateway)"
INSTALL = "pip install --no-deps s3torchconnector==1.5.0 s3torchconnectorclient==1.5.0"

Checked = tuple[str, int, int]  # (key, CRC32C, length): what a worker hands the loop for one sample


def apollo_sample(sample: ApolloSample) -> Checked:
    return sample.key, crc32c.crc32c(sample.data), len(sample.data)


def s3_sample(reader) -> Checked:  # an s3torchconnector S3Reader
    data = reader.read()
    return reader.key, crc32c.crc32c(data), len(data)


def as_list(batch: list[Checked]) -> list[Checked]:
    """The collate function of both loaders: the batch as it is (no tensors to make of three fields)."""
    return batch


async def populate(endpoint: str, count: int, size: int) -> dict[str, tuple[int, int]]:
    """``count`` random objects of ``size`` bytes; their (CRC32C, length) by key."""
    expected: dict[str, tuple[int, int]] = {}
    async with AsyncClient(endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as client:
        await client.create_bucket(BUCKET)
        gate = asyncio.Semaphore(PUT_CONCURRENCY)

        async def put(n: int) -> None:
            key, body = f"{PREFIX}{n:07d}", os.urandom(size)
            expected[key] = (crc32c.crc32c(body), size)
            async with gate:
                await client.put(BUCKET, key, body)

        await asyncio.gather(*(put(n) for n in range(count)))
    return expected


def epoch(loader: Iterable[list[Checked]], expected: dict[str, tuple[int, int]], name: str) -> float:
    """Seconds for one epoch of ``loader``; then every sample checked. :raises RuntimeError: a sample missing,
    repeated, or with other bytes than those written."""
    started = time.perf_counter()
    got = [sample for batch in loader for sample in batch]
    elapsed = time.perf_counter() - started
    seen = {key: (crc, length) for key, crc, length in got}
    if len(got) != len(expected) or seen != expected:
        wrong = sum(1 for key, value in seen.items() if expected.get(key) != value)
        raise RuntimeError(f"{name}: {len(got)} samples, {len(seen)} distinct, {wrong} with other bytes; "
                           f"expected each of {len(expected)} once")  # fmt: skip
    return elapsed


def loaders(server: ServerProcess, keys: list[str], workers: int, batch: int) -> dict[str, DataLoader]:
    """The two loaders over the same samples, workers persistent across epochs."""
    from s3torchconnector import S3ClientConfig, S3IterableDataset

    os.environ.update(APOLLO_ENDPOINT=server.endpoint, APOLLO_ACCESS_KEY=DEV_ACCESS_KEY,
                      APOLLO_SECRET_KEY=DEV_SECRET_KEY, AWS_ACCESS_KEY_ID=DEV_ACCESS_KEY,
                      AWS_SECRET_ACCESS_KEY=DEV_SECRET_KEY)  # fmt: skip
    options = {"batch_size": batch, "num_workers": workers, "persistent_workers": workers > 0, "collate_fn": as_list}
    apollo = ApolloIterableDataset.from_prefix(f"apollo://{BUCKET}/{PREFIX}", batch_size=batch,
                                               transform=apollo_sample)  # fmt: skip
    s3 = S3IterableDataset.from_objects([f"s3://{BUCKET}/{key}" for key in keys], region=REGION,
                                        endpoint=server.endpoint, transform=s3_sample, enable_sharding=True,
                                        s3client_config=S3ClientConfig(force_path_style=True))  # fmt: skip
    return {APOLLO: ApolloDataLoader(apollo, **options), S3: DataLoader(s3, **options)}


def measure(loaders_by_name: dict[str, DataLoader], expected: dict[str, tuple[int, int]], rounds: int,
            report: Callable[[str], None]) -> dict[str, list[float]]:  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in loaders_by_name}
    for round_number in range(rounds + 1):  # round 0 warms connections and clients: not counted
        for name, loader in loaders_by_name.items():
            elapsed = epoch(loader, expected, name)
            report(f"  {'warm-up' if round_number == 0 else f'round {round_number}'}: {name:<30} "
                   f"{len(expected) / elapsed:9.0f} samples/s")  # fmt: skip
            if round_number:
                seconds[name].append(elapsed)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=4000)
    parser.add_argument("--size", type=int, default=100 * 1024, help="bytes per sample")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of each loader")
    parser.add_argument("--batch", type=int, default=32, help="DataLoader batch size")
    parser.add_argument("--rounds", type=int, default=5, help="epochs of each loader counted (after a warm-up)")
    options = parser.parse_args()
    try:
        import s3torchconnector
    except ImportError:
        sys.exit(f"the baseline needs s3torchconnector: {INSTALL}")
    import torch

    # The machine's core count is printed with the figures; 4 workers is the configuration measured.
    warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
    with tempfile.TemporaryDirectory(prefix="apollo-dataset-bench-") as root:
        server = ServerProcess(Path(root)).start()
        try:
            print(f"apollo server, 6 directory drives under {root}, 4+2; {options.objects} objects of "
                  f"{options.size} bytes; DataLoader num_workers={options.workers} (persistent), "
                  f"batch_size={options.batch}; median of {options.rounds} epochs after a warm-up, alternating; "
                  f"torch {torch.__version__}, s3torchconnector {s3torchconnector.__version__}; "
                  f"cpus={os.cpu_count()}")  # fmt: skip
            started = time.perf_counter()
            expected = asyncio.run(populate(server.endpoint, options.objects, options.size))
            print(f"  written in {time.perf_counter() - started:.1f} s (native client, {PUT_CONCURRENCY} at once)")
            by_name = loaders(server, sorted(expected), options.workers, options.batch)
            seconds = measure(by_name, expected, options.rounds, print)
            by_name.clear()  # the loaders' persistent workers stop now, while the server is up
            gc.collect()
            rates = {name: options.objects / statistics.median(times) for name, times in seconds.items()}
            print("\nmedian samples/s (every sample's CRC32C checked)")
            for name, rate in rates.items():
                print(f"  {name:<30} {rate:9.0f} samples/s  {rate * options.size / 1e6:8.1f} MB/s")
            print(f"  {'apollo / s3torchconnector':<30} {rates[APOLLO] / rates[S3]:9.2f}x")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
