"""The metadata half of ``scale_sim.py``: the cluster map as the metadata service builds and sends it, and the
rows and bytes one object costs in the metadata database.

Both run Apollo's own store (``SqlStore``) on a temporary SQLite file, and on a temporary PostgreSQL server when
asked (``--postgres``): nodes register and heartbeat as storage nodes do, the map is the store's own query
(``ClusterOps.cluster_map``) and its size the RPC answer's body (``codec.dumps``); objects are written as the
metadata service writes them (``add_pending`` for each segment, then ``commit_version``), with layouts from the
simulated cluster's placement, and their bytes are read back from the database itself (SQLite's ``dbstat``,
PostgreSQL's ``pg_total_relation_size`` and its WAL position), never estimated from column types.
"""

from __future__ import annotations

import gzip
import math
import random
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scale_sim_placement import Topology, drive_ids, node_info, rack_name

from apollo import limits
from apollo.meta.store import SqlStore
from apollo.proto import codec
from apollo.proto.cluster_map import ClusterMap
from apollo.proto.layout import ObjectData, Scheme, SegmentLayout, segment_bytes_max
from apollo.proto.placement import Placement, pg_of
from apollo.proto.records import ObjectAttrs

BUCKET = "datasets"
OWNER = "scalesim"
CELL_BYTES = limits.cell_size_bytes_default
BATCH_OBJECTS = 200  # SQLite: objects per transaction (bytes stored do not depend on it; fsyncs do)
TIMING_REPEATS = 3


def _median_s(action: Callable[[], object], repeats: int = TIMING_REPEATS) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


# The cluster map --------------------------------------------------------------------------------------------


@dataclass
class MapCost:
    cluster: ClusterMap
    register_s: float  # one node's registration (its drives), mean
    heartbeat_s: float  # one node's heartbeat transaction (free space of its drives), mean
    query_s: float  # ClusterOps.cluster_map: the map from the database
    wire_bytes: int  # the RPC answer's body, codec.dumps({"result": map})
    gzip_bytes: int  # the same, gzip -6 (not sent so today: for comparison)
    encode_s: float
    decode_s: float  # codec.loads on a client
    candidates_s: float  # ClusterMap.candidates: the failure domain of every drive
    update_s: float  # Placement.update with that map (what a client does at every refresh)


def build_cluster(path: Path, topology: Topology, rng: random.Random, drive_bytes: int) -> MapCost:
    """Register every node with its drives and heartbeat each once (30 % free), as storage nodes do at start."""
    store = SqlStore(str(path))
    try:
        now = time.time()
        nodes = [(rack, n) for rack in range(topology.racks) for n in range(topology.nodes_per_rack)]
        drives = {node_info(rack, n).name: drive_ids(rng, topology.drives_per_node) for rack, n in nodes}
        started = time.perf_counter()
        for rack, n in nodes:
            info = node_info(rack, n)
            paths = [(d, f"/srv/apollo/d{i:02d}") for i, d in enumerate(drives[info.name])]
            store.register_node(info.name, info.endpoint, rack_name(rack), paths, now)
        register_s = (time.perf_counter() - started) / len(nodes)
        report = ("ok", int(drive_bytes * 0.3), drive_bytes, "")
        started = time.perf_counter()
        for name, ids in drives.items():
            store.node_heartbeat(name, {d: report for d in ids}, now)
        heartbeat_s = (time.perf_counter() - started) / len(nodes)
        query_s, cluster = _median_s(lambda: store.cluster_map(now, limits.node_dead_after_s,
                                                               limits.drive_free_bytes_min))  # fmt: skip
    finally:
        store.close()
    encode_s, body = _median_s(lambda: codec.dumps({"result": cluster}))
    decode_s, _ = _median_s(lambda: codec.loads(body))
    candidates_s, candidates = _median_s(cluster.candidates)

    def update() -> None:
        Placement().update(cluster.candidates(), cluster.writable())

    update_s, _ = _median_s(update)
    if len(candidates) != topology.drives or len(cluster.writable()) != topology.drives:
        raise RuntimeError(f"the store's map has {len(candidates)} online drives, expected {topology.drives}")
    return MapCost(cluster, register_s, heartbeat_s, query_s, len(body), len(gzip.compress(body, 6)), encode_s,
                   decode_s, candidates_s, update_s)  # fmt: skip


# Rows and bytes per object ----------------------------------------------------------------------------------


