"""Node liveness across a metadata database outage, against a real PostgreSQL stopped and started again.

No heartbeat can be recorded while the database is away. Judged against the clock when it comes back,
every node would look dead at once, the map would offer no writable drive, and every put would fail with
``InsufficientStorage`` until each node had beaten again (seen after a Patroni failover). The service
judges heartbeats against its clock less the outage it saw, for a heartbeat timeout after it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from apollo import limits, tokens
from apollo.meta.rpc_service import MAP_TTL_S, MetaRpc
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.testing.layouts import DRIVES
from apollo.testing.postgres import TempPostgres, find_bindir

OUTAGE_S = limits.node_dead_after_s + 2  # longer than a node may go unheard


@pytest.mark.skipif(find_bindir() is None, reason="PostgreSQL server binaries not installed")
def test_nodes_unheard_during_a_database_outage_stay_alive_after_it():
    with TempPostgres(durable=False) as pg:
        store = SqlStore(pg.create_database("outage"))
        now = time.time()
        for n, drive in enumerate(DRIVES[:6]):
            store.register_node(f"node{n}", f"http://127.0.0.1:{9200 + n}", "", [(drive, f"/d{n}")], now)
            store.node_heartbeat(f"node{n}", {drive: ("ok", 10 << 30, 20 << 30, "")}, now)
        rpc = MetaRpc(MetaService(store), tokens.Keyring([tokens.new_key(now - 3600)]), reserve_bytes=0)

        async def scenario() -> None:
            assert (await rpc.cluster_map()).writable() == set(DRIVES[:6])
            pg.stop("immediate")
            await asyncio.sleep(MAP_TTL_S)  # the cached map is old: the next call asks the database
            asking = asyncio.ensure_future(rpc.cluster_map())  # retries until the database is back
            await asyncio.sleep(OUTAGE_S)
            pg.start()
            await asking
            await asyncio.sleep(MAP_TTL_S)
            after = await rpc.cluster_map()  # the beats are OUTAGE_S old: older than a node may go unheard
            assert time.time() - now > limits.node_dead_after_s
            assert all(node.alive for node in after.nodes), after.nodes
            assert after.writable() == set(DRIVES[:6])
            assert rpc.meta.placement.usable == 6  # and placement may place new segments on them
            await asyncio.sleep(limits.node_dead_after_s)  # a heartbeat timeout later, only node0 beat again
            store.node_heartbeat("node0", {DRIVES[0]: ("ok", 10 << 30, 20 << 30, "")}, time.time())
            later = await rpc.cluster_map()  # the nodes that did not beat again are dead, as before
            assert {node.name for node in later.nodes if node.alive} == {"node0"}

        asyncio.run(scenario())
        store.close()
