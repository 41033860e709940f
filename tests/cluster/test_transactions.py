"""Transactions over many objects through the native client, on a cluster (PostgreSQL) and on ``apollo
server`` (SQLite), with real processes: three writer processes join one transaction and stage 20 objects
each while a reader process polls list, get and batch GET and never sees one of them before the commit,
and sees all 60 right after it; then a coordinator SIGKILLed with its transaction open leaves nothing
visible, and once the transaction's TTL ends the garbage collector removes its shard files from the drives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from deployments import Target, deployment

from apollo import errors

BUCKET = "checkpoints"
USER, SECRET = "ckpt-user", "ckpt-user-secret-key"
RANKS, PER_RANK = 3, 20
TTL_MIN_S = 2.0  # --txn-ttl-min: the crashed coordinator's transaction ends soon
PREFIX = "step-100/"

# Each helper is a process of its own, with its own AsyncClient: json arguments in argv, lines out.
WRITER = """
import asyncio, json, sys
from apollo.client import AsyncClient
a = json.loads(sys.argv[1])
async def main():
    async with AsyncClient(a["meta"], a["user"], a["secret"]) as client:
        async with client.join_transaction(a["bucket"], a["txn"]) as txn:
            for n in range(a["count"]):
                size = 40_000 + 997 * n  # beyond the inline size: segments on the drives
                await txn.put(f"{a['prefix']}rank{a['rank']}/{n:03d}", bytes([a["rank"], n]) * (size // 2))
    print("staged", flush=True)
asyncio.run(main())
"""
READER = """
import asyncio, json, os, sys, time
from apollo.client import AsyncClient
a = json.loads(sys.argv[1])
async def main():
    async with AsyncClient(a["meta"], a["user"], a["secret"]) as client:
        probe = [(a["bucket"], key) for key in a["probe"]]
        while not os.path.exists(a["stop"]):
            began = time.time()
            listed = [o.key async for o in client.list(a["bucket"], a["prefix"])]
            got = sum(r.ok for r in [r async for r in client.get_batch(probe)])
            one = await client.head(a["bucket"], a["probe"][0])
            print(json.dumps([began, time.time(), len(listed), got, one is not None]), flush=True)
            await asyncio.sleep(0.01)
asyncio.run(main())
"""
CRASHER = """
import asyncio, json, sys, time
from apollo.client import AsyncClient
a = json.loads(sys.argv[1])
async def main():
    async with AsyncClient(a["meta"], a["user"], a["secret"]) as client:
        txn = client.transaction(a["bucket"], ttl_s=1)
        await txn.begin()
        for n in range(5):
            await txn.put(f"crashed/{n}", bytes([n]) * 300_000)
        print(json.dumps({"txn": txn.id, "expires_in": txn.info.expires - txn.info.created}), flush=True)
        time.sleep(3600)  # killed here, its transaction open
asyncio.run(main())
"""


@pytest.fixture(params=["cluster", "server"])
def target(request, make_cluster, make_server) -> Target:
    return deployment(request.param, make_cluster, make_server, USER, SECRET,
                      meta_args=("--gc-delay", "0", "--txn-ttl-min", str(TTL_MIN_S)))  # fmt: skip


def helper(script: str, **arguments) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, json.dumps(arguments)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def test_three_writer_processes_commit_one_transaction_that_a_reader_sees_all_or_nothing_of(target, tmp_path):
    common = {"meta": target.meta_urls, "user": USER, "secret": SECRET, "bucket": BUCKET, "prefix": PREFIX}
    keys = sorted(f"{PREFIX}rank{rank}/{n:03d}" for rank in range(RANKS) for n in range(PER_RANK))
    with target.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
        client.put(BUCKET, "step-99/done", b"an earlier checkpoint")
        stop = tmp_path / "stop"
        reader = helper(READER, **common, stop=str(stop), probe=[keys[0], keys[-1], keys[30]])
        try:
            with client.transaction(BUCKET, if_prefix_absent=PREFIX) as txn:
                assert len(txn.id) == 32
                writers = [helper(WRITER, **common, txn=txn.id, rank=rank, count=PER_RANK) for rank in range(RANKS)]
                outputs = [writer.communicate(timeout=120)[0] for writer in writers]
                assert [writer.returncode for writer in writers] == [0] * RANKS, outputs
                assert client.list(BUCKET, PREFIX) == []  # staged, every one: still nothing to see
                time.sleep(0.5)  # the reader polls the staged state a while
                commit_began = time.time()
            committed = time.time()
            assert sorted(o.key for o in client.list(BUCKET, PREFIX)) == keys
            time.sleep(0.5)
        finally:
            stop.touch()
            polls = [json.loads(line) for line in reader.communicate(timeout=60)[0].splitlines()]
        assert reader.returncode == 0
        before = [p for p in polls if p[1] < commit_began]
        after = [p for p in polls if p[0] > committed]
        assert len(before) > 5 and len(after) > 5, (len(before), len(after))
        # Each call of a poll sees all or nothing; a poll's calls (list, then batch GET, then HEAD) run one after
        # another, so one that straddles the commit sees nothing in its first calls and everything in the rest.
        seen = ((0, 0, False), (0, 0, True), (0, 3, True), (len(keys), 3, True))
        for began, ended, listed, got, head in polls:
            assert (listed, got, head) in seen, (began, ended, listed, got, head)
            if (listed, got, head) not in (seen[0], seen[-1]):
                assert began < committed and ended > commit_began, (began, ended, listed, got, head)
        assert all(p[2] == 0 for p in before) and all(p[2] == len(keys) for p in after)
        for rank in range(RANKS):
            body = client.get(BUCKET, f"{PREFIX}rank{rank}/007")
            assert len(body) == 2 * ((40_000 + 997 * 7) // 2) and body[:2] == bytes([rank, 7])
        # A second job that writes step 100 too: its conditioned commit fails, and nothing of it shows.
        late = client.transaction(BUCKET, if_prefix_absent=PREFIX)
        with pytest.raises(errors.PreconditionFailed), late:
            late.put(f"{PREFIX}rank0/000", b"a torn checkpoint")
            late.put(f"{PREFIX}extra", b"x" * 50_000)
        assert client.get(BUCKET, f"{PREFIX}rank0/000")[:2] == bytes([0, 0])
        assert client.head(BUCKET, f"{PREFIX}extra") is None
        with pytest.raises(errors.TransactionClosed):  # aborted on the way out
            client.join_transaction(BUCKET, late.id).begin()


def test_a_killed_coordinators_transaction_shows_nothing_and_its_shards_are_collected(target):
    with target.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
        client.put(BUCKET, "kept", b"k" * 100_000)
        held = set(target.shard_files())
        crasher = helper(CRASHER, meta=target.meta_urls, user=USER, secret=SECRET, bucket=BUCKET)
        try:
            line = crasher.stdout.readline()
            staged = json.loads(line)
        finally:
            crasher.send_signal(signal.SIGKILL)
            crasher.wait(timeout=30)
        assert staged["expires_in"] == TTL_MIN_S  # the service's bound, not the 1 s asked for
        written = set(target.shard_files()) - held
        assert written, "the staged puts wrote no shard files"
        assert client.list(BUCKET, "crashed/") == []
        assert all(client.head(BUCKET, f"crashed/{n}") is None for n in range(5))
        deadline = time.monotonic() + 60
        while set(target.shard_files()) & written and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not set(target.shard_files()) & written, "the expired transaction's shard files are still there"
        assert client.list(BUCKET, "crashed/") == [] and client.get(BUCKET, "kept") == b"k" * 100_000
        assert set(target.shard_files()) >= held
        with pytest.raises(errors.TransactionNotFound):  # expired and forgotten
            client.join_transaction(BUCKET, staged["txn"]).begin()
