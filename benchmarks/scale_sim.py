"""A simulator of Apollo at 10,000 drives: Apollo's own placement and cluster-map code, no network, no data.

It builds the cluster map of ``--racks`` x ``--nodes-per-rack`` x ``--drives-per-node`` drives through the real
metadata store (nodes register and heartbeat; ``ClusterOps.cluster_map``), places every placement group through
``Placement`` as the metadata service does, and measures:

- balance: shards per drive over every drive (max/mean, min/mean), per group and weighted by segments sampled
  through ``pg_of`` (``--sampled-segments`` ids stand for ``--segments``; the ratios do not depend on the scale);
- data moved when a node or a rack is added or removed: of a sample of groups (``--move-pgs``), the shard slots
  whose drive changes, against the ideal (the capacity added or removed);
- rebuilding one failed drive: the drives holding surviving shards, the drives read, and the targets the repair
  worker's own choice picks; the time at ``--drive-mbps`` per drive for a drive of ``--drive-tb`` at ``--fill``;
- the cluster map: the store's query, the RPC answer's size, encode/decode, and a client's refresh;
- metadata: rows and bytes per object on SQLite (and PostgreSQL with ``--postgres``), measured by writing objects
  through ``SqlStore`` as the service does, scaled to ``--segments``; then where one PostgreSQL primary stops being
  enough, from the commit and lookup rates measured in docs/benchmarks.md (``--pg-commits-per-s``, ...).

Everything random comes from ``--seed``. ``--quick`` is a small cluster for a smoke run.

    .venv/bin/python benchmarks/scale_sim.py --postgres          # 10,000 drives, ~4.5 min on 2 cores (ranking groups)
    .venv/bin/python benchmarks/scale_sim.py --quick             # 72 drives, a few seconds
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scale_sim_meta as meta  # noqa: E402
import scale_sim_placement as sim  # noqa: E402

from apollo import limits  # noqa: E402
from apollo.cluster.tuning import Tuning  # noqa: E402
from apollo.proto.cluster_map import ClusterMap  # noqa: E402
from apollo.proto.layout import Scheme  # noqa: E402
from apollo.proto.placement import CHOSEN_MAX, pg_of  # noqa: E402

Row = tuple[str, str, list[str]]  # section, measure, one value per scheme


@dataclass
class Run:
    """What every section needs: the options, the schemes, the map and its placements."""

    args: argparse.Namespace
    topology: sim.Topology
    schemes: list[Scheme]
    cluster: ClusterMap
    maps: dict[int, sim.FullMap]
    weights: dict[int, list[int]]  # segments sampled into each group, per group count

    def each(self, value: str) -> list[str]:
        return [value] * len(self.schemes)

    @property
    def drive_bytes(self) -> float:
        """Bytes stored on one drive: its capacity at the stated fill."""
        return self.args.drive_tb * 1e12 * self.args.fill

    @property
    def drive_bps(self) -> float:
        return self.args.drive_mbps * 1e6


# Formatting (decimal units: MB = 10^6 bytes) ----------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} us"


def fmt_n(n: float) -> str:
    return f"{n:,.0f}" if abs(n) >= 100 else f"{n:.3g}"


def pct(x: float) -> str:
    return f"{100 * x:.3f}%"


# Sections ---------------------------------------------------------------------------------------------------


def sample_segments(count: int, pg_counts: Sequence[int], seed: int) -> dict[int, list[int]]:
    """Segment ids of the form the service makes (32 hex digits), through ``pg_of``: segments per group."""
    rng = random.Random(f"{seed}:segments")
    counts = {p: [0] * p for p in pg_counts}
    for _ in range(count):
        segment_id = f"{rng.getrandbits(128):032x}"
        for p, per_group in counts.items():
            per_group[pg_of(segment_id, p)] += 1
    return counts


def placement_rows(run: Run) -> list[Row]:
    """Balance of every full map, what placing it cost, and what the PG count a cluster this size needs would."""
    rows: list[Row] = []
    drives = [d.drive_id for d in run.cluster.drives]
    scale = run.args.segments / run.args.sampled_segments
    for p, full in run.maps.items():
        tag = f"{p} PGs" + (" (default)" if p == limits.placement_groups_default else "")
        plain = [sim.balance(sim.group_loads(full.groups, s.width), drives) for s in run.schemes]
        weighted = [sim.balance(sim.group_loads(full.groups, s.width, run.weights[p]), drives) for s in run.schemes]
        rows += [
            ("placement", f"{tag}: PG shards per drive, mean", [f"{b.mean:.3g}" for b in plain]),
            ("placement", f"{tag}: PG shards per drive, max/mean", [f"{b.max_ratio:.2f}" for b in plain]),
            ("placement", f"{tag}: PG shards per drive, min/mean", [f"{b.min_ratio:.2f}" for b in plain]),
            ("placement", f"{tag}: drives holding no shard", [f"{b.empty_drives:,}" for b in plain]),
            ("placement", f"{tag}: segment shards per drive, mean (x{scale:,.0f} to {run.args.segments:.3g})",
             [fmt_n(b.mean * scale) for b in weighted]),
            ("placement", f"{tag}: segment shards per drive, max/mean", [f"{b.max_ratio:.2f}" for b in weighted]),
            ("placement", f"{tag}: segment shards per drive, min/mean", [f"{b.min_ratio:.2f}" for b in weighted]),
            ("placement", f"{tag}: place every PG (Placement.drives_for, cold)",
             run.each(f"{fmt_s(full.place_s)} ({fmt_s(full.place_s / p)}/PG)")),
            ("placement", f"{tag}: Placement.drives_for, remembered", run.each(fmt_s(full.cached_call_s))),
        ]  # fmt: skip
    per_pg = max(run.maps.values(), key=lambda m: m.pg_count)
    per_pg_s = per_pg.place_s / per_pg.pg_count
    target = run.args.target_shards_per_drive
    wanted = [2 ** math.ceil(math.log2(target * run.topology.drives / s.width)) for s in run.schemes]
    rows += [
        ("placement", f"PGs for ~{target} PG shards per drive (power of 2)", [f"{w:,}" for w in wanted]),
        ("placement", f"  placing them all at {fmt_s(per_pg_s)}/PG (extrapolated)",
         [fmt_s(w * per_pg_s) for w in wanted]),
        ("placement", "  Placement remembers at most (CHOSEN_MAX) PGs", run.each(f"{CHOSEN_MAX:,}")),
    ]  # fmt: skip
    return rows


def move_rows(run: Run, seed: int) -> list[Row]:
    """Re-place a sample of the largest map's groups after each change, with ``place_drives`` on the new map."""
    args, topo = run.args, run.topology
    full = max(run.maps.values(), key=lambda m: m.pg_count)
    rng = random.Random(f"{seed}:moves")
    pgs = sorted(rng.sample(range(full.pg_count), min(args.move_pgs, full.pg_count)))
    before = [full.groups[pg] for pg in pgs]
    rack_nodes = {n.name for n in run.cluster.nodes if n.rack == sim.rack_name(0)}
    node_d, rack_d, total = topo.drives_per_node, topo.nodes_per_rack * topo.drives_per_node, topo.drives
    changes = [
        ("add 1 node", sim.node_added(run.cluster, 0, node_d, rng), node_d / (total + node_d)),
        ("remove 1 node", sim.without(run.cluster, {sim.node_name(0, 0)}), node_d / total),
        ("add 1 rack", sim.rack_added(run.cluster, topo.nodes_per_rack, node_d, rng), rack_d / (total + rack_d)),
        ("remove 1 rack", sim.without(run.cluster, rack_nodes), rack_d / total),
    ]
    widest = max(s.width for s in run.schemes)
    rows: list[Row] = []
    for name, changed, ideal in changes:
        after, took = sim.place_sample(changed, pgs, widest)
        print(f"  {name}: {len(pgs)} PGs re-placed in {took:.1f} s", file=sys.stderr)
        counts = [sim.moved(before, after, s.width) for s in run.schemes]
        tag = f"{name} ({len(pgs)} of {full.pg_count} PGs)"
        rows += [
            ("data moved", f"{tag}: ideal (capacity changed)", run.each(pct(ideal))),
            ("data moved", f"{tag}: drive left the PG's set",
             [f"{pct(m.fraction(m.left))} ±{pct(m.stderr(m.left))}" for m in counts]),
            ("data moved", f"{tag}: shard slot on another drive",
             [f"{pct(m.fraction(m.positional))} ±{pct(m.stderr(m.positional))}" for m in counts]),
        ]  # fmt: skip
    return rows


