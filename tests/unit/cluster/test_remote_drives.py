"""The lease holder's view of a cluster's drives (``ClusterDrives.view``) against a real metadata store."""

from __future__ import annotations

import asyncio
import time

from apollo import limits
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


def test_silence_counts_only_after_a_whole_heartbeat_timeout_of_listening(tmp_path):
    """After a metadata database outage every node's last heartbeat is old at once. The manager that takes the
    lease then (or whose step waited out the outage) must not take every drive offline for that: it waits a
    heartbeat timeout for fresh beats. A node still silent after that goes offline as before."""
    store = SqlStore(tmp_path / "meta.db")
    beat = time.time() - 60  # the last heartbeats before the outage
    for n, drive in enumerate(DRIVES[:3]):
        store.register_node(f"node{n}", f"http://127.0.0.1:{9200 + n}", "", [(drive, f"/d{n}")], beat)
        store.node_heartbeat(f"node{n}", {drive: ("ok", 10 << 30, 20 << 30, "")}, beat)
        store.set_drive_state(drive, "online", beat)

    async def current_map():
        return store.cluster_map(time.time(), node_timeout_s=limits.node_dead_after_s, reserve_bytes=0)

    async def scenario() -> None:
        drives = ClusterDrives(MetaService(store), current_map)
        await drives.step()  # the lease just taken: nobody has been listening
        assert {r.state for r in store.list_drives()} == {"online"}
        store.node_heartbeat("node0", {DRIVES[0]: ("ok", 10 << 30, 20 << 30, "")}, time.time())
        drives._listening_since -= limits.node_dead_after_s  # a heartbeat timeout later, node0 beat again
        await drives.step()
        states = {r.drive_id: r.state for r in store.list_drives()}
        assert states == {DRIVES[0]: "online", DRIVES[1]: "offline", DRIVES[2]: "offline"}

    asyncio.run(scenario())
    store.close()
