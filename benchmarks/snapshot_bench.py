"""Snapshot benchmark: the time to take, list, read through and delete a snapshot of N objects, on SQLite
and on PostgreSQL, against the listing of the same objects measured in the same run (the baseline: what a
training job does anyway to learn its dataset).

The metadata store is driven in-process (``SqlStore``, no network): a snapshot is metadata only, and this
measures the metadata. Objects are small inline ones, written in batches of 5,000 per transaction; their
size does not change what a snapshot costs (one row per object, naming a version row).

Steps, per engine: populate N objects under ``train/``; list them all (pages of 1,000: the baseline); take
a snapshot of the prefix; list the snapshot; look up 1,000 keys through it (and, for comparison, 1,000
latest versions by key); overwrite a tenth of the keys (their versions move to ``retired_versions``); delete
the snapshot (the retired versions go to the garbage queue).

    .venv/bin/python benchmarks/snapshot_bench.py                      # 100,000 objects, both engines
    .venv/bin/python benchmarks/snapshot_bench.py --objects 10000 --engines sqlite
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apollo.meta.store import SqlStore  # noqa: E402
from apollo.proto.layout import ObjectData  # noqa: E402
from apollo.proto.records import ObjectAttrs  # noqa: E402
from apollo.testing.postgres import TempPostgres  # noqa: E402

BUCKET = "bench"
PAYLOAD = b"x" * 64
ETAG = "0" * 32
BATCH = 5000


def timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def populate(store: SqlStore, keys: list[str], payload: bytes) -> None:
    for first in range(0, len(keys), BATCH):
        with store.batch():
            for key in keys[first : first + BATCH]:
                store.commit_version(BUCKET, key, size=len(payload), etag=ETAG, attrs=ObjectAttrs(),
                                     data=ObjectData(len(payload), inline=payload), now=time.time(),
                                     owner="bench")  # fmt: skip


def list_all(page: Callable[[str], object]) -> int:
    """Every entry, page by page; returns how many."""
    count, marker = 0, ""
    while True:
        listed = page(marker)
        count += len(listed.entries)
        if not listed.truncated:
            return count
        marker = listed.next_marker


def run(engine: str, target: str, objects: int) -> list[tuple[str, float, str]]:
    store = SqlStore(target)
    store.create_bucket(BUCKET, time.time())
    keys = [f"train/{n:08d}.jpg" for n in range(objects)]
    populate(store, keys, PAYLOAD)
    rows: list[tuple[str, float, str]] = []
    listing, listed = timed(lambda: list_all(lambda after: store.list_objects(BUCKET, "train/", "", after, 1000)))
    assert listed == objects
    rows.append(("list every object (baseline)", listing, f"{listed} objects"))
    took, snap = timed(lambda: store.create_snapshot(BUCKET, "train/", time.time()))
    assert snap.objects == objects
    rows.append(("take a snapshot", took, f"{snap.objects} objects, {took / listing:.2f}x the listing"))
    took, count = timed(lambda: list_all(lambda after: store.list_snapshot(BUCKET, snap.snapshot_id, "", "", after,
                                                                             1000)))  # fmt: skip
    assert count == objects
    rows.append(("list the snapshot", took, f"{took / listing:.2f}x the listing"))
    sample = keys[:: max(1, objects // 1000)][:1000]
    took_live, _ = timed(lambda: store.get_versions([(BUCKET, key, None) for key in sample]))
    took, found = timed(lambda: store.get_snapshot_versions(BUCKET, snap.snapshot_id, sample))
    assert all(lookup.version for lookup in found)
    rows.append((f"look up {len(sample)} keys through it", took, f"live lookup of the same: {took_live * 1000:.1f} ms"))
    replaced = keys[::10]
    populate(store, replaced, PAYLOAD + b"new")
    took, _ = timed(lambda: store.delete_snapshot(BUCKET, snap.snapshot_id, time.time()))
    rows.append(("delete it", took, f"{len(replaced)} replaced versions it kept freed"))
    store.close()
    return [(f"{engine}: {what}", seconds, note) for what, seconds, note in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    engines = args.engines.split(",")
    print(f"snapshot benchmark: {args.objects} objects, engines {', '.join(engines)}, {os.cpu_count()} cpus")
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="apollo-snapshot-bench-") as tmp:
        if "sqlite" in engines:
            rows += run("sqlite", str(Path(tmp) / "meta.db"), args.objects)
        if "postgresql" in engines:
            with TempPostgres(durable=True) as postgres:
                rows += run("postgresql", postgres.create_database("apollo_snapshot_bench"), args.objects)
    width = max(len(what) for what, _, _ in rows)
    for what, seconds, note in rows:
        print(f"{what:<{width}}  {seconds * 1000:10.1f} ms  {note}")


if __name__ == "__main__":
    main()
