"""The store's batch calls in process on PostgreSQL, one caller, no RPC: what the store and PostgreSQL spend
per item of a batch, the part of a call through ``apollo meta`` that batching changes.

- commits: ``SqlStore.commit_versions`` of small inline objects (``apollo.meta.sql_shared_commits``), each round
  overwriting the same 200 keys;
- lookups: ``SqlStore.get_versions`` of objects on segments (what a training job's cold reads of files larger
  than ``limits.inline_object_bytes_max`` ask), 200 objects of ``--segments`` segments each.

    .venv/bin/python benchmarks/store_batch_bench.py --batches 4,16
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
from apollo.proto.layout import ObjectData, SegmentLayout  # noqa: E402
from apollo.proto.records import ObjectAttrs  # noqa: E402
from apollo.testing.layouts import layout  # noqa: E402
from apollo.testing.postgres import TempPostgres  # noqa: E402

BODY = b"12345678"
KEYS = 200


def _batch(size: int, n: int) -> list[dict]:
    return [{"bucket": "ops", "key": f"k{(n * size + i) % KEYS}", "size": len(BODY),
             "etag": hashlib.md5(BODY).hexdigest(), "attrs": ObjectAttrs(), "data": ObjectData(len(BODY), inline=BODY)}
            for i in range(size)]  # fmt: skip


def _cpu(pg: TempPostgres) -> tuple[float, float, float]:
    return time.perf_counter(), time.process_time(), procstat.cpu_seconds(procstat.tree(pg.pid()), reaped=True)


def _row(op: str, size: int, items: int, calls: int, before: tuple[float, float, float], pg: TempPostgres) -> dict:
    """The rate of ``items`` in ``calls`` of ``size`` since ``before`` (``_cpu``), and each tier's CPU per item."""
    now = _cpu(pg)
    elapsed = now[0] - before[0]
    return {"op": op, "batch": size, "items": items, "per_s": round(items / elapsed),
            "process_us_per_item": round(1e6 * (now[1] - before[1]) / items),
            "postgres_us_per_item": round(1e6 * (now[2] - before[2]) / items),
            "us_per_call": round(1e6 * elapsed / calls)}  # fmt: skip


def commits(store: SqlStore, pg: TempPostgres, size: int, seconds: float) -> dict:
    """Batches of ``size`` commits for ``seconds``."""
    batches, before = 0, _cpu(pg)
    while time.perf_counter() - before[0] < seconds:
        batch = _batch(size, batches)
        outcomes = store.engine.run(lambda: store.commit_versions(batch, owner="bench", now=time.time()))  # noqa: B023
        if any(outcome.error for outcome in outcomes):
            raise RuntimeError(f"a commit failed: {outcomes}")
        batches += 1
    return _row("commit", size, batches * size, batches, before, pg)


def objects_on_segments(store: SqlStore, segments: int) -> None:
    """``KEYS`` objects in bucket ``segmented``, each on ``segments`` segments (metadata only: no shard exists)."""
    store.create_bucket("segmented", time.time())
    for n in range(KEYS):
        written: list[SegmentLayout] = []
        for _ in range(segments):
            written.append(layout(length=1 << 20))
            store.add_pending(written[-1], "bench", time.time() + 3600)
        store.commit_version("segmented", f"s{n}", size=segments << 20, etag=hashlib.md5(b"%d" % n).hexdigest(),
                             attrs=ObjectAttrs(), data=ObjectData(segments << 20, segments=written), owner="bench",
                             now=time.time())  # fmt: skip


def lookups(store: SqlStore, pg: TempPostgres, size: int, seconds: float) -> dict:
    """Batch lookups of ``size`` objects on segments for ``seconds``."""
    calls, before = 0, _cpu(pg)
    while time.perf_counter() - before[0] < seconds:
        items = [("segmented", f"s{(calls * size + i) % KEYS}", None) for i in range(size)]
        found = store.engine.run(lambda: store.get_versions(items))  # noqa: B023
        if not all(lookup.version and lookup.version.data.segments for lookup in found):
            raise RuntimeError(f"a lookup failed: {found}")
        calls += 1
    return _row("lookup", size, calls * size, calls, before, pg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="4,16", help="batch sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--segments", type=int, default=2, help="segments per object of the lookups")
    args = parser.parse_args()
    print(f"config: {os.cpu_count()} cores, PostgreSQL (durable) on loopback TCP, one caller, {KEYS} keys, "
          f"lookups of objects on {args.segments} segments")
    with TempPostgres(durable=True) as pg:
        store = SqlStore(pg.create_database("commits"))
        try:
            store.create_bucket("ops", time.time())
            objects_on_segments(store, args.segments)
            for _ in range(args.rounds):
                for measure in (commits, lookups):
                    for size in (int(text) for text in args.batches.split(",")):
                        print(json.dumps(measure(store, pg, size, args.seconds)), flush=True)
        finally:
            store.close()


if __name__ == "__main__":
    main()
