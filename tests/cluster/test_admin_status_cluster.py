"""`apollo admin status` of a cluster: every host has its /mnt/disk1, so drives carry their node and rack,
and each storage node says whether it answers, its version and uptime."""

from __future__ import annotations

import time

from apollo.testing.admin import admin


def test_status_names_nodes_and_racks_and_a_node_that_stopped_answering(make_cluster):
    cluster = make_cluster(nodes=4, racks=2, gateways=0)
    out = admin("status", database=cluster.database)
    for node in cluster.nodes:
        assert f"node {node.name} {node.endpoint}: answering, Apollo " in out, out
    header = next(line for line in out.splitlines() if "drive" in line and "state" in line)
    assert "node" in header and "rack" in header, out
    assert any("node3" in line and "rack1" in line for line in out.splitlines()), out

    cluster.nodes[3].kill()
    time.sleep(0.5)
    out = " ".join(admin("status", database=cluster.database).split())
    assert f"node node3 {cluster.nodes[3].endpoint}: NOT ANSWERING" in out, out
