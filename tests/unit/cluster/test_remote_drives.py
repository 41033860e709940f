"""The lease holder's view of a cluster's drives (``ClusterDrives.view``) against a real metadata store."""

from __future__ import annotations

import asyncio
import time

from apollo.cluster.remote_drives import ClusterDrives
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.testing.layouts import DRIVES


def test_a_drive_failed_since_the_last_map_is_no_target_for_repairs(tmp_path):
    """The map comes from the service every few seconds; the holder fails a drive in between. Until the next
    map, the view must not offer that drive as writable or as a placement candidate: the repair worker would
    choose it as the target of its own lost shards (seen in a 12-node rebuild: every such repair failed to
    open the shard on it and backed off 5 s)."""
    store = SqlStore(tmp_path / "meta.db")
    now = time.time()
    for n, drive in enumerate(DRIVES[:3]):
        store.register_node(f"node{n}", f"http://127.0.0.1:{9200 + n}", "", [(drive, f"/d{n}")], now)
        store.node_heartbeat(f"node{n}", {drive: ("ok", 10 << 30, 20 << 30, "")}, now)
    taken = store.cluster_map(now, node_timeout_s=60, reserve_bytes=0)
    assert taken.writable() == set(DRIVES[:3])

    async def stale_map():
        return taken

    async def scenario() -> None:
        drives = ClusterDrives(MetaService(store), stale_map)
        await drives.step()
        assert drives.view().writable == set(DRIVES[:3])
        store.set_drive_state(DRIVES[0], "failed", time.time())
        await drives.step()  # the records say failed; the map is still the one taken before
        view = drives.view()
        assert view.states[DRIVES[0]] == "failed"
        assert view.writable == set(DRIVES[1:3])
        assert [c.drive_id for c in view.candidates] == list(DRIVES[1:3])

    asyncio.run(scenario())
    store.close()
