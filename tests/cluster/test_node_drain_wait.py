"""``node drain --wait`` then ``node remove``: the documented sequence works without a retry loop.

The operator's report: ``apollo admin node drain NAME --wait`` returned a few seconds before the
drives were retired (the last copy is done before the lease holder retires the drive), so the
``node remove`` right after the stop failed; and a remove while the drives were still draining
did not say what to wait for.
"""

from __future__ import annotations

import time

from apollo.meta.store import SqlStore
from apollo.testing.admin import admin, run_admin
from apollo.testing.workload import Workload

BUCKET = "drain-wait"


def _write(cluster, seed: int) -> Workload:
    objects = Workload(seed)
    with cluster.native() as client:
        client.create_bucket(BUCKET)
        objects.write(client, BUCKET, 8, sizes=(1_000_000, 1_000_011))
    return objects


def _remove_once_silent(cluster, node: str):
    """``node remove`` as soon as the stopped node's heartbeat is stale (refusals until then name the heartbeat)."""
    deadline = time.monotonic() + 30
    while "still heartbeating" in (done := run_admin("node", "remove", node, database=cluster.database)).stderr:
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.5)
    return done


def test_drain_wait_returns_once_every_drive_is_retired_so_remove_succeeds_at_once(make_cluster, seed):
    cluster = make_cluster(nodes=7)
    objects = _write(cluster, seed)
    store = SqlStore(cluster.database)
    leaving = cluster.nodes[3].name
    drives = {r.drive_id for r in store.list_drives() if r.node == leaving}

    out = admin("node", "drain", leaving, "--wait", "--timeout", "120", database=cluster.database)
    # No polling here: when --wait returns, every drive of the node is retired already.
    assert {r.drive_id: r.state for r in store.list_drives() if r.drive_id in drives} == dict.fromkeys(
        drives, "retired"
    )
    assert f"every drive of {leaving} is retired" in out, out
    # Run again (as a refused remove advises) after the drain ended: nothing left to follow is no error;
    # a drain without --wait of a node already retired still says what to do instead.
    again = admin("node", "drain", leaving, "--wait", "--timeout", "10", database=cluster.database)
    assert f"every drive of {leaving} is retired" in again and "draining" not in again, again
    plain = run_admin("node", "drain", leaving, database=cluster.database)
    assert plain.returncode != 0 and "retired already" in plain.stderr, plain.stderr

    cluster.nodes[3].kill()
    removed = _remove_once_silent(cluster, leaving)
    assert removed.returncode == 0, removed.stderr
    assert not any(r.node == leaving for r in store.list_drives())
    store.close()
    with cluster.native() as client:
        objects.verify(client, BUCKET)


def test_remove_before_the_drives_are_retired_says_what_to_wait_for(make_cluster, seed):
    cluster = make_cluster(nodes=7)
    objects = _write(cluster, seed)
    leaving = cluster.nodes[3].name
    admin("repair", "--pause", database=cluster.database)  # the copies wait: the drives stay draining
    admin("node", "drain", leaving, database=cluster.database)
    cluster.nodes[3].kill()  # stopped too early, as in the report

    refused = _remove_once_silent(cluster, leaving)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"node {leaving} cannot be removed yet" in lines[0] and "draining" in lines[0], lines[0]
    assert f"apollo admin node drain {leaving} --wait" in lines[0], lines[0]
    assert f"apollo admin node remove {leaving}` again" in lines[0], lines[0]

    # What the refusal advises: follow the drain (run again, it follows the one under way), then remove.
    admin("repair", "--resume", database=cluster.database)
    out = admin("node", "drain", leaving, "--wait", "--timeout", "120", database=cluster.database)
    assert f"every drive of {leaving} is retired" in out, out
    removed = run_admin("node", "remove", leaving, database=cluster.database)
    assert removed.returncode == 0, removed.stderr
    with cluster.native() as client:
        objects.verify(client, BUCKET)
