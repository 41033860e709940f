"""Segments at risk, for real: a layout with three shards on one node of three is counted (status and
/metrics), moved back to 2,2,2 by the rebalancer through the repair worker, and then survives that node."""

from __future__ import annotations

import json
import random
import re
import shutil
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from apollo.meta.store import SqlStore
from apollo.testing.admin import admin

BUCKET = "spread"


def status(cluster) -> str:
    """``apollo admin status``, with the console's line wrapping undone."""
    return " ".join(admin("status", database=cluster.database, timeout=120).split())


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, cluster=None) -> None:
    """Until ``condition()``; a timeout says what the manager logged about rebalancing, repair and drives."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            said = [line for meta in (cluster.metas if cluster else ()) for line in meta.log_tail(400).splitlines()
                    if "rebalance" in line or "repair" in line or "drive " in line]  # fmt: skip
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; the manager said:\n"
                                 + "\n".join(said[-30:]))  # fmt: skip
        time.sleep(0.5)


def metric(cluster, name: str) -> float | None:
    exposition = urllib.request.urlopen(f"{cluster.metas[0].endpoint}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{name} (\S+)$", exposition, re.M)
    return None if match is None else float(match.group(1))


def crowd_one_segment(store: SqlStore) -> tuple[str, str]:
    """Move one shard of a 2,2,2 segment onto a free drive of a node that already holds two: file and layout,
    as an old placement rule or an operator's hand could have left it. Returns (segment, crowded node)."""
    drives = {r.drive_id: r for r in store.list_drives()}
    row = store.all("SELECT segment_id, layout FROM segments ORDER BY segment_id LIMIT 1")[0]
    layout = json.loads(row["layout"])
    crowded = drives[layout["drives"][0]].node
    index = next(i for i, d in enumerate(layout["drives"]) if drives[d].node != crowded)
    free = next(d for d, r in drives.items() if r.node == crowded and d not in layout["drives"])
    relative = Path("shards") / f"{layout['pg']:04x}" / f"{row['segment_id']}.{index}"  # Drive.shard_path
    source = Path(drives[layout["drives"][index]].path) / relative
    (Path(drives[free].path) / relative).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, Path(drives[free].path) / relative)
    layout["drives"][index] = free
    with store.tx() as db:
        db.execute("UPDATE segments SET layout = ? WHERE segment_id = ?", (json.dumps(layout), row["segment_id"]))
    source.unlink()
    return row["segment_id"], crowded


def spread(store: SqlStore, segment_id: str) -> list[int]:
    node_of = {r.drive_id: r.node for r in store.list_drives()}
    layout = json.loads(store.one("SELECT layout FROM segments WHERE segment_id = ?", (segment_id,))["layout"])
    return sorted(Counter(node_of[d] for d in layout["drives"]).values(), reverse=True)


def test_a_segment_crowded_onto_one_node_is_counted_then_moved_back_to_2_2_2_and_survives_that_node(make_cluster, seed):
    cluster = make_cluster(nodes=3, drives=3)
    rng = random.Random(seed)
    objects = {f"o{n}": rng.randbytes(rng.randint(300_000, 900_000)) for n in range(6)}
    with cluster.native() as client:
        client.create_bucket(BUCKET)
        for key, body in objects.items():
            client.put(BUCKET, key, body)
    store = SqlStore(cluster.database)
    # The fix waits in the queue: status must count the segment meanwhile.
    admin("repair", "--pause", database=cluster.database)
    segment, node = crowd_one_segment(store)
    assert spread(store, segment) == [3, 2, 1]

    admin("rebalance", "--now", database=cluster.database)
    wait_for(lambda: "spread: 1 segments at risk" in status(cluster), 90, "the segment to be counted", cluster)
    assert metric(cluster, "apollo_segments_at_risk") == 1
    moves = store.all("SELECT drive_id, target FROM repair_queue WHERE segment_id = ? AND reason = 'rebalance'",
                      (segment,))  # fmt: skip
    assert moves, "no move was planned for the segment at risk"

    admin("repair", "--resume", database=cluster.database)
    wait_for(lambda: spread(store, segment) == [2, 2, 2], 90, "the move off the crowded node", cluster)
    wait_for(lambda: "spread: 0 segments at risk" in status(cluster), 90, "the count to drop to 0", cluster)
    assert metric(cluster, "apollo_segments_at_risk") == 0
    store.close()

    next(n for n in cluster.nodes if n.name == node).kill()  # it held three shards of that segment before
    with cluster.native() as client:
        for key, body in objects.items():
            assert client.get(BUCKET, key) == body, key
