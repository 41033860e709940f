"""Would ``--workers N`` help here? An upper bound, measured before building it.

Runs the same load against one server and against two independent servers
(each its own drives and metadata, so nothing is shared), with the same
generator processes and total concurrency, and prints the aggregate rates.
Two separate servers are what N workers could at best achieve: real workers
would add contention on the shared SQLite database, so if this bound shows no
gain on a machine, workers would not either.

    .venv/bin/python benchmarks/multiprocess_probe.py [--duration 8] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import loadgen
import procstat

from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess

BUCKET = "probe"
KEYS = 64
CASES = (("GET 4 KiB", "get", 4096), ("PUT 4 KiB", "put", 4096), ("GET 1 MiB", "get", 1024 * 1024))


def _task(server: ServerProcess, op: str, size: int, start_at: float, deadline: float, **extra) -> dict:
    return {"target": "apollo", "op": op, "size": size, "start_at": start_at, "deadline": deadline,
            "endpoint": server.endpoint, "bucket": BUCKET, "access_key": DEV_ACCESS_KEY,
            "secret_key": DEV_SECRET_KEY, "client": "raw", "warmup": False, "key_prefix": f"{op}/",
            "keys": [f"get/{size}/{i:07d}" for i in range(KEYS)], **extra}  # fmt: skip


def _populate(pool: loadgen.WorkerPool, server: ServerProcess, size: int) -> None:
    now = time.monotonic()
    pool.submit([_task(server, "populate", size, now, now, key_prefix=f"get/{size}/", slots=8, worker=0,
                       populate=(0, KEYS))])  # fmt: skip
    (result,) = pool.collect()
    if result["errors"]:
        raise SystemExit(f"populate failed: {result['first_error']}")


def _measure(pool: loadgen.WorkerPool, targets: list[ServerProcess], op: str, size: int, args) -> tuple[float, float]:
    """Aggregate ops/s and server CPU (% of the machine) with generator i driving targets[i % len(targets)]."""
    procs = len(pool.workers)
    start_at = time.monotonic() + 0.5
    deadline = start_at + args.duration
    tasks = [_task(targets[i % len(targets)], op, size, start_at, deadline, slots=args.concurrency // procs,
                   worker=i) for i in range(procs)]  # fmt: skip
    pool.submit(tasks)
    pids = [p for server in targets for p in procstat.tree(server.process.pid)]
    time.sleep(max(0.0, start_at - time.monotonic()))
    cpu0 = procstat.cpu_seconds(pids)
    results = pool.collect()
    window = time.monotonic() - start_at
    cpu = procstat.cpu_seconds(pids) - cpu0
    errors = sum(r["errors"] for r in results)
    if errors:
        raise SystemExit(f"{errors} errors: {next(r['first_error'] for r in results if r['first_error'])}")
    wall = max(r["t_end"] for r in results) - start_at
    return sum(r["ops"] for r in results) / wall, 100 * cpu / window / (os.cpu_count() or 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8, help="total, split over the generator processes")
    parser.add_argument("--procs", type=int, default=2, help="generator processes")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix=".mpprobe-", dir="."))
    servers = [ServerProcess(root / f"server{n}") for n in range(2)]
    pool = loadgen.WorkerPool(args.procs)
    try:
        for server in servers:
            server.start()
            server.s3().create_bucket(Bucket=BUCKET)
            for _, _, size in CASES:
                _populate(pool, server, size)
        print(f"# {os.cpu_count()} CPUs, {args.procs} generator processes, total concurrency {args.concurrency}, "
              f"{args.duration:g} s per run")  # fmt: skip
        print("| load | 1 server ops/s | 2 servers ops/s | gain | server CPU 1 / 2 |")
        print("|---|---|---|---|---|")
        for name, op, size in CASES:
            one, cpu_one = _measure(pool, servers[:1], op, size, args)
            two, cpu_two = _measure(pool, servers, op, size, args)
            print(f"| {name} | {one:,.0f} | {two:,.0f} | {two / one:.2f}x | {cpu_one:.0f}% / {cpu_two:.0f}% |",
                  flush=True)  # fmt: skip
    finally:
        pool.close()
        for server in servers:
            server.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