def rebuild_rows(run: Run, seed: int) -> list[Row]:
    """Mean over ``--failed-drives`` drives (seeded) of what rebuilding each costs, per group count."""
    args = run.args
    rows: list[Row] = []
    tuning = Tuning()
    for p, full in run.maps.items():
        results = []
        for scheme in run.schemes:
            rng = random.Random(f"{seed}:rebuild:{p}:{scheme}")
            failed = sim.failed_drive_sample(full.groups, scheme.width, args.failed_drives, rng)
            results.append([sim.rebuild(run.cluster, full.groups, scheme, run.weights[p], d, rng) for d in failed])

        def mean(field: str, results: list[list[sim.Rebuild]] = results) -> list[float]:
            """Per scheme, the mean of ``field`` over the failed drives."""
            return [sum(getattr(r, field) for r in rs) / len(rs) for rs in results]

        tag = f"{p} PGs, {len(results[0])} failed drives"
        rows += [
            ("rebuild", f"{tag}: PGs on the failed drive", [f"{v:.3g}" for v in mean("groups")]),
            ("rebuild", f"{tag}: drives holding surviving shards", [f"{v:.3g}" for v in mean("holders")]),
            ("rebuild", f"{tag}: drives read (first k survivors)", [f"{v:.3g}" for v in mean("readers")]),
            ("rebuild", f"{tag}: target drives (repair worker's choice)", [f"{v:.3g}" for v in mean("targets")]),
            ("rebuild", f"{tag}: one target drive, B / bw", run.each(fmt_s(run.drive_bytes / run.drive_bps))),
            ("rebuild", f"{tag}: declustered, max over drives of (read + written) / bw",
             [fmt_s(v * run.drive_bytes / run.drive_bps) for v in mean("busiest_share")]),
        ]  # fmt: skip
    pace = tuning.repair_bytes_per_s
    nic = args.nic_gbit * 1e9 / 8
    rows += [
        ("rebuild", f"today: one repair process at its default pace, (k+1)·B / {pace / 2**20:g} MiB/s",
         [fmt_s((s.k + 1) * run.drive_bytes / pace) for s in run.schemes]),
        ("rebuild", f"one process unpaced, (k+1)·B / {args.nic_gbit:g} Gbit/s NIC",
         [fmt_s((s.k + 1) * run.drive_bytes / nic) for s in run.schemes]),
    ]  # fmt: skip
    return rows


