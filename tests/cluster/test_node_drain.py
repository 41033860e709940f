"""Taking a storage node out of a cluster for good: drain it, stop it, remove it, lose nothing."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

from apollo.meta.store import SqlStore

BUCKET = "drain"
ADMIN = [sys.executable, "-m", "apollo", "admin"]


def admin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ADMIN, *args], capture_output=True, text=True, timeout=180)


def test_a_drained_node_is_removed_and_the_rest_still_survive_m_failures(make_cluster, seed):
    """Draining copies every shard off the node while it still serves them (no redundancy is lost on
    the way); removing it is refused while it runs or holds shards. Afterwards two more nodes (m) die
    and every object still reads back exact: nothing was left on the removed node."""
    cluster = make_cluster(nodes=7)
    rng = random.Random(seed)
    objects = {f"o{n}": rng.randbytes(1_000_000 + n) for n in range(12)}
    with cluster.native() as client:
        client.create_bucket(BUCKET)
        for key, body in objects.items():
            client.put(BUCKET, key, body)
    store = SqlStore(cluster.database)
    leaving = cluster.nodes[3].name
    drives = [r.drive_id for r in store.list_drives() if r.node == leaving]

    refused = admin("node", "remove", leaving, "--database", cluster.database)
    assert refused.returncode != 0 and "still heartbeating" in refused.stderr, refused.stderr
    drained = admin("node", "drain", leaving, "--database", cluster.database, "--wait", "--timeout", "120")
    assert drained.returncode == 0, drained.stdout + drained.stderr

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
    while (removed := admin("node", "remove", leaving, "--database", cluster.database)).returncode != 0:
        assert "still heartbeating" in removed.stderr and time.monotonic() < deadline, removed.stderr
        time.sleep(1)
    assert not any(r.node == leaving for r in store.list_drives())
    assert leaving not in {r["name"] for r in store.all("SELECT name FROM nodes")}
    store.close()

    cluster.nodes[0].kill()
    cluster.nodes[5].kill()
    with cluster.native() as client:
        for key, body in objects.items():
            assert client.get(BUCKET, key) == body


def test_node_commands_refuse_what_would_lose_redundancy_or_name_nothing(make_cluster):
    cluster = make_cluster(nodes=6)  # 4+2 over six nodes: draining one leaves five failure domains
    too_few = admin("node", "drain", cluster.nodes[0].name, "--database", cluster.database)
    assert too_few.returncode != 0 and "failure domains" in too_few.stderr, too_few.stderr
    unknown = admin("node", "drain", "no-such-node", "--database", cluster.database)
    assert unknown.returncode != 0 and "no storage node named" in unknown.stderr, unknown.stderr
