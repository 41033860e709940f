"""The orphan sweep in a cluster: storage nodes list their shards over HTTP, a sweep deletes what nothing refers to.

The sweep runs here, in the test process, as a cluster's lease holder would run it: an
in-process ``MetaService`` on the cluster's database for the references, and the storage
nodes of the map (``RemoteMeta`` with service tokens) for listing and deleting.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import pytest

from apollo import tokens
from apollo.client.remote_meta import RemoteMeta
from apollo.cluster import orphans
from apollo.cluster.orphans import OrphanSweeper
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.drive_format import FORMAT_FILE
from apollo.proto.storage_api import ERROR_HEADER, TOKEN_HEADER
from apollo.testing.admin import admin
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

BUCKET = "orphans"
AGE_S = 2 * 3600  # how old the tests make a file look


def _drive_id(drive_dir: Path) -> str:
    return json.loads((drive_dir / FORMAT_FILE).read_text())["drive_id"]


def _age(path: Path) -> None:
    then = time.time() - AGE_S
    os.utime(path, (then, then))


async def _sweep(cluster, min_age_s: float) -> dict:
    """One complete pass (not persisted: a lease holder's own pass keeps its state apart)."""
    async with aiohttp.ClientSession() as session:
        remote = await RemoteMeta(cluster.meta_urls, DEV_ACCESS_KEY, DEV_SECRET_KEY, session).start(service=True)
        meta = MetaService(SqlStore(cluster.database))
        try:
            sweeper = OrphanSweeper(meta, lambda: remote.nodes)
            sweeper.tune(interval_s=3600.0, min_age_s=min_age_s)
            current = await sweeper.begin()
            while not await sweeper.advance(current):
                pass
            return current
        finally:
            await remote.close()
            meta.close()


def test_sweep_over_storage_nodes_deletes_old_orphans_and_keeps_fresh_and_referenced_shards(make_cluster, seed,
                                                                                             monkeypatch):  # fmt: skip
    monkeypatch.setattr(orphans, "PAGE_SEGMENTS", 1)  # a page per segment: every group is walked by its cursor
    cluster = make_cluster(nodes=6)
    rng = random.Random(seed)
    objects = {f"o{n}": rng.randbytes(rng.randrange(1 << 20, 3 << 20)) for n in range(4)}
    with cluster.native() as client:
        client.create_bucket(BUCKET)
        for key, body in objects.items():
            client.put(BUCKET, key, body)
    referenced = set(cluster.shard_files())
    for path in referenced:
        _age(path)  # old enough to go: only the metadata's references keep them
    sample = sorted(referenced)[0]
    group = sample.relative_to(sample.parents[2])  # shards/<pg>/<segment>.<index>
    orphan = sample.parent / f"{uuid.uuid4().hex}.2"  # a segment the metadata never heard of
    orphan.write_bytes(b"o" * 1000)
    _age(orphan)
    fresh = sample.parent / f"{uuid.uuid4().hex}.1"  # a write that has not committed yet
    fresh.write_bytes(b"f" * 500)
    spare = next(d for d in cluster.root.glob("node*/drive*") if not (d / group).exists())
    misplaced = spare / group  # a real shard on a drive its layout does not name
    misplaced.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample, misplaced)
    _age(misplaced)

    swept = asyncio.run(asyncio.wait_for(_sweep(cluster, min_age_s=3600.0), 120))  # a cursor that never moves fails

    assert (swept["orphans"], swept["bytes_freed"]) == (2, 1000 + sample.stat().st_size), swept
    assert (swept["drive"], swept["skipped"]) == (6, 0) and swept["files"] == len(referenced) + 3, swept
    assert not orphan.exists() and not misplaced.exists()
    assert fresh.exists()
    assert set(cluster.shard_files()) == referenced | {fresh}
    with cluster.native() as client:
        for key, body in objects.items():
            assert client.get(BUCKET, key) == body


