"""Metadata lookups through ``apollo meta`` with PostgreSQL standbys answering them (``--standby-reads``).

For 0, 1 and 2 standbys (a Patroni cluster of 1, 2 and 3 members; with more than one, synchronous mode, as
``apollo dev-cluster --postgres-ha`` runs it), one metadata service is started without the flag, then
with it, and measured as ``cluster_bench.py`` measures the service: 16 concurrent callers commit small
objects for a while, then look them up. What answered the lookups comes from the service's
``apollo_meta_standby_reads_total``.

    .venv/bin/python benchmarks/standby_reads_bench.py --seconds 5

Every process shares this machine's cores: a standby adds no CPU, it only takes reads off the primary, so
the figures say what the service and PostgreSQL cost on one box, not what separate hosts would give.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apollo.testing.cluster import LocalCluster  # noqa: E402
from apollo.testing.patroni import TempPatroniCluster  # noqa: E402
from benchmarks.cluster_bench import metadata_rows  # noqa: E402


def _answered(meta_url: str) -> dict[str, int]:
    with urllib.request.urlopen(meta_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.finditer(r'apollo_meta_standby_reads_total\{answered="(\w+)"\} (\S+)', text)
    return {m[1]: int(float(m[2])) for m in found}


def measure(standbys: int, seconds: float, concurrency: int, root: Path) -> list[dict]:
    rows = []
    with TempPatroniCluster(members=standbys + 1, durable=False) as patroni:
        for standby_reads in [False, True] if standbys else [False]:
            flag = ("--standby-reads",) if standby_reads else ()
            label = f"{standbys} standbys, {'--standby-reads' if standby_reads else 'primary only'}"
            database = patroni.create_database(f"ops{int(standby_reads)}")
            with LocalCluster(root / f"s{standbys}-{int(standby_reads)}", database, nodes=0, gateways=0,
                              meta_args=flag) as cluster:  # fmt: skip
                found = asyncio.run(metadata_rows("", label, seconds, concurrency, cluster.meta_urls))
                answered = _answered(cluster.meta_urls)
                print(json.dumps({"metadata": label, "lookups answered by": answered}), flush=True)
                for row in found:
                    if row["op"] == "lookup" and standby_reads:
                        row["answered"] = answered
                rows += found
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--standbys", default="0,1,2", help="comma-separated counts of standbys")
    parser.add_argument("--seconds", type=float, default=5.0, help="per operation and configuration")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps({"config": vars(args), "cpus": os.cpu_count()}), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="apollo-standby-bench-") as tmp:
        for standbys in map(int, args.standbys.split(",")):
            rows += measure(standbys, args.seconds, args.concurrency, Path(tmp))
    print("\n| configuration | commits/s | lookups/s | lookups answered by |")
    print("|---|---:|---:|---|")
    labels = dict.fromkeys(row["metadata"] for row in rows)
    for label in labels:
        by_op = {row["op"]: row for row in rows if row["metadata"] == label}
        answered = by_op["lookup"].get("answered") or {"primary": by_op["lookup"]["ops"]}
        print(f"| {label} | {by_op['commit']['ops_per_s']:,} | {by_op['lookup']['ops_per_s']:,} | "
              f"{', '.join(f'{k} {v:,}' for k, v in sorted(answered.items()))} |")  # fmt: skip


if __name__ == "__main__":
    main()
