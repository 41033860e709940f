"""``--workers N``: several server processes on one port, one database, one set of drives."""

from __future__ import annotations

import os
import random
import threading
import time
import urllib.request
from pathlib import Path

from botocore.exceptions import ClientError


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


def test_racing_conditional_creates_across_workers_have_one_winner(make_server):
    server = make_server(extra_args=["--workers", "2"])
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
            outcomes.append(exc.response["Error"]["Code"])

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
    _wait(lambda: len(_workers(server)) == 2 and victim not in _workers(server))
    server.wait_ready(15)
    s3 = server.s3()
    s3.put_object(Bucket="data", Key="after", Body=b"y" * 200_000)
    assert s3.get_object(Bucket="data", Key="before")["Body"].read() == b"x" * 200_000
    assert "exited with -9; restarting it" in server.log_tail(200)

    server.kill()  # kill -9 of the supervisor: the workers must not outlive it
    _wait(lambda: _processes_of(server) == [])
    server.start()
    assert server.s3().get_object(Bucket="data", Key="after")["Body"].read() == b"y" * 200_000
