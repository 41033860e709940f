"""A cluster of real processes on loopback: metadata services on PostgreSQL, storage nodes, S3 gateways.

Damage is done for real (kill -9, SIGSTOP, a PostgreSQL restart) while a workload runs;
afterwards every acknowledged object must read back byte-exact.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time

import aiohttp
import pytest
from botocore.exceptions import ClientError

from apollo.client.remote_meta import RemoteMeta
from apollo.cluster.tuning import SETTING_PREFIX
from apollo.meta.store import SqlStore
from apollo.testing.admin import admin
from apollo.testing.s3error import error_of, s3_error
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

BUCKET = "cluster"


class Workload:
    """Threads that PUT and re-read objects through the gateways, remembering what was acknowledged."""

    def __init__(self, cluster, seed: int, threads: int = 3, retries: int = 1) -> None:
        self.cluster = cluster
        self.seed = seed
        self.threads = threads
        self.retries = retries
        self.acknowledged: dict[str, bytes] = {}
        self.failures: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 100 + index)
        s3 = self.cluster.s3(index % len(self.cluster.gateways),
                             retries={"max_attempts": self.retries, "mode": "standard"})  # fmt: skip
        n = 0
        while not self._stop.is_set():
            key = f"w{index}/obj{n:05d}"
            body = rng.randbytes(rng.choice([100, 70_000, 1_500_000, 5_000_000]))
            try:
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
                self.acknowledged[key] = body
            except ClientError as exc:
                self.failures.append(f"PUT {key}: {error_of(exc)[0]}")
            old = rng.choice(sorted(self.acknowledged)) if self.acknowledged else None
            if old is not None:
                try:
                    assert s3.get_object(Bucket=BUCKET, Key=old)["Body"].read() == self.acknowledged[old], old
                    self.reads += 1
                except ClientError as exc:
                    self.failures.append(f"GET {old}: {error_of(exc)[0]}")
            n += 1

    def __enter__(self) -> Workload:
        self._workers = [threading.Thread(target=self._run, args=(i,)) for i in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(120)

    def verify(self) -> None:
        print(f"{len(self.acknowledged)} objects acknowledged, {self.reads} verified reads, "
              f"{len(self.failures)} failed requests: {self.failures[:8]}")  # fmt: skip
        s3 = self.cluster.s3(retries={"max_attempts": 5, "mode": "standard"})
        for key, body in sorted(self.acknowledged.items()):
            assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body, key


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mutual-tls"])
def test_s3_through_a_gateway_spreads_shards_over_every_node(make_cluster, tls):
    """``mutual-tls``: the same over a cluster whose roles speak mutual TLS (S3 over HTTPS to the gateway)."""
    cluster = make_cluster(nodes=6, tls=tls)
    s3 = cluster.s3()
    s3.create_bucket(Bucket=BUCKET)
    big = os.urandom(9 * 1024 * 1024)
    s3.put_object(Bucket=BUCKET, Key="big", Body=big)
    assert s3.get_object(Bucket=BUCKET, Key="big")["Body"].read() == big
    assert s3.get_object(Bucket=BUCKET, Key="big", Range="bytes=1000-2000999")["Body"].read() == big[1000:2001000]
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="multi")["UploadId"]
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1234)]
    etags = [s3.upload_part(Bucket=BUCKET, Key="multi", UploadId=upload, PartNumber=n + 1, Body=p)["ETag"]
             for n, p in enumerate(parts)]  # fmt: skip
    s3.complete_multipart_upload(Bucket=BUCKET, Key="multi", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]})  # fmt: skip
    assert s3.get_object(Bucket=BUCKET, Key="multi")["Body"].read() == b"".join(parts)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["big", "multi"]
    holders = {p.relative_to(cluster.root).parts[0] for p in cluster.shard_files()}
    assert holders == {f"node{i}" for i in range(6)}
    s3.delete_object(Bucket=BUCKET, Key="big")
    with s3_error("NoSuchKey"):
        s3.get_object(Bucket=BUCKET, Key="big")
    assert not cluster.tmp_files()
    status = admin("status", database=cluster.database)
    assert "on 6 online drives" in status
    meta_metrics = cluster.metas[0].fetch("/metrics").decode()
    assert 'apollo_meta_rpc_total{method="commit_version",outcome="ok"}' in meta_metrics
    assert "apollo_manager_lease_held 1.0" in meta_metrics
    assert 'apollo_storage_nodes{alive="true"} 6.0' in meta_metrics
    node_metrics = cluster.nodes[0].fetch("/metrics").decode()
    assert 'apollo_shard_requests_total{op="PUT",status="201"}' in node_metrics
    assert 'apollo_shard_bytes_total{direction="written"}' in node_metrics


def test_kill_9_of_two_storage_nodes_under_load_loses_no_acknowledged_object(make_cluster, seed):
    cluster = make_cluster(nodes=7)
    cluster.s3().create_bucket(Bucket=BUCKET)
    with Workload(cluster, seed) as load:
        time.sleep(2)
        cluster.nodes[2].kill()
        time.sleep(3)
        cluster.nodes[5].kill()
        time.sleep(12)  # past the heartbeat timeout: placement has left the dead nodes
        settled = len(load.acknowledged)
        time.sleep(4)
        assert len(load.acknowledged) > settled, f"no writes succeed with m nodes down: {load.failures[-5:]}"
    assert load.reads > 0
    load.verify()


def test_a_hung_node_costs_one_timeout_then_reads_and_writes_go_around_it(make_cluster, seed):
    cluster = make_cluster(nodes=6)
    s3 = cluster.s3(read_timeout=60)
    s3.create_bucket(Bucket=BUCKET)
    rng = random.Random(seed)
    objects = {f"k{n}": rng.randbytes(3_000_000) for n in range(4)}
    for key, body in objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    cluster.nodes[0].pause()
    try:
        started = time.monotonic()
        for key, body in objects.items():
            assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
        assert time.monotonic() - started < 30, "every read waited out the hung node again"
        time.sleep(8)  # its heartbeats stopped: placement leaves it
        s3.put_object(Bucket=BUCKET, Key="during", Body=objects["k0"][::-1])
        assert s3.get_object(Bucket=BUCKET, Key="during")["Body"].read() == objects["k0"][::-1]
    finally:
        cluster.nodes[0].resume()


def test_clients_spread_their_calls_over_the_metadata_services(make_cluster):
    """Every client process of a cluster is given every metadata service; each starts at one picked at
    random, so 24 clients call both of two services, not all the first one listed."""
    cluster = make_cluster(nodes=0, metas=2, gateways=0)

    async def clients() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(24):
                await RemoteMeta(cluster.meta_urls, DEV_ACCESS_KEY, DEV_SECRET_KEY, session).call("list_buckets")

    asyncio.run(clients())
    answered = [meta.fetch("/metrics").decode() for meta in cluster.metas]
    assert all('apollo_meta_rpc_total{method="list_buckets",outcome="ok"}' in text for text in answered)


def test_two_gateways_racing_conditional_puts_have_exactly_one_winner(make_cluster):
    cluster = make_cluster(nodes=6, metas=2, gateways=2)
    cluster.s3().create_bucket(Bucket=BUCKET)
    for round_ in range(3):
        key, outcomes, barrier = f"once{round_}", [], threading.Barrier(8)

        def put(n: int, key: str = key, outcomes: list = outcomes, barrier: threading.Barrier = barrier) -> None:
            client = cluster.s3(n % 2)
            client.list_buckets()
            barrier.wait()
            try:
                client.put_object(Bucket=BUCKET, Key=key, Body=bytes([n]) * 200_000, IfNoneMatch="*")
                outcomes.append(n)
            except ClientError as exc:
                outcomes.append(error_of(exc)[0])

        threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        winners = [o for o in outcomes if isinstance(o, int)]
        assert len(winners) == 1, outcomes
        assert set(outcomes) - set(winners) <= {"PreconditionFailed", "ConditionalRequestConflict"}, outcomes
        body = cluster.s3(1).get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert body == bytes([winners[0]]) * 200_000


def test_postgres_restart_and_a_killed_meta_service_lose_nothing_acknowledged(make_cluster, postgres, seed):
    cluster = make_cluster(nodes=6, metas=2, gateways=1)
    cluster.s3().create_bucket(Bucket=BUCKET)
    with Workload(cluster, seed, threads=2, retries=8) as load:
        time.sleep(2)
        postgres.stop("immediate")
        time.sleep(2)
        postgres.start()
        time.sleep(3)
        before = len(load.acknowledged)
        cluster.metas[0].kill()
        time.sleep(4)
        assert len(load.acknowledged) > before, f"no progress with one meta service down: {load.failures[-5:]}"
        cluster.metas[0].start()
        time.sleep(2)
    assert load.reads > 0
    load.verify()


def test_garbage_of_deleted_and_overwritten_objects_leaves_the_storage_nodes(make_cluster):
    cluster = make_cluster(nodes=6, meta_args=("--gc-delay", "0"))
    s3 = cluster.s3()
    s3.create_bucket(Bucket=BUCKET)
    for n in range(4):
        s3.put_object(Bucket=BUCKET, Key=f"k{n}", Body=os.urandom(3_000_000))
    written = len(cluster.shard_files())
    assert written == 4 * 6
    s3.delete_object(Bucket=BUCKET, Key="k0")
    s3.put_object(Bucket=BUCKET, Key="k1", Body=os.urandom(2_000_000))  # the old k1 becomes garbage
    deadline = time.monotonic() + 30
    while len(cluster.shard_files()) != 3 * 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(cluster.shard_files()) == 3 * 6
    assert s3.get_object(Bucket=BUCKET, Key="k1")["ContentLength"] == 2_000_000


def test_a_dead_node_is_rebuilt_elsewhere_and_redundancy_is_whole_again(make_cluster):
    """kill -9 a node for good: past the grace its drive fails, its shards are rebuilt on the other nodes;
    then two more nodes (m) may die and every object still reads back exact."""
    cluster = make_cluster(nodes=8)
    store = SqlStore(cluster.database)
    store.set_setting(f"{SETTING_PREFIX}drive_offline_grace_s", "3")
    s3 = cluster.s3(retries={"max_attempts": 3, "mode": "standard"})
    s3.create_bucket(Bucket=BUCKET)
    objects = {f"o{n}": os.urandom(1_500_000 + n) for n in range(10)}
    for key, body in objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    dead = next(r for r in store.list_drives() if r.node == "node2")
    cluster.nodes[2].kill()

    def rebuilt() -> bool:
        layouts = [json.loads(r["layout"]) for r in store.all("SELECT layout FROM segments")]
        return store.repair_backlog() == 0 and not any(dead.drive_id in layout["drives"] for layout in layouts)

    deadline = time.monotonic() + 90
    while not rebuilt():
        assert time.monotonic() < deadline, f"not rebuilt: backlog {store.repair_backlog()}"
        time.sleep(0.5)
    states = {r.drive_id: r.state for r in store.list_drives()}
    assert states[dead.drive_id] in ("failed", "retired")
    store.close()
    cluster.nodes[5].kill()
    cluster.nodes[6].kill()
    for key, body in objects.items():
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body


def test_the_manager_lease_moves_to_another_meta_service_when_its_holder_dies(make_cluster):
    cluster = make_cluster(nodes=6, metas=2, meta_args=("--manager-lease", "2", "--gc-delay", "0"))
    store = SqlStore(cluster.database)

    def holder() -> str:
        lease = next((lease for lease in store.leases() if lease.name == "manager"), None)
        return lease.holder if lease is not None and lease.expires > lease.now else ""

    deadline = time.monotonic() + 10
    while not holder():
        assert time.monotonic() < deadline, "no meta service took the manager lease"
        time.sleep(0.2)
    first = holder()
    victim = next(m for m in cluster.metas if m.endpoint.rsplit(":", 1)[1] == first.rsplit(":", 1)[1])
    victim.kill()
    deadline = time.monotonic() + 15
    while holder() in ("", first):
        if time.monotonic() > deadline:
            pytest.fail("the lease never moved:\n" + "\n".join(f"--- {m.name}\n{m.log_tail()}" for m in cluster.metas))
        time.sleep(0.2)
    s3 = cluster.s3(retries={"max_attempts": 5, "mode": "standard"})
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="doomed", Body=os.urandom(2_000_000))
    # Six shards, at once or after a repair: a shard write lost to a loaded suite right after the failover
    # (seen once) is queued for repair, which the new holder runs.
    deadline = time.monotonic() + 30
    while len(cluster.shard_files()) != 6:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(cluster.shard_files())} shards of 6, repair backlog {store.repair_backlog()}:\n"
                        + "\n".join(f"--- {r.name}\n{r.log_tail()}" for r in cluster.processes))  # fmt: skip
        time.sleep(0.3)
    s3.delete_object(Bucket=BUCKET, Key="doomed")
    deadline = time.monotonic() + 30  # the new holder's garbage collector removes the shards
    while cluster.shard_files():
        assert time.monotonic() < deadline, "garbage was not collected after the failover"
        time.sleep(0.3)
    store.close()


def test_scrub_finds_a_flipped_byte_and_repair_restores_the_shard_and_a_new_node_gets_a_share(make_cluster):
    cluster = make_cluster(nodes=6)
    s3 = cluster.s3()
    s3.create_bucket(Bucket=BUCKET)
    for n in range(12):
        s3.put_object(Bucket=BUCKET, Key=f"o{n}", Body=os.urandom(2_000_000))
    victim = sorted(cluster.shard_files())[0]
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x55
    victim.write_bytes(bytes(damaged))
    # A cluster's own pass is shallow (the nodes read their cells, weekly); a deep one on demand reads them all.
    scrub = admin("scrub", "--now", "--wait", "--mode", "deep", "--timeout", "60", database=cluster.database)
    assert "1 problems" in scrub, scrub
    deadline = time.monotonic() + 30
    while victim.read_bytes() != original:  # rebuilt in place, byte for byte
        assert time.monotonic() < deadline, "the damaged shard was not repaired"
        time.sleep(0.3)

    new = cluster.add_node()  # a new node: its drive joins, the rebalancer moves a share of shards onto it
    deadline = time.monotonic() + 90  # a pass waits while a drive is offline: a loaded suite's missed beats
    while not list((cluster.root / new.name).rglob("shards/*/*.[0-9]")):
        if time.monotonic() > deadline:
            log = cluster.metas[0].log_tail(400).splitlines()
            said = [line for line in log if "rebalance" in line or "drive " in line]
            pytest.fail("nothing was moved onto the new node; the manager said:\n" + "\n".join(said[-30:]))
        time.sleep(0.5)
    for n in range(12):
        assert len(s3.get_object(Bucket=BUCKET, Key=f"o{n}")["Body"].read()) == 2_000_000


def test_writes_right_after_nodes_die_go_to_spare_drives_at_full_redundancy(make_cluster):
    """Before the map notices two dead nodes, placement still names their drives: the writer opens every
    shard before sending a byte, and a refused open moves that shard to a spare drive."""
    cluster = make_cluster(nodes=8)
    s3 = cluster.s3()
    s3.create_bucket(Bucket=BUCKET)
    store = SqlStore(cluster.database)
    dead = {r.drive_id for r in store.list_drives() if r.node in ("node1", "node4")}
    cluster.nodes[1].kill()
    cluster.nodes[4].kill()
    objects = {f"o{n}": os.urandom(1_000_000 + n) for n in range(10)}
    for key, body in objects.items():  # well inside the 6 s before the map calls the nodes dead
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    layouts = [json.loads(r["layout"]) for r in store.all("SELECT layout FROM segments")]
    assert len(layouts) == 10
    assert not any(dead & set(layout["drives"]) for layout in layouts)  # every shard landed on a live drive
    # Nothing was written at reduced redundancy. (The rebalancer may queue moves of shards that went to
    # spares, toward drives the map still counts as live: those are not repairs.)
    missing = store.all("SELECT * FROM repair_queue WHERE reason <> 'rebalance'")
    assert not missing, f"{missing}\n{cluster.gateways[0].log_tail()}"
    store.close()
    for key, body in objects.items():
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