def map_rows(run: Run, cost: meta.MapCost) -> list[Row]:
    """The map as measured, and what ``--clients`` refreshing it every ``cluster_map_refresh_s`` cost the services."""
    args = run.args
    fetches = args.clients / limits.cluster_map_refresh_s
    return [
        ("cluster map", "register one node (SQLite)", run.each(fmt_s(cost.register_s))),
        ("cluster map", "heartbeat of one node (SQLite)", run.each(fmt_s(cost.heartbeat_s))),
        ("cluster map", "ClusterOps.cluster_map query (SQLite)", run.each(fmt_s(cost.query_s))),
        ("cluster map", "RPC answer, codec.dumps (sent as is)", run.each(fmt_bytes(cost.wire_bytes))),
        ("cluster map", "  the same gzip -6 (not done today)", run.each(fmt_bytes(cost.gzip_bytes))),
        ("cluster map", "encode (codec.dumps)", run.each(fmt_s(cost.encode_s))),
        ("cluster map", "decode on a client (codec.loads)", run.each(fmt_s(cost.decode_s))),
        ("cluster map", "ClusterMap.candidates()", run.each(fmt_s(cost.candidates_s))),
        ("cluster map", "client refresh: Placement.update(candidates, writable)", run.each(fmt_s(cost.update_s))),
        ("cluster map", f"{args.clients:,} clients refreshing every {limits.cluster_map_refresh_s:g} s: bytes/s",
         run.each(f"{fmt_bytes(fetches * cost.wire_bytes)}/s")),
        ("cluster map", "  and encode CPU on the metadata services (cores)",
         run.each(f"{fetches * cost.encode_s:.2f}")),
    ]  # fmt: skip


