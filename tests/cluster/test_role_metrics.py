"""Each role's /metrics has what that role knows (before, every role exported every metric: a storage node
reported a repair backlog of 0 it knew nothing about), and storage nodes export their drives' I/O."""

from __future__ import annotations

import os
import re
import urllib.request


def _metrics(endpoint: str) -> str:
    return urllib.request.urlopen(f"{endpoint}/metrics", timeout=10).read().decode()


def _families(text: str) -> set[str]:
    """Metric names as the TYPE lines give them (counters with their _total)."""
    return set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))


def test_each_role_exports_its_own_metrics_and_nodes_their_drive_io(make_cluster):
    cluster = make_cluster(nodes=6)
    s3 = cluster.s3()
    s3.create_bucket(Bucket="metrics")
    s3.put_object(Bucket="metrics", Key="k", Body=os.urandom(3 << 20))
    assert s3.get_object(Bucket="metrics", Key="k")["Body"].read()

    node = _metrics(cluster.nodes[0].endpoint)
    assert not _families(node) & {"apollo_repair_backlog", "apollo_s3_requests_total", "apollo_meta_rpc_total"}
    written = [float(v) for v in re.findall(r'^apollo_drive_io_bytes_total\{[^}]*op="write"[^}]*\} (\S+)$', node,
                                            re.MULTILINE)]  # fmt: skip
    assert written and sum(written) > 0, node
    assert re.search(r'^apollo_drive_io_seconds_count\{drive="[0-9a-f]{16}",op="write"\} [1-9]', node, re.MULTILINE)

    gateway = _metrics(cluster.gateways[0].endpoint)
    assert "apollo_s3_requests_total" in _families(gateway)
    not_the_gateways = {"apollo_repair_backlog", "apollo_shard_requests_total", "apollo_drive_io_bytes_total"}
    assert not _families(gateway) & not_the_gateways

    meta = _metrics(cluster.metas[0].endpoint)
    assert {"apollo_repair_backlog", "apollo_meta_rpc_total"} <= _families(meta)
    assert not _families(meta) & {"apollo_s3_requests_total", "apollo_shard_requests_total"}
