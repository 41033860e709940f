"""Taking a storage node out of a cluster for good: drain it, stop it, remove it, lose nothing."""

from __future__ import annotations

import json
import time

from apollo.meta.store import SqlStore
from apollo.testing.admin import admin, admin_refused, run_admin
from apollo.testing.workload import Workload

BUCKET = "drain"


def test_a_drained_node_is_removed_and_the_rest_still_survive_m_failures(make_cluster, seed):
    """Draining copies every shard off the node while it still serves them (no redundancy is lost on
    the way); removing it is refused while it runs or holds shards. Afterwards two more nodes (m) die
    and every object still reads back exact: nothing was left on the removed node."""
    cluster = make_cluster(nodes=7)
    objects = Workload(seed)
    with cluster.native() as client:
        client.create_bucket(BUCKET)
        objects.write(client, BUCKET, 12, sizes=(1_000_000, 1_000_011))
    store = SqlStore(cluster.database)
    leaving = cluster.nodes[3].name
    drives = [r.drive_id for r in store.list_drives() if r.node == leaving]

    refused = admin_refused("node", "remove", leaving, database=cluster.database)
    assert "still heartbeating" in refused, refused
    admin("node", "drain", leaving, "--wait", "--timeout", "120", database=cluster.database)

    def states() -> set[str]:
        return {r.state for r in store.list_drives() if r.drive_id in drives}

    deadline = time.monotonic() + 60
    while states() != {"retired"}:
        assert time.monotonic() < deadline, f"drives of {leaving} not retired: {states()}"
        time.sleep(0.3)
    layouts = [json.loads(r["layout"]) for r in store.all("SELECT layout FROM segments")]
    assert not any(d in layout["drives"] for layout in layouts for d in drives)

    cluster.nodes[3].kill()
    deadline = time.monotonic() + 30
    while (removed := run_admin("node", "remove", leaving, database=cluster.database)).returncode != 0:
        assert "still heartbeating" in removed.stderr and time.monotonic() < deadline, removed.stderr
        time.sleep(1)
    assert not any(r.node == leaving for r in store.list_drives())
    assert leaving not in {r["name"] for r in store.all("SELECT name FROM nodes")}
    store.close()

    cluster.nodes[0].kill()
    cluster.nodes[5].kill()
    with cluster.native() as client:
        objects.verify(client, BUCKET)


def test_node_commands_refuse_what_would_lose_redundancy_or_name_nothing(make_cluster):
    cluster = make_cluster(nodes=6)  # 4+2 over six nodes: draining one leaves five failure domains
    too_few = admin_refused("node", "drain", cluster.nodes[0].name, database=cluster.database)
    assert "failure domains" in too_few, too_few
    unknown = admin_refused("node", "drain", "no-such-node", database=cluster.database)
    assert "no storage node named" in unknown, unknown


def _shards_per_node(store: SqlStore) -> list[list[int]]:
    """For every committed segment, how many of its shards each node holds (largest first)."""
    node_of = {r.drive_id: r.node for r in store.list_drives()}
    spreads = []
    for row in store.all("SELECT layout FROM segments"):
        counts: dict[str, int] = {}
        for drive in json.loads(row["layout"])["drives"]:
            if drive:
                counts[node_of.get(drive, drive)] = counts.get(node_of.get(drive, drive), 0) + 1
        spreads.append(sorted(counts.values(), reverse=True))
    return spreads


def test_a_forced_drain_to_three_nodes_spreads_every_segment_2_2_2_and_survives_one_more_node(make_cluster, seed):
    """The operator's report: 4 nodes, 4+2, `node drain stor4 --force --wait`, then kill -9 one of the three
    left; 4 of 44 objects answered `3 good cells, need 4`, because drained shards landed on nodes that
    already held two of the segment (3,2,1). Three nodes can hold 6 shards only as 2,2,2, which loses at
    most m = 2 with any one node; the drain must end there, and then one more node may die."""
    cluster = make_cluster(nodes=4, drives=3)
    objects = Workload(seed)
    with cluster.native() as client:
        client.create_bucket(BUCKET)
        objects.write(client, BUCKET, 40, sizes=(200_000, 1_200_000), prefix="o")
        objects.write(client, BUCKET, 4, sizes=(100, 103), prefix="small")  # inline: no shards, still must read
    # A cluster that has run a while has rebalanced: moves inside a node leave layouts that are no longer
    # the first drives of their group's ranking, which is what sent drained shards to crowded nodes.
    admin("rebalance", "--now", "--wait", "--timeout", "120", database=cluster.database)
    store = SqlStore(cluster.database)
    leaving = cluster.nodes[3].name
    drives = {r.drive_id for r in store.list_drives() if r.node == leaving}

    refused = admin_refused("node", "drain", leaving, database=cluster.database)
    shortfall = "3 live failure domains for 6-wide segments: up to 2 shards of a segment share one"
    assert shortfall in " ".join(refused.split()), refused
    admin("node", "drain", leaving, "--force", "--wait", "--timeout", "180", database=cluster.database)
    deadline = time.monotonic() + 60
    while {r.state for r in store.list_drives() if r.drive_id in drives} != {"retired"}:
        assert time.monotonic() < deadline, "the drained node's drives were not retired"
        time.sleep(0.3)
    spreads = _shards_per_node(store)
    assert len(spreads) == 40
    assert all(spread == [2, 2, 2] for spread in spreads), sorted(spreads, reverse=True)
    store.close()
    deadline = time.monotonic() + 60  # the lease holder's rebalancer counts what is at risk after the change
    while "spread: 0 segments at risk" not in (status := " ".join(admin("status", database=cluster.database).split())):
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert f"WARNING: {shortfall}" in status

    cluster.nodes[seed % 3].kill()  # one of the three left
    with cluster.native() as client:
        objects.verify(client, BUCKET)
