"""Shared commits in process on PostgreSQL: ``SqlStore.commit_versions`` of small inline objects in a loop.

One caller, no RPC: what the store and PostgreSQL spend per commit of a batch (``apollo.meta.sql_shared_commits``),
the part of a commit through ``apollo meta`` that batching changes. Each round overwrites the same 200 keys.

    .venv/bin/python benchmarks/commit_batch_bench.py --batches 4,16
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstat  # noqa: E402

from apollo.meta.store import SqlStore  # noqa: E402
from apollo.proto.layout import ObjectData  # noqa: E402
from apollo.proto.records import ObjectAttrs  # noqa: E402
from apollo.testing.postgres import TempPostgres  # noqa: E402

BODY = b"12345678"
KEYS = 200


def _batch(size: int, n: int) -> list[dict]:
    return [{"bucket": "ops", "key": f"k{(n * size + i) % KEYS}", "size": len(BODY),
             "etag": hashlib.md5(BODY).hexdigest(), "attrs": ObjectAttrs(), "data": ObjectData(len(BODY), inline=BODY)}
            for i in range(size)]  # fmt: skip


def measure(store: SqlStore, pg: TempPostgres, size: int, seconds: float) -> dict:
    """Batches of ``size`` for ``seconds``: commits/s, and the CPU this process and PostgreSQL spent per commit."""
    batches, cpu, pg_cpu = 0, time.process_time(), procstat.cpu_seconds(procstat.tree(pg.pid()), reaped=True)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = _batch(size, batches)
        outcomes = store.engine.run(lambda: store.commit_versions(batch, owner="bench", now=time.time()))  # noqa: B023
        if any(outcome.error for outcome in outcomes):
            raise RuntimeError(f"a commit failed: {outcomes}")
        batches += 1
    elapsed, commits = time.perf_counter() - started, batches * size
    return {"batch": size, "commits": commits, "commits_per_s": round(commits / elapsed),
            "process_us_per_commit": round(1e6 * (time.process_time() - cpu) / commits),
            "postgres_us_per_commit": round(1e6 * (procstat.cpu_seconds(procstat.tree(pg.pid()), reaped=True) - pg_cpu)
                                            / commits),
            "us_per_batch": round(1e6 * elapsed / batches)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="4,16", help="batch sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"config: {os.cpu_count()} cores, PostgreSQL (durable) on loopback TCP, one caller, {KEYS} keys overwritten")
    with TempPostgres(durable=True) as pg:
        store = SqlStore(pg.create_database("commits"))
        try:
            store.create_bucket("ops", time.time())
            for _ in range(args.rounds):
                for size in (int(text) for text in args.batches.split(",")):
                    print(json.dumps(measure(store, pg, size, args.seconds)), flush=True)
        finally:
            store.close()


if __name__ == "__main__":
    main()
