"""The cluster's lease holder reports what repair is doing, as the all-in-one server's manager does:
``apollo admin status --database`` shows the backlog, degraded groups, rate and bytes rebuilt, and the
metadata service's /metrics carries the backlog."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Callable

from apollo.cluster.duties import STATUS_SETTING
from apollo.meta.store import SqlStore
from apollo.testing.admin import admin

BUCKET = "status"
OBJECT_BYTES = 1_000_000
DATA_SHARDS = 4  # the cluster's default 4+2


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.2)


def published(store: SqlStore) -> dict:
    return json.loads(store.get_setting(STATUS_SETTING) or "{}")


def metric(cluster, name: str) -> float | None:
    exposition = urllib.request.urlopen(f"{cluster.metas[0].endpoint}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{name} (\S+)$", exposition, re.M)
    return None if match is None else float(match.group(1))


def test_the_holder_publishes_backlog_rate_and_bytes_rebuilt_after_a_node_dies(make_cluster):
    cluster = make_cluster(nodes=8)
    store = SqlStore(cluster.database)
    admin("tune", "drive_offline_grace_s=3", database=cluster.database)
    # Paced: the rebuild spans several status reports.
    admin("repair", "--pause", "--rate", "2MiB/s", database=cluster.database)
    s3 = cluster.s3(retries={"max_attempts": 3, "mode": "standard"})
    s3.create_bucket(Bucket=BUCKET)
    for n in range(8):
        s3.put_object(Bucket=BUCKET, Key=f"o{n}", Body=os.urandom(OBJECT_BYTES))
    victim, shards = Counter(p.relative_to(cluster.root).parts[0] for p in cluster.shard_files()).most_common(1)[0]
    cluster.nodes[int(victim.removeprefix("node"))].kill()

    # Paused: past the grace its drive fails, its shards wait in the queue, and the holder says so.
    wait_for(lambda: published(store).get("backlog", 0) >= shards, 60, f"a published backlog of {shards} shards")
    assert published(store)["degraded_groups"] > 0 and published(store)["bytes_total"] == 0
    assert metric(cluster, "apollo_repair_backlog") >= shards
    assert metric(cluster, "apollo_degraded_groups") > 0
    status = admin("status", database=cluster.database)
    degraded = re.search(r"repair: backlog (\d+) shards, (\d+) degraded groups", status)
    assert degraded is not None and int(degraded.group(1)) >= shards and int(degraded.group(2)) > 0

    admin("repair", "--resume", database=cluster.database)
    rates: list[float] = []

    def rebuilt() -> bool:
        status = published(store)
        rates.append(status["bytes_per_s"])
        return status["backlog"] == 0 and status["bytes_total"] > 0

    wait_for(rebuilt, 90, "the published backlog to drain")
    assert max(rates) > 0  # a report during the rebuild saw it under way
    assert published(store)["bytes_total"] >= shards * OBJECT_BYTES // DATA_SHARDS
    wait_for(lambda: metric(cluster, "apollo_repair_backlog") == 0, 10, "the backlog metric to drain")
    line = re.search(r"rate (.+)/s, (.+) rebuilt since start", admin("status", database=cluster.database))
    assert line is not None and line.group(2) != "0 B", line
    store.close()
