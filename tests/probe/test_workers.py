"""``--workers N``: several server processes on one port, one database, one set of drives."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import urllib.request
from pathlib import Path

from botocore.exceptions import ClientError

from apollo.cluster.duties import STATUS_SETTING
from apollo.cluster.lease import MANAGER_LEASE
from apollo.meta.location import meta_target
from apollo.meta.store import SqlStore
from apollo.proto.records import Lease
from apollo.roles.workers import METRICS_DIR
from apollo.testing.s3error import error_of


def _processes_of(server) -> list[int]:
    """PIDs whose command line names this server's drives (supervisor and workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(server.drives[0]) in cmdline and "apollo" in cmdline:
                pids.append(int(entry.name))
    return pids


def _workers(server) -> list[int]:
    return [pid for pid in _processes_of(server) if pid != server.process.pid]


def _wait(condition, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_workers_share_data_and_metrics(make_server):
    server = make_server(extra_args=["--workers", "2"])
    assert len(_workers(server)) == 2
    clients = [server.s3() for _ in range(4)]  # separate connections, spread over the workers
    clients[0].create_bucket(Bucket="shared")
    payloads = {f"k{n}": random.Random(n).randbytes(300_000) for n in range(12)}
    for n, (key, payload) in enumerate(payloads.items()):
        clients[n % 4].put_object(Bucket="shared", Key=key, Body=payload)
    for n, (key, payload) in enumerate(payloads.items()):
        assert clients[(n + 1) % 4].get_object(Bucket="shared", Key=key)["Body"].read() == payload
    text = urllib.request.urlopen(f"{server.endpoint}/metrics").read().decode()
    series = 'apollo_s3_requests_total{op="PutObject",status="200"}'
    puts = [line for line in text.splitlines() if line.startswith(series)]
    assert puts and float(puts[0].split()[-1]) == 12.0  # summed over both workers


def test_racing_conditional_creates_across_workers_have_one_winner(make_server, meta_args):
    """Two processes, each with its own database connections: on PostgreSQL they really commit at once."""
    server = make_server(extra_args=["--workers", "2", *meta_args])
    server.s3().create_bucket(Bucket="race")
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def create(n: int) -> None:
        client = server.s3()
        client.list_buckets()  # connect first, so the PUTs race for real
        barrier.wait()
        try:
            client.put_object(Bucket="race", Key="once", Body=bytes([n]) * 100_000, IfNoneMatch="*")
            outcomes.append(f"won {n}")
        except ClientError as exc:
            outcomes.append(error_of(exc)[0])

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1, outcomes
    assert set(outcomes) - set(winners) <= {"PreconditionFailed", "ConditionalRequestConflict"}
    body = server.s3().get_object(Bucket="race", Key="once")["Body"].read()
    assert body == bytes([int(winners[0].split()[1])]) * 100_000


def test_a_killed_worker_is_replaced_and_the_supervisor_takes_its_workers_along(make_server):
    server = make_server(extra_args=["--workers", "2"])
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="before", Body=b"x" * 200_000)
    victim = _workers(server)[0]
    os.kill(victim, 9)
    # One snapshot per check: two could see the victim alive in the first and gone (a zombie) in the second.
    _wait(lambda: len(workers := _workers(server)) == 2 and victim not in workers)
    server.wait_ready(15)
    s3 = server.s3()
    s3.put_object(Bucket="data", Key="after", Body=b"y" * 200_000)
    assert s3.get_object(Bucket="data", Key="before")["Body"].read() == b"x" * 200_000
    assert "exited with -9; restarting it" in server.log_tail(200)

    server.kill()  # kill -9 of the supervisor: the workers must not outlive it
    _wait(lambda: _processes_of(server) == [])
    metrics_dir = Path(server.meta_dir) / METRICS_DIR
    assert any(metrics_dir.iterdir()), "the killed workers' metric files should be where the next start finds them"
    server.start()
    assert server.s3().get_object(Bucket="data", Key="after")["Body"].read() == b"y" * 200_000
    live = {str(pid) for pid in _workers(server)}
    stale = [p.name for p in metrics_dir.iterdir() if p.stem.rsplit("_", 1)[1] not in live]
    assert not stale, f"metric files of dead workers were not cleared at start: {stale}"


def _lease(server) -> Lease | None:
    store = SqlStore(meta_target(server.meta_dir))
    try:
        return next((lease for lease in store.leases() if lease.name == MANAGER_LEASE), None)
    finally:
        store.close()


def _setting(server, name: str) -> str | None:
    store = SqlStore(meta_target(server.meta_dir))
    try:
        return store.get_setting(name)
    finally:
        store.close()


def _worker_pid(server, slot: str) -> int:
    for pid in _workers(server):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if args[args.index(b"--worker-index") + 1].decode() == slot:
            return pid
    raise AssertionError(f"no worker in slot {slot}")


def test_a_hung_manager_hands_its_lease_to_another_worker(make_server, postgres):
    """SIGSTOP the lease holder: it stops renewing, the other worker takes over; woken, the old one stands down.

    PostgreSQL only: SQLite has one write lock for the whole database, and a worker stopped inside a
    transaction holds it, so every other worker stops with it (a hung SQLite server is a hung server).
    On PostgreSQL the stopped worker's open transaction is ended by the server after 15 s idle.
    """
    database = postgres.create_database(f"apollo_hung_{os.getpid()}")
    server = make_server(extra_args=["--workers", "2", "--manager-lease", "2", "--meta", database])
    _wait(lambda: (lease := _lease(server)) is not None and lease.expires > lease.now)
    first = _lease(server)
    slot = first.holder.rpartition("#w")[2]
    hung = _worker_pid(server, slot)
    os.kill(hung, signal.SIGSTOP)
    try:
        _wait(lambda: (lease := _lease(server)).holder != first.holder and lease.expires > lease.now, 40)
        taken = _lease(server)
        assert taken.acquired >= first.expires - 0.01  # never before the hung holder's lease ran out
        # The new manager runs the manager's loops: its status reports are newer than the takeover.
        _wait(lambda: json.loads(_setting(server, STATUS_SETTING) or "{}").get("updated", 0) > taken.acquired, 10)
    finally:
        os.kill(hung, signal.SIGCONT)
    time.sleep(3)  # the woken worker's next renewal finds the lease taken
    assert _lease(server).holder == taken.holder
    assert "manager lease" in server.log_tail(400) and "stopping its work" in server.log_tail(400)
    s3 = server.s3()
    s3.create_bucket(Bucket="after")
    s3.put_object(Bucket="after", Key="k", Body=b"z" * 100_000)
    assert s3.get_object(Bucket="after", Key="k")["Body"].read() == b"z" * 100_000
