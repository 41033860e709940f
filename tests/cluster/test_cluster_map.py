"""The cluster map: failure domains in placement, and clients catching up with a newer epoch."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter

from apollo.client import AsyncClient, remote_meta
from apollo.meta.store import SqlStore
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY


def test_shards_spread_over_racks_and_a_whole_rack_can_die(make_cluster):
    cluster = make_cluster(nodes=9, racks=3)  # node i is in rack i % 3: three nodes per rack
    s3 = cluster.s3()
    s3.create_bucket(Bucket="racks")
    objects = {f"o{n}": os.urandom(2_000_000 + n) for n in range(8)}
    for key, body in objects.items():
        s3.put_object(Bucket="racks", Key=key, Body=body)
    store = SqlStore(cluster.database)
    rack_of = {r["drive_id"]: f"rack{int(r['node'][4:]) % 3}" for r in store.all("SELECT drive_id, node FROM drives")}
    layouts = [json.loads(r["layout"]) for r in store.all("SELECT layout FROM segments")]
    store.close()
    assert layouts
    for layout in layouts:  # 6 shards over 3 racks: exactly 2 in each, so losing a rack loses m = 2
        assert sorted(Counter(rack_of[d] for d in layout["drives"]).values()) == [2, 2, 2]
    for node in cluster.nodes[0::3]:  # every node of rack0
        node.kill()
    for key, body in objects.items():
        assert s3.get_object(Bucket="racks", Key=key)["Body"].read() == body


def test_a_node_answering_with_a_newer_epoch_makes_the_client_fetch_the_map(make_cluster, monkeypatch):
    monkeypatch.setattr(remote_meta, "MAP_REFRESH_S", 3600.0)  # no periodic refresh: only the epoch can trigger one
    cluster = make_cluster(nodes=6)

    async def scenario():
        async with AsyncClient(cluster.meta_urls, DEV_ACCESS_KEY, DEV_SECRET_KEY) as client:
            await client.create_bucket("epochs")
            await client.put("epochs", "k", os.urandom(1_000_000))
            held = client._meta.map
            await asyncio.to_thread(cluster.add_node)  # registration bumps the epoch
            deadline = time.monotonic() + 15  # the old nodes learn it with their next heartbeat (2 s)
            while client._meta.map.epoch == held.epoch:
                assert time.monotonic() < deadline, "the client never caught up with the new epoch"
                await client.get("epochs", "k")
                await asyncio.sleep(0.2)
            assert len(client._meta.map.nodes) == len(held.nodes) + 1
            assert set(client._meta.nodes) - {d.drive_id for d in held.drives}  # the new node's drive is known

    asyncio.run(scenario())