def parse_size(text: str) -> int:
    """``1MiB``, ``256MiB``, ``4GiB``, ``100kB`` or plain bytes."""
    units = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "MB": 10**6, "GB": 10**9, "B": 1}
    for unit, size in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * size)
    return int(text)


def size_name(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def metadata_rows(run: Run, costs: dict[tuple[str, str, int], meta.RowCost]) -> list[Row]:
    """Per object size: rows and bytes per object as measured, and the totals at ``--segments`` segments."""
    args = run.args
    rows: list[Row] = []
    engines = ["SQLite"] + (["PostgreSQL"] if args.postgres else [])
    for size in args.object_sizes:
        tag = f"{size_name(size)} objects"
        first = [costs["SQLite", str(s), size] for s in run.schemes]
        objects = [args.segments / c.segments for c in first]
        usable = [run.topology.drives * run.drive_bytes * s.k / s.width for s in run.schemes]
        rows += [
            ("metadata", f"{tag}: segments per object", [str(c.segments) for c in first]),
            ("metadata", f"{tag}: rows per object (1 version + segments)", [str(c.rows) for c in first]),
        ]
        for engine in engines:
            measured = [costs[engine, str(s), size] for s in run.schemes]
            split = [f"{c.bytes:,.0f} ({c.version_bytes:,.0f} + {c.segment_bytes:,.0f})" for c in measured]
            rows.append(("metadata", f"{tag}: {engine} bytes per object (version + segments, with indexes)", split))
            if engine == "PostgreSQL":
                rows.append(("metadata", f"{tag}: PostgreSQL WAL per object written",
                             [fmt_bytes(c.wal_bytes or 0) for c in measured]))  # fmt: skip
        rows += [
            ("metadata", f"{tag}: objects at {args.segments:.3g} segments", [fmt_n(n) for n in objects]),
            ("metadata", f"{tag}: rows at {args.segments:.3g} segments",
             [fmt_n(n * c.rows) for n, c in zip(objects, first, strict=True)]),
        ]  # fmt: skip
        for engine in engines:
            measured = [costs[engine, str(s), size] for s in run.schemes]
            rows.append(("metadata", f"{tag}: {engine} bytes at {args.segments:.3g} segments",
                         [fmt_bytes(n * c.bytes) for n, c in zip(objects, measured, strict=True)]))  # fmt: skip
        data = [f"{fmt_bytes(n * size)} ({fmt_bytes(u)})" for n, u in zip(objects, usable, strict=True)]
        rows.append(("metadata", f"{tag}: data at {args.segments:.3g} segments (usable capacity at the fill)", data))
    return rows


def limit_rows(run: Run, costs: dict[tuple[str, str, int], meta.RowCost]) -> list[Row]:
    """Where one PostgreSQL primary stops being enough: its measured rates against what the drives can do."""
    args = run.args
    commits, lookups = args.pg_commits_per_s, args.pg_lookups_per_s
    drive_ingest = [run.drive_bps * s.k / s.width for s in run.schemes]  # object bytes/s one drive's writes carry
    heartbeats = run.topology.nodes / limits.node_heartbeat_interval_s
    rows: list[Row] = [
        ("limits", f"inputs: one primary commits {commits:,.0f}/s, answers {lookups:,.0f} lookups/s",
         run.each("docs/benchmarks.md")),
        ("limits", "ingest the drives take at full bandwidth (object bytes)",
         [f"{fmt_bytes(d * run.topology.drives)}/s" for d in drive_ingest]),
        ("limits", f"node heartbeats: commits/s ({run.topology.nodes} nodes / {limits.node_heartbeat_interval_s:g} s)",
         run.each(f"{heartbeats:,.0f} ({heartbeats / commits:.0%} of the primary)")),
    ]  # fmt: skip
    for size in args.object_sizes:
        tag = f"{size_name(size)} objects"
        sqlite = [costs["SQLite", str(s), size] for s in run.schemes]
        writes = [commits / (c.segments + 1) for c in sqlite]
        rows += [
            ("limits", f"{tag}: write transactions per object (add_pending per segment + commit)",
             [str(c.segments + 1) for c in sqlite]),
            ("limits", f"{tag}: object writes/s one primary commits", [fmt_n(w) for w in writes]),
            ("limits", f"{tag}: ingest that carries", [f"{fmt_bytes(w * size)}/s" for w in writes]),
            ("limits", f"{tag}: drives writing at full bandwidth that feeds",
             [fmt_n(w * size / d) for w, d in zip(writes, drive_ingest, strict=True)]),
            ("limits", f"{tag}: reads one primary looks up, bytes/s", run.each(f"{fmt_bytes(lookups * size)}/s")),
            ("limits", f"{tag}: drives reading at full bandwidth that feeds",
             run.each(fmt_n(lookups * size / run.drive_bps))),
        ]  # fmt: skip
        if args.postgres:
            wal = [costs["PostgreSQL", str(s), size].wal_bytes or 0 for s in run.schemes]
            rows.append(("limits", f"{tag}: WAL at that write rate",
                         [f"{fmt_bytes(w * c)}/s" for w, c in zip(writes, wal, strict=True)]))  # fmt: skip
    return rows


def measure_metadata(run: Run, tmp: Path, seed: int) -> dict[tuple[str, str, int], meta.RowCost]:
    args = run.args
    groups = max(run.maps.values(), key=lambda m: m.pg_count).groups
    costs: dict[tuple[str, str, int], meta.RowCost] = {}
    for n, (scheme, size) in enumerate((s, z) for s in run.schemes for z in args.object_sizes):
        rng = random.Random(f"{seed}:meta:{scheme}:{size}")
        costs["SQLite", str(scheme), size] = meta.sqlite_row_cost(tmp / f"rows-{n}.db", scheme, size,
                                                                  args.meta_objects, groups, rng)  # fmt: skip
    if args.postgres:
        from apollo.testing.postgres import TempPostgres

        with TempPostgres(durable=True) as postgres:
            for n, (scheme, size) in enumerate((s, z) for s in run.schemes for z in args.object_sizes):
                rng = random.Random(f"{seed}:meta:{scheme}:{size}")
                url = postgres.create_database(f"scalesim_{n}")
                costs["PostgreSQL", str(scheme), size] = meta.postgres_row_cost(url, scheme, size, args.pg_objects,
                                                                                groups, rng)  # fmt: skip
    return costs


# Main -------------------------------------------------------------------------------------------------------


QUICK = {"racks": 6, "nodes_per_rack": 3, "drives_per_node": 4, "pgs": "64,256", "sampled_segments": 20_000,
         "move_pgs": 256, "failed_drives": 4, "meta_objects": 40, "pg_objects": 20}  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options; ``--quick`` sets the ``QUICK`` sizes for every option not given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--racks", type=int, default=50)
    add("--nodes-per-rack", type=int, default=10)
    add("--drives-per-node", type=int, default=20)
    add("--schemes", default="4+2,8+4", help="erasure codes, comma-separated (each column of the table)")
    add("--pgs", default=f"{limits.placement_groups_default},4096", help="placement-group counts to map in full")
    add("--segments", type=float, default=1e9, help="segments the cluster holds (what the sample stands for)")
    add("--sampled-segments", type=int, default=1_000_000, help="segment ids drawn through pg_of")
    add("--move-pgs", type=int, default=1024, help="groups of the largest map re-placed after each change")
    add("--failed-drives", type=int, default=8, help="drives (seeded) whose rebuild is planned, per map and scheme")
    add("--drive-tb", type=float, default=16.0, help="drive capacity, TB (10^12 bytes)")
    add("--fill", type=float, default=0.7, help="fraction of each drive holding shards")
    add("--drive-mbps", type=float, default=200.0, help="sustained bandwidth of one drive, MB/s (10^6 bytes)")
    add("--nic-gbit", type=float, default=25.0, help="network of the process running the repair worker")
    add("--object-sizes", default="1MiB,256MiB", help="object sizes for the metadata rows (comma-separated)")
    add("--meta-objects", type=int, default=1000, help="objects written per scheme and size on SQLite")
    add("--postgres", action="store_true", help="also measure rows on a temporary PostgreSQL (Debian's binaries)")
    add("--pg-objects", type=int, default=300, help="objects written per scheme and size on PostgreSQL")
    add("--pg-commits-per-s", type=float, default=2276.0, help="one primary's commits/s (docs/benchmarks.md)")
    add("--pg-lookups-per-s", type=float, default=5284.0, help="one primary's lookups/s (docs/benchmarks.md)")
    add("--clients", type=int, default=1000, help="native clients and gateways refreshing the map")
    add("--target-shards-per-drive", type=int, default=100, help="for the PG count a cluster of this size needs")
    add("--seed", type=int, default=1)
    quick = ", ".join(f"{k}={v}" for k, v in QUICK.items())
    add("--quick", action="store_true", help=f"a small cluster (smoke run): {quick}")
    args = parser.parse_args(argv)
    if args.quick:
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])}
        for name, value in QUICK.items():
            if name not in given:
                setattr(args, name, value)
    args.pg_counts = sorted({int(p) for p in str(args.pgs).split(",")})
    args.object_sizes = [parse_size(s) for s in args.object_sizes.split(",")]
    return args


