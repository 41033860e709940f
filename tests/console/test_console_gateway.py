"""The console on ``apollo gateway``: the cluster map it routes by as its overview, and buckets and objects
through the gateway's own engine, as on the all-in-one server."""

from __future__ import annotations

import os
import time
import uuid

from console_support import CONSOLE, Browserless

from apollo.limits import cluster_map_refresh_s, node_dead_after_s
from apollo.testing.cluster import LocalCluster


def test_a_gateway_serves_the_console_over_its_cluster_map(tmp_path, postgres):
    cluster = LocalCluster(tmp_path / "cluster", postgres.create_database(f"apollo_console_gw_{os.getpid()}"),
                           nodes=3, ec="2+1", racks=3)  # fmt: skip
    try:
        cluster.start()
        s3 = cluster.s3()
        bucket = f"gw-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"through the gateway")
        client = Browserless(cluster.gateways[0].endpoint)
        assert client.login().status == 303
        overview = client.request(CONSOLE + "/").body
        assert "3 of 3 alive" in overview and "3 of 3 online" in overview
        assert all(node.name in overview for node in cluster.nodes)
        assert "apollo admin status --database URL" in overview
        assert bucket in client.request(CONSOLE + "/buckets").body
        assert client.fetch(CONSOLE + f"/buckets/{bucket}/download?key=doc.txt") == b"through the gateway"
        assert client.request(CONSOLE + "/keys").status == 400  # no database here: the command's job
        cluster.nodes[2].kill()
        seen = ""
        deadline = time.monotonic() + node_dead_after_s + 4 * cluster_map_refresh_s + 10
        while "2 of 3 alive" not in seen and time.monotonic() < deadline:  # dead after missed heartbeats
            time.sleep(0.5)
            seen = client.request(CONSOLE + "/").body
        assert "2 of 3 alive" in seen, seen
    finally:
        cluster.stop()
