"""A drive job's walk (drain, evacuation, removal check) through the per-drive shard index, against the
walk it replaced (a filter of every committed segment by a substring of its layout), on one metadata
database as the cluster grows.

Each size is a cluster whose drives each hold about ``--shards-per-drive`` shards (the number of drives
grows with the segments, as a real cluster's does): the index walk should stay flat, the old one grow with
the cluster. Segments are 4+2 on six random drives of the cluster, in 256 placement groups, written
straight into the ``segments`` table; the index is then built by the code the upgrade to schema 13 and a
metadata recovery run (``rebuild_shard_index``), and its time is printed too. One drive is walked both
ways in pages of the drive jobs' size; the two walks must find the same segments.

What the index costs writes: commits of one-segment objects through ``SqlStore.commit_version`` (what an
object's commit runs, in-process, one at a time), with the index kept and with its insert left out (the
baseline), alternating in rounds; the median rate of each is printed.

    .venv/bin/python benchmarks/drive_walk_bench.py                 # SQLite
    .venv/bin/python benchmarks/drive_walk_bench.py --postgres      # a temporary PostgreSQL
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apollo.cluster.lifecycle import JOB_PAGE_SEGMENTS  # noqa: E402
from apollo.meta.shard_index import rebuild_shard_index  # noqa: E402
from apollo.meta.store import SqlStore  # noqa: E402
from apollo.proto.layout import SegmentLayout  # noqa: E402
from apollo.testing.postgres import TempPostgres  # noqa: E402

WIDTH = 6
LIKE_WALK = ("SELECT layout FROM segments WHERE (pg, segment_id) > (?, ?) AND layout LIKE ? "
             "ORDER BY pg, segment_id LIMIT ?")  # fmt: skip


def fill(store: SqlStore, segments: int, drives: list[str], rng: random.Random) -> float:
    """Committed segments on random drives; returns the seconds the index rebuild took."""
    chunk = 5000
    for first in range(0, segments, chunk):
        rows = []
        for n in range(first, min(segments, first + chunk)):
            segment_id = f"{rng.getrandbits(128):032x}"
            layout = {"segment_id": segment_id, "offset": 0, "length": 1 << 20, "scheme": "4+2",
                      "cell_size": 1 << 20, "pg": n % 256, "drives": rng.sample(drives, WIDTH)}  # fmt: skip
            rows.append((f"{n:032x}", segment_id, json.dumps(layout), n % 256))
        with store.tx() as db:
            db.executemany("INSERT INTO segments (data_id, seq, segment_id, offset_bytes, length, layout, pg) "
                           "VALUES (?, 0, ?, 0, 1048576, ?, ?)", rows)  # fmt: skip
    started = time.perf_counter()
    with store.tx() as db:
        rebuild_shard_index(db)
    return time.perf_counter() - started


def walk_with_index(store: SqlStore, drive: str) -> list[str]:
    found, pg, segment_id = [], -1, ""
    while page := store.segments_after(pg, segment_id, JOB_PAGE_SEGMENTS, drive):
        found += [s.segment_id for s in page]
        pg, segment_id = page[-1].pg, page[-1].segment_id
    return found


def walk_with_like(store: SqlStore, drive: str) -> list[str]:
    """The walk as ``segments_after`` did it before the index, layouts parsed as it parses them."""
    found, pg, segment_id = [], -1, ""
    while page := [SegmentLayout.from_json(json.loads(r["layout"])) for r in
                   store.all(LIKE_WALK, (pg, segment_id, f'%"{drive}"%', JOB_PAGE_SEGMENTS))]:  # fmt: skip
        found += [s.segment_id for s in page]
        pg, segment_id = page[-1].pg, page[-1].segment_id
    return found


def timed(walk, store: SqlStore, drive: str, rounds: int) -> tuple[float, list[str]]:
    best, found = float("inf"), []
    for _ in range(rounds):
        started = time.perf_counter()
        found = walk(store, drive)
        best = min(best, time.perf_counter() - started)
    return best, found


def commit_rates(store: SqlStore, rounds: int, per_round: int) -> tuple[float, float]:
    """Median commits/s of one-segment objects with the shard index kept, and with its insert left out."""
    from apollo.meta import sql_data
    from apollo.proto.layout import ObjectData
    from apollo.proto.records import ObjectAttrs
    from apollo.testing.layouts import WRITER, etag, pending

    store.create_bucket("commits", 1.0)
    kept = sql_data.index_layouts
    rates: dict[bool, list[float]] = {True: [], False: []}
    for number in range(rounds * 2):
        indexed = number % 2 == 0
        sql_data.index_layouts = kept if indexed else (lambda db, layouts: None)
        segments = [pending(store, length=1 << 20, pg=n % 256) for n in range(per_round)]
        started = time.perf_counter()
        for n, segment in enumerate(segments):
            store.commit_version("commits", f"k{number}-{n}", size=1 << 20, etag=etag(str(n)), attrs=ObjectAttrs(),
                                 data=ObjectData(1 << 20, segments=[segment]), now=2.0, owner=WRITER)  # fmt: skip
        rates[indexed].append(per_round / (time.perf_counter() - started))
    sql_data.index_layouts = kept
    return statistics.median(rates[True]), statistics.median(rates[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,40000,160000", help="committed segments, comma-separated")
    parser.add_argument("--shards-per-drive", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="walks of each kind per size; the best is printed")
    parser.add_argument("--postgres", action="store_true", help="a temporary PostgreSQL instead of SQLite")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"drive walk: {backend}, pages of {JOB_PAGE_SEGMENTS} segments, ~{args.shards_per_drive} shards per "
          f"drive, 4+2 segments; best of {args.rounds} walks")  # fmt: skip
    print(f"{'segments':>9} {'drives':>7} {'on drive':>9} {'index walk':>11} {'LIKE walk':>10} {'ratio':>7} "
          f"{'index rebuild':>14}")  # fmt: skip
    postgres = TempPostgres(durable=False) if args.postgres else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as root, postgres as pg:
        for number, segments in enumerate(int(s) for s in args.sizes.split(",")):
            target = pg.create_database(f"walk{number}") if args.postgres else Path(root) / f"walk{number}.db"
            store = SqlStore(target)
            try:
                drives = [f"{n:016x}" for n in range(1, max(WIDTH, segments * WIDTH // args.shards_per_drive) + 1)]
                rebuild_s = fill(store, segments, drives, rng)
                if args.postgres:
                    with store.tx() as db:
                        db.execute("ANALYZE")
                drive = drives[0]
                index_s, by_index = timed(walk_with_index, store, drive, args.rounds)
                like_s, by_like = timed(walk_with_like, store, drive, args.rounds)
                if by_index != by_like:
                    raise SystemExit(f"the walks disagree: {len(by_index)} segments by index, {len(by_like)} by LIKE")
                print(f"{segments:>9} {len(drives):>7} {len(by_index):>9} {index_s * 1e3:>9.1f}ms "
                      f"{like_s * 1e3:>8.1f}ms {like_s / index_s:>6.1f}x {rebuild_s:>13.2f}s")  # fmt: skip
            finally:
                store.close()
        store = SqlStore(pg.create_database("commits") if args.postgres else Path(root) / "commits.db")
        try:
            with_index, without = commit_rates(store, args.rounds * 2, 500)
        finally:
            store.close()
        print(f"commits of one-segment objects: {with_index:.0f}/s with the index kept, {without:.0f}/s without "
              f"its insert ({with_index / without:.2f}x; median of {args.rounds * 2} rounds of 500 each)")  # fmt: skip


if __name__ == "__main__":
    main()