def test_remote_listing_reports_groups_and_shard_ages_measured_by_the_node(make_cluster):
    cluster = make_cluster(nodes=6)
    drive_dir = cluster.node_drives["node2"][0]
    group_dir = drive_dir / "shards" / "01c3"  # pg 451
    group_dir.mkdir(parents=True)
    names = sorted(uuid.uuid4().hex for _ in range(5))
    for n, name in enumerate(names):
        (group_dir / f"{name}.{n}").write_bytes(b"x" * (100 + n))
    _age(group_dir / f"{names[0]}.0")
    (group_dir / "not-a-shard.tmp").write_bytes(b"?")
    (drive_dir / "shards" / "not-a-group").mkdir()

    async def scenario():
        async with aiohttp.ClientSession() as session:
            remote = await RemoteMeta(cluster.meta_urls, DEV_ACCESS_KEY, DEV_SECRET_KEY, session).start(service=True)
            try:
                drive_id = _drive_id(drive_dir)
                node = remote.nodes[drive_id]
                assert await node.list_groups(drive_id) == [451]
                assert await node.list_groups(drive_id, after=451) == []
                first = await node.list_shards(drive_id, 451, limit=2)
                rest = await node.list_shards(drive_id, 451, after=first[-1].segment_id)
                assert [(s.segment_id, s.index, s.size) for s in first + rest] == [
                    (name, n, 100 + n) for n, name in enumerate(names)
                ]
                assert AGE_S - 60 < first[0].age_s < AGE_S + 60 and all(0 <= s.age_s < 60 for s in rest)
                assert await node.list_shards(drive_id, 452) == []
                with pytest.raises(ValueError):
                    await node.list_shards(drive_id, -1)
            finally:
                await remote.close()

    asyncio.run(scenario())


def test_listing_routes_take_only_a_service_list_token_and_refuse_bad_groups(make_cluster):
    cluster = make_cluster(nodes=6)
    store = SqlStore(cluster.database)
    keyring = tokens.Keyring(store.token_keys())
    store.close()
    node = cluster.nodes[0]
    drive_id = _drive_id(cluster.node_drives["node0"][0])

    def get(path: str, token: str | None = None) -> tuple[int, str]:
        request = urllib.request.Request(f"{node.endpoint}/_apollo/shards/{path}", headers={TOKEN_HEADER: token or ""})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, ""
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get(ERROR_HEADER, "")

    service_list = keyring.issue(tokens.LIST, tokens.ANY_SEGMENT, 600)
    refused = {
        "no token": None,
        "a segment's read token": keyring.issue(tokens.READ, uuid.uuid4().hex, 600),
        "a segment's list token": keyring.issue(tokens.LIST, uuid.uuid4().hex, 600),
        "a service read token": keyring.issue(tokens.READ, tokens.ANY_SEGMENT, 600),
        "an expired service list token": keyring.issue(tokens.LIST, tokens.ANY_SEGMENT, -1),
    }
    for what, token in refused.items():
        for path in (drive_id, f"{drive_id}/0"):
            assert get(path, token) == (403, "TokenError"), (what, path)
    assert get(drive_id, service_list) == (200, "")
    assert get(f"{drive_id}/0", service_list) == (200, "")
    for bad in ("x", "..%2F..%2Fx", "-1", "0?limit=0", f"0?limit={10**6}"):
        assert get(f"{drive_id}/{bad}", service_list) == (400, "BadRequest"), bad
    assert get(f"{drive_id}?after=x", service_list) == (400, "BadRequest")
    assert get("no-such-drive", service_list) == (400, "BadRequest")  # not a drive id at all
    assert get("0" * 16, service_list) == (503, "DriveError")  # a drive this node does not serve


def test_the_lease_holder_sweeps_when_an_operator_asks(make_cluster):
    """`apollo admin gc --database ... --now --wait`: the metadata service holding the lease runs the pass."""
    cluster = make_cluster(nodes=6)
    with cluster.native() as client:
        client.create_bucket(BUCKET)
        client.put(BUCKET, "kept", b"k" * 2_000_000)
    referenced = set(cluster.shard_files())
    drive_dir = cluster.node_drives["node4"][0]
    orphan = drive_dir / "shards" / "0007" / f"{uuid.uuid4().hex}.3"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"o" * 4096)
    _age(orphan)
    done = admin("gc", "--min-age", "600", "--now", "--wait", "--timeout", "60", database=cluster.database, timeout=120)
    assert "1 orphans deleted" in done, done
    assert not orphan.exists() and set(cluster.shard_files()) == referenced
    with cluster.native() as client:
        assert client.get(BUCKET, "kept") == b"k" * 2_000_000