def source_version() -> str:
    """The checkout's commit, and whether files differ from it (the simulator reads the working tree)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def configuration(args: argparse.Namespace, topology: sim.Topology, schemes: Sequence[Scheme]) -> list[str]:
    return [
        f"command: {shlex.join([sys.executable, *sys.argv])}",
        f"code: {source_version()}",
        f"machine: {os.cpu_count()} cpus, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}",
        f"drives: {topology.drives:,} = {topology.racks} racks x {topology.nodes_per_rack} nodes x "
        f"{topology.drives_per_node} drives (failure domain: the rack)",
        f"schemes: {', '.join(map(str, schemes))}; placement groups mapped in full: "
        f"{', '.join(map(str, args.pg_counts))} (limits.placement_groups_default = {limits.placement_groups_default})",
        f"segments: {args.segments:.3g}, sampled {args.sampled_segments:,} through pg_of; seed {args.seed}",
        f"drive: {args.drive_tb:g} TB at {args.fill:.0%} full (B = {fmt_bytes(args.drive_tb * 1e12 * args.fill)}), "
        f"{args.drive_mbps:g} MB/s; repair process NIC {args.nic_gbit:g} Gbit/s",
        f"metadata: {args.meta_objects} objects per scheme and size on SQLite"
        + (f", {args.pg_objects} on PostgreSQL" if args.postgres else "")
        + f"; one primary: {args.pg_commits_per_s:,.0f} commits/s, {args.pg_lookups_per_s:,.0f} lookups/s",
    ]


def print_table(rows: Sequence[Row], schemes: Sequence[Scheme]) -> None:
    """One markdown table, a column per scheme (a value that does not depend on the scheme is repeated)."""
    print(f"| section | measure | {' | '.join(str(s) for s in schemes)} |")
    print(f"|---|---|{'---|' * len(schemes)}")
    for section, measure, values in rows:
        print(f"| {section} | {measure} | {' | '.join(values)} |")


def main(argv: Sequence[str] | None = None) -> None:
    """Configuration first (with the exact command), progress on stderr, the table last."""
    args = parse_args(argv)
    topology = sim.Topology(args.racks, args.nodes_per_rack, args.drives_per_node)
    schemes = [Scheme.parse(s) for s in args.schemes.split(",")]
    for line in configuration(args, topology, schemes):
        print(line)
    started = time.perf_counter()

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {what}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="apollo-scalesim-") as tmp:
        progress("registering nodes and building the cluster map")
        map_cost = meta.build_cluster(Path(tmp) / "map.db", topology, random.Random(f"{args.seed}:drives"),
                                      int(args.drive_tb * 1e12))  # fmt: skip
        cluster = map_cost.cluster
        maps = {}
        for p in args.pg_counts:
            progress(f"placing {p} placement groups")
            maps[p] = sim.full_map(cluster, p, [s.width for s in schemes])
        progress(f"sampling {args.sampled_segments:,} segments through pg_of")
        weights = sample_segments(args.sampled_segments, args.pg_counts, args.seed)
        run = Run(args, topology, schemes, cluster, maps, weights)
        rows = placement_rows(run)
        progress("data moved by changes of the map")
        rows += move_rows(run, args.seed)
        progress("rebuild of failed drives")
        rows += rebuild_rows(run, args.seed)
        rows += map_rows(run, map_cost)
        progress("metadata rows and bytes")
        costs = measure_metadata(run, Path(tmp), args.seed)
        rows += metadata_rows(run, costs) + limit_rows(run, costs)
    progress("done")
    print(f"run time: {time.perf_counter() - started:.1f} s")
    print()
    print_table(rows, schemes)


if __name__ == "__main__":
    main()