@dataclass
class RowCost:
    engine: str
    scheme: Scheme
    object_bytes: int
    segments: int  # per object
    objects: int  # written to measure
    version_bytes: float  # per object: the versions table and its indexes
    segment_bytes: float  # per object: the segments table and its indexes
    wal_bytes: float | None  # PostgreSQL: WAL written per object (its add_pending and commit transactions)

    @property
    def rows(self) -> int:
        return 1 + self.segments

    @property
    def bytes(self) -> float:
        return self.version_bytes + self.segment_bytes


def segments_per_object(object_bytes: int, scheme: Scheme) -> int:
    """Segments the writer cuts an object into (``segment_bytes_max`` of its stripe), at least one."""
    return max(1, math.ceil(object_bytes / segment_bytes_max(scheme.k * CELL_BYTES)))


def _write_objects(store: SqlStore, scheme: Scheme, object_bytes: int, first: int, count: int,
                   groups: Sequence[Sequence[str]], rng: random.Random) -> None:  # fmt: skip
    """``count`` objects as a native client writes them: a pending row per segment, then one commit."""
    per_segment = segment_bytes_max(scheme.k * CELL_BYTES)
    pg_count = len(groups)
    for n in range(first, first + count):
        now = time.time()
        segments, offset = [], 0
        while offset < object_bytes or not segments:
            segment_id = f"{rng.getrandbits(128):032x}"
            pg = pg_of(segment_id, pg_count)
            length = min(per_segment, object_bytes - offset)
            layout = SegmentLayout(segment_id, offset, 0, scheme, CELL_BYTES, pg, tuple(groups[pg][: scheme.width]))
            store.add_pending(layout, OWNER, now + 3600)
            segments.append(SegmentLayout(segment_id, offset, length, scheme, CELL_BYTES, pg, layout.drives))
            offset += length
        key = f"imagenet/train/run-{n // 1000:04d}/shard-{n:08d}.tar"
        etag = f"{rng.getrandbits(128):032x}-{len(segments)}"
        store.commit_version(BUCKET, key, size=object_bytes, etag=etag, attrs=ObjectAttrs(),
                             data=ObjectData(object_bytes, segments=segments), now=now, owner=OWNER)  # fmt: skip


def _sqlite_sizes(path: Path) -> dict[str, int]:
    """Bytes of the pages of each table with its indexes, as SQLite's ``dbstat`` counts them."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        table_of = dict(db.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        sizes: dict[str, int] = {}
        for name, pages in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = table_of.get(name, name)
            sizes[table] = sizes.get(table, 0) + pages
    return sizes


def sqlite_row_cost(path: Path, scheme: Scheme, object_bytes: int, objects: int,
                    groups: Sequence[Sequence[str]], rng: random.Random) -> RowCost:  # fmt: skip
    store = SqlStore(str(path))
    try:
        store.create_bucket(BUCKET, time.time())
        before = _sqlite_sizes(path)
        for first in range(0, objects, BATCH_OBJECTS):
            with store.batch():
                _write_objects(store, scheme, object_bytes, first, min(BATCH_OBJECTS, objects - first), groups, rng)
    finally:
        store.close()
    after = _sqlite_sizes(path)
    grew = {table: (after.get(table, 0) - before.get(table, 0)) / objects for table in ("versions", "segments")}
    return RowCost("SQLite", scheme, object_bytes, segments_per_object(object_bytes, scheme), objects,
                   grew["versions"], grew["segments"], None)  # fmt: skip


def postgres_row_cost(url: str, scheme: Scheme, object_bytes: int, objects: int,
                      groups: Sequence[Sequence[str]], rng: random.Random) -> RowCost:  # fmt: skip
    """As on SQLite, but every transaction on its own (as the service commits them), and the WAL they wrote."""
    import psycopg

    def sizes(conn: psycopg.Connection) -> tuple[int, int, int]:
        row = conn.execute("SELECT pg_total_relation_size('versions'), pg_total_relation_size('segments'), "
                           "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()  # fmt: skip
        return int(row[0]), int(row[1]), int(row[2])

    store = SqlStore(url)
    try:
        store.create_bucket(BUCKET, time.time())
        with psycopg.connect(url, autocommit=True) as conn:
            before = sizes(conn)
            _write_objects(store, scheme, object_bytes, 0, objects, groups, rng)
            after = sizes(conn)
    finally:
        store.close()
    grew = [(a - b) / objects for a, b in zip(after, before, strict=True)]
    return RowCost("PostgreSQL", scheme, object_bytes, segments_per_object(object_bytes, scheme), objects,
                   grew[0], grew[1], grew[2])  # fmt: skip
