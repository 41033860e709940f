"""Rebuild of one lost drive in a cluster: how long from the drive being marked failed until none of its
shards is left, for clusters of several sizes in one run.

Each cluster is PostgreSQL (Debian's packages, in a temp dir), one ``apollo meta`` and ``--nodes`` storage
processes of one directory drive each, 4+2 (so every size has spares). ``--objects`` objects of
``--object-mib`` MiB are written with the native client, repair is unpaced (``apollo admin repair --rate 0
--iops 0``), then one node's drive directory is deleted (``rm -rf``, a disk that died). The node reports the
drive gone, the lease holder marks it failed and its drive job queues every shard it held; the clock runs
from the failure's timestamp in the drives table (read while the drive is failed: retiring it sets it
again) until the per-drive shard index holds no shard of the drive and the repair queue no row for it.
Every object is then read back and compared.

The lease holder plans every repair, and the storage node taking a rebuilt shard does the rebuild (it
reads the survivors over its own link): the rebuild of a failed drive is spread over the nodes.

``--host-mbit N`` (as root) puts every role on a host of its own whose link is capped at N Mbit/s each way
(``apollo.testing.netns``), so the network, not two shared cores, is what a rebuild waits for.
``--objects-per-node`` keeps about the same data on every drive whatever the cluster's size.

    .venv/bin/python benchmarks/cluster_repair_bench.py                     # 7 and 12 nodes
    .venv/bin/python benchmarks/cluster_repair_bench.py --nodes 7 --objects 8
    .venv/bin/python benchmarks/cluster_repair_bench.py --nodes 3,6,12 --drives 3 --objects-per-node 4 --host-mbit 200
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apollo.meta.store import SqlStore  # noqa: E402
from apollo.testing.admin import admin  # noqa: E402
from apollo.testing.cluster import LocalCluster  # noqa: E402
from apollo.testing.netns import Network  # noqa: E402
from apollo.testing.postgres import TempPostgres  # noqa: E402

MIB = 1 << 20


def rebuild(root: Path, database: str, nodes: int, objects: int, object_mib: int, timeout_s: float,
            drives: int = 1, network: Network | None = None, mbit: float = 0.0) -> dict:  # fmt: skip
    with LocalCluster(root, database, nodes=nodes, drives=drives, network=network) as cluster:
        for host in network.hosts.values() if network else ():
            network.cap(host, mbit)
        admin("repair", "--rate", "0", "--iops", "0", database=cluster.database)
        written = {}
        with cluster.native() as client:
            client.create_bucket("rebuild")
            for n in range(objects):
                written[f"o{n}"] = os.urandom(object_mib * MIB)
                client.put("rebuild", f"o{n}", written[f"o{n}"])
        store = SqlStore(database)
        try:
            victim = next(r for r in store.list_drives() if r.node == "node0")
            shards = len(store.segments_after(-1, "", 1_000_000, victim.drive_id))
            shard_bytes = sum(p.stat().st_size for p in Path(victim.path).rglob("shards/*/*.[0-9]*"))
            wiped = time.time()
            shutil.rmtree(victim.path)
            deadline, failed_at = time.monotonic() + timeout_s, None
            while True:
                row = store.one("SELECT state, state_since FROM drives WHERE drive_id = ?", (victim.drive_id,))
                if row["state"] == "failed" and failed_at is None:  # read while failed: retiring sets it again
                    failed_at = row["state_since"]
                left = len(store.segments_after(-1, "", 1_000_000, victim.drive_id))
                queued = store.pending_repairs_on(victim.drive_id)
                if row["state"] in ("failed", "retired") and left == 0 and queued == 0:
                    done = time.time()
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{nodes} nodes: {left} shards still on the lost drive after {timeout_s:.0f} s")
                time.sleep(0.1)
            if failed_at is None:
                raise SystemExit(f"{nodes} nodes: the drive was never seen failed (polled every 0.1 s)")
        finally:
            store.close()
        with cluster.native() as client:
            for key, data in written.items():
                if client.get("rebuild", key) != data:
                    raise SystemExit(f"{nodes} nodes: {key} reads back wrong after the rebuild")
    return {"shards": shards, "bytes": shard_bytes, "seconds": done - failed_at, "detected": failed_at - wiped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="7,12", help="cluster sizes, comma-separated (at least 7: a spare)")
    parser.add_argument("--objects", type=int, default=24)
    parser.add_argument("--object-mib", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--drives", type=int, default=1, help="drives per node")
    parser.add_argument("--objects-per-node", type=int, help="objects written per node (instead of --objects)")
    parser.add_argument("--host-mbit", type=float, help="every role on a host of its own, its link capped at this "
                                                         "many Mbit/s each way; needs root")  # fmt: skip
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",")]
    count = f"{args.objects_per_node} per node" if args.objects_per_node else str(args.objects)
    links = f"hosts with links capped at {args.host_mbit:g} Mbit/s" if args.host_mbit else "loopback"
    print(f"rebuild of one lost drive: 4+2, {args.drives} drive(s) per node, {count} x {args.object_mib} MiB "
          f"objects, repair unpaced, {links}; cpus={os.cpu_count()}")  # fmt: skip
    print(f"{'nodes':>6} {'shards lost':>12} {'MiB lost':>9} {'wiped -> failed':>16} {'failed -> rebuilt':>18} "
          f"{'MiB/s':>8}")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=".") as root, TempPostgres(durable=True) as pg:
        for nodes in sizes:
            objects = args.objects_per_node * nodes if args.objects_per_node else args.objects
            database = pg.create_database(f"rebuild{nodes}")
            with Network() if args.host_mbit else contextlib.nullcontext() as network:
                url = pg.socket_url(database) if network else database  # a Unix socket crosses namespaces
                got = rebuild(Path(root) / f"c{nodes}", url, nodes, objects, args.object_mib, args.timeout,
                              args.drives, network, args.host_mbit or 0)  # fmt: skip
            mib = got["bytes"] / MIB
            print(f"{nodes:>6} {got['shards']:>12} {mib:>9.1f} {got['detected']:>14.2f} s {got['seconds']:>16.2f} s "
                  f"{mib / got['seconds']:>8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
