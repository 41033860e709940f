"""`apollo admin status` and `apollo admin node list` of a cluster: every host has its /mnt/disk1, so drives
carry their node and rack, and each storage node says whether it answers, its version and uptime."""

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

    listed = admin("node", "list", database=cluster.database)
    rows = [line for line in listed.splitlines() if "node" in line and "http" in line]
    assert len(rows) == 4 and all(" yes " in row and "1 online" in row for row in rows), listed
    assert any("node1" in row and "rack1" in row for row in rows), listed

    cluster.nodes[3].kill()
    time.sleep(0.5)
    out = " ".join(admin("status", database=cluster.database).split())
    assert f"node node3 {cluster.nodes[3].endpoint}: NOT ANSWERING" in out, out
    deadline = time.monotonic() + 20  # dead once its heartbeats are limits.node_dead_after_s old
    while " NO " not in next(line for line in admin("node", "list", database=cluster.database).splitlines()
                             if "node3" in line):  # fmt: skip
        assert time.monotonic() < deadline, "node3 never listed as dead"
        time.sleep(1)
