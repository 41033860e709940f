"""Cluster benchmark: native direct-path client vs the S3 gateway, and metadata operations per second.

On one machine: PostgreSQL (from Debian's packages, in a temp dir), one ``apollo meta``,
six ``apollo storage`` processes with one directory drive each, one ``apollo gateway``.
Every figure is measured in this run, on the same data sizes:

- **baseline (loopback + disk)**: exactly the shard bytes a 4+2 write produces (1.5x the
  data), in the same shard files (k+m per 64 MiB segment), streamed to the six storage
  nodes over loopback HTTP, and the k data shards read back, with no erasure coding,
  hashing or metadata. Reported in object bytes per second: the cost of moving that data at all.
- **native**: ``apollo.client.AsyncClient`` (it encodes and CRCs every cell and talks to the
  nodes directly; its ``put`` skips MD5, so the ETag is not the content's MD5).
- **gateway**: signed S3 requests from a lean HTTP client to ``apollo gateway``, which does
  the same work plus the MD5 an S3 ETag needs, in its own process.

Patterns: one 256 MiB object PUT then GET; a checkpoint (8 writers x 512 MiB at once, then
8 readers). Every writer and reader is a process of its own (the ranks of a job are); all of
them connect, make their data and warm up (write and read a 128 MiB object of their own the
same way: connections opened to every node, TCP windows grown, as in a long-running client and in the
gateway), then start together at a barrier; a rate is the bytes moved over the time from that
start to the last one's finish. Then metadata lookups and commits per
second, on SQLite and PostgreSQL (in-process ``MetaService``) and through ``apollo meta`` (RPC,
PostgreSQL): through 1 service, or each of ``--metas`` (a cluster of that many services on one database
and nothing else, a client process of ``--concurrency`` callers per service). Each metadata row also
says how many cores the clients, the services and PostgreSQL kept busy, PostgreSQL's CPU per operation,
and so the rate at which PostgreSQL alone would fill every core of the machine: where it becomes the limit.

    .venv/bin/python benchmarks/cluster_bench.py            # full sizes
    .venv/bin/python benchmarks/cluster_bench.py --quick    # small sizes, a smoke run
    .venv/bin/python benchmarks/cluster_bench.py --meta-only    # the metadata rows alone
    .venv/bin/python benchmarks/cluster_bench.py --meta-only --metas 1,2,4   # through 1, 2 and 4 metadata services
    .venv/bin/python benchmarks/cluster_bench.py --tls      # every role with --certs: mutual TLS, HTTPS for S3
    .venv/bin/python benchmarks/cluster_bench.py --host-mbit 1000   # as root: every role on a host of its own
    .venv/bin/python benchmarks/cluster_bench.py --host-mbit 1000 --host-rtt-ms 1   # and 1 ms more per round trip

``--host-mbit N`` puts every role on a host of its own (a network namespace, ``apollo.testing.netns``)
whose link is capped at N Mbit/s each way, as a storage node's or a gateway's NIC is; the writers and
readers stay in the root namespace, on the switch uncapped, as a job spread over many client hosts.
The network, not loopback, is then the limit, and the native path's advantage is what a real one
would show: its bytes cross each node's link once, the gateway's cross the gateway's link twice.

``--host-rtt-ms N`` (with ``--host-mbit`` or alone) adds N ms to the round trip of every TCP connection
into every role's host: a link proxy in each host holds every byte N/2 ms each way
(``Network.delay``). Every connection of the run ends at a role, the writers' and readers' to the nodes
and the gateway, the gateway's to the nodes and the meta, so each has N ms more. The delays are put on
before the roles start, so their own connections go through them too. The proxies' work is on the
same cores as everything else.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import procstat  # noqa: E402

from apollo import limits  # noqa: E402
from apollo.cli.common import MALLOC_TUNING  # noqa: E402
from apollo.client import AsyncClient  # noqa: E402
from apollo.client.remote_meta import RemoteMeta  # noqa: E402
from apollo.client.tls import client_context  # noqa: E402
from apollo.meta.service import MetaService  # noqa: E402
from apollo.meta.store import SqlStore  # noqa: E402
from apollo.proto.layout import ObjectData, ShardRef  # noqa: E402
from apollo.proto.records import ObjectAttrs  # noqa: E402
from apollo.storage.shardfile import HEADER_BYTES, encode_footer  # noqa: E402
from apollo.testing.cluster import LocalCluster  # noqa: E402
from apollo.testing.netns import Network  # noqa: E402
from apollo.testing.postgres import TempPostgres  # noqa: E402
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY  # noqa: E402

MiB = 1024 * 1024
K, M = 4, 2


def _payload(size: int) -> bytes:
    block = os.urandom(MiB)
    return (block * (size // MiB + 1))[:size]


SEGMENT = limits.segment_size_bytes_max  # data bytes per set of k+m shard files, as the native writer cuts them
SHARD_CHUNK = limits.io_batch_bytes // K  # bytes per shard per append, as one encode batch gives each shard
WARM_UP_BYTES = 128 * MiB  # written and read by every process, untimed, before the clock starts: two segments


def _segments(size: int) -> list[tuple[int, int]]:
    """(segment number, shard bytes) of every segment of a ``size``-byte object."""
    return [(n, -(-min(SEGMENT, size - start) // K)) for n, start in enumerate(range(0, size, SEGMENT))]


INLINE_ETAG = hashlib.md5(b"12345678").hexdigest()  # of the metadata benchmark's inline object


def _segment_id(key: str) -> str:
    """The baseline's shard files are named like the cluster's own (storage nodes accept no other names):
    one segment id per key, the placement group telling its segments apart."""
    return hashlib.md5(key.encode()).hexdigest()


async def baseline_put(meta: RemoteMeta, key: str, size: int) -> None:
    """The shard bytes of a 4+2 write in the same shard files (k+m per segment, one segment after
    another), straight to six nodes in parallel, with no coding, hashing or metadata."""
    drives = sorted(meta.nodes)
    chunk = memoryview(os.urandom(SHARD_CHUNK))  # sliced without copying: the baseline does no work it need not

    async def one(segment: int, index: int, shard_bytes: int) -> None:
        drive = drives[index % len(drives)]
        shard = ShardRef(segment, _segment_id(key), index)
        sink = await meta.nodes[drive].open_shard(drive, shard, b"\0" * HEADER_BYTES)
        for start in range(0, shard_bytes, len(chunk)):
            await sink.append([chunk[: shard_bytes - start]])
        await sink.finish(encode_footer({"n": 0}))

    for segment, shard_bytes in _segments(size):
        await asyncio.gather(*(one(segment, i, shard_bytes) for i in range(K + M)))


async def baseline_get(meta: RemoteMeta, key: str, size: int) -> None:
    """The k data shards of every segment, read in parallel in 4 MiB pieces."""
    drives = sorted(meta.nodes)

    async def one(segment: int, index: int, shard_bytes: int) -> None:
        drive = drives[index % len(drives)]
        for offset in range(HEADER_BYTES, HEADER_BYTES + shard_bytes, 4 * MiB):
            length = min(4 * MiB, HEADER_BYTES + shard_bytes - offset)
            await meta.nodes[drive].read(drive, ShardRef(segment, _segment_id(key), index), offset, length)

    await asyncio.gather(*(one(segment, i, shard_bytes) for segment, shard_bytes in _segments(size)
                           for i in range(K)))  # fmt: skip


async def _move(way: str, op: str, info: dict, key: str, size: int, ready) -> tuple[float, float]:
    """One writer or reader: connect, make its data and warm up, wait at ``ready`` (a barrier of all
    of them), move one object; returns when it started and finished."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        service = RemoteMeta(info["meta"], DEV_ACCESS_KEY, DEV_SECRET_KEY, session, ssl_context=_tls(info))
        await service.start(service=True)
        native = await AsyncClient(info["meta"], DEV_ACCESS_KEY, DEV_SECRET_KEY, certs=info["certs"]).connect()
        gateway = loadgen.HttpTarget({"target": "apollo", "endpoint": info["gateway"], "access_key": DEV_ACCESS_KEY,
                                      "secret_key": DEV_SECRET_KEY, "bucket": "bench", "size": size,
                                      "ca_file": info["ca_file"]})  # fmt: skip

        async def transfer(op: str, key: str, size: int, data: bytes) -> None:
            if way == "baseline":
                await (baseline_put if op == "PUT" else baseline_get)(service, key, size)
            elif way == "native" and op == "PUT":
                await native.put("bench", key, data)
            elif way == "native":
                async for _ in native.stream("bench", key):
                    pass
            elif op == "PUT":
                await gateway.put(0, key, size)
            else:
                gateway.task["size"] = size  # what the GET must return
                await gateway.get(0, key)

        data = _payload(size) if (way, op) == ("native", "PUT") else b""
        try:
            # A long-running client has its connections open and their TCP windows grown; a fresh one
            # has not, and one 256 MiB GET lasts 0.2 s. So each way first writes and reads an object of
            # its own, untimed, as the gateway's connections to the nodes already have.
            warm = f"warm-{way}-{os.getpid()}"
            await transfer("PUT", warm, WARM_UP_BYTES, data[:WARM_UP_BYTES] or _payload(WARM_UP_BYTES))
            await transfer("GET", warm, WARM_UP_BYTES, b"")
            await asyncio.to_thread(ready.wait)
            started = time.time()
            await transfer(op, key, size, data)
            return started, time.time()
        finally:
            await gateway.close()
            await native.close()
            await service.close()


def _tls(info: dict):
    """The TLS context of the benchmark's own callers under ``--tls`` (the cluster CA, a client certificate)."""
    return client_context(info["certs"]) if info["certs"] else None


def _process_main(way: str, op: str, info: dict, key: str, size: int, ready) -> tuple[float, float]:
    if info.get("client_cpus"):  # before any thread starts: threads inherit it
        os.sched_setaffinity(0, info["client_cpus"])
    uvloop.install()
    return asyncio.run(_move(way, op, info, key, size, ready))


def transfer_rows(cluster: LocalCluster, object_size: int, writers: int, ckpt_size: int, rounds: int,
                  client_cpus: set[int] | None = None) -> list[dict]:  # fmt: skip
    """Every writer and reader is a process of its own, as the ranks of a training job are.

    Each round measures every pattern and way once, overwriting the previous round's objects,
    so a burst of noise on this shared machine hits one round of every way rather than all of one."""
    info = {"meta": cluster.meta_urls, "gateway": cluster.gateways[0].endpoint, "client_cpus": client_cpus,
            "certs": cluster.client_certs and str(cluster.client_certs),
            "ca_file": cluster.ca_file and str(cluster.ca_file)}  # fmt: skip

    async def bucket() -> None:
        async with AsyncClient(info["meta"], DEV_ACCESS_KEY, DEV_SECRET_KEY, certs=info["certs"]) as native:
            await native.create_bucket("bench")

    asyncio.run(bucket())
    rows = []
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, concurrent.futures.ProcessPoolExecutor(max(writers, 1), mp_context=spawn) as pool:
        patterns = (("object", 1, object_size), ("checkpoint", writers, ckpt_size))
        for run, (pattern, count, size) in [(run, pattern) for run in range(rounds) for pattern in patterns]:
            for way in ("baseline", "native", "gateway"):
                keys = [f"{pattern}-{way}-{n}" for n in range(count)]
                for op in ("PUT", "GET"):
                    ready = manager.Barrier(count)  # the clock starts once every process is connected and ready
                    runs = [pool.submit(_process_main, way, op, info, key, size, ready) for key in keys]
                    times = [future.result() for future in runs]
                    seconds = max(end for _, end in times) - min(start for start, _ in times)
                    rate = round(count * size / MiB / seconds, 1)
                    rows.append({"round": run, "pattern": pattern, "way": way, "op": op, "objects": count,
                                 "size_mib": size / MiB, "seconds": round(seconds, 3), "mib_per_s": rate})  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
    return rows


async def _call_loop(meta, op: str, prefix: str, deadline: float) -> int:
    """One caller: commits (``commit_version`` of a small inline object) or lookups (``get_version``) of its
    own 200 keys until ``deadline``; how many it made."""
    n = 0
    while time.perf_counter() < deadline:
        key = f"{prefix}-{n % 200}"
        if op == "commit":
            await meta.commit_version("ops", key, size=8, etag=INLINE_ETAG, attrs=ObjectAttrs(),
                                      data=ObjectData(8, inline=b"12345678"), now=time.time())  # fmt: skip
        else:
            await meta.get_version("ops", key)
        n += 1
    return n


async def _calls(meta, op: str, prefix: str, seconds: float, concurrency: int) -> tuple[int, float]:
    """``concurrency`` callers at once for ``seconds``: the calls made, and the time they took."""
    started = time.perf_counter()
    deadline = started + seconds
    done = await asyncio.gather(*(_call_loop(meta, op, f"{prefix}{slot}", deadline) for slot in range(concurrency)))
    return sum(done), time.perf_counter() - started


async def _remote_calls(endpoint: str, certs: str | None, op: str, prefix: str, seconds: float, concurrency: int,
                        ready) -> dict:  # fmt: skip
    """One client process's share of an RPC row: connect, make one call, wait at ``ready``, then call."""
    async with aiohttp.ClientSession() as session:
        meta = RemoteMeta(endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY, session, ssl_context=_tls({"certs": certs}))
        await meta.get_bucket("ops")
        await asyncio.to_thread(ready.wait)
        cpu = time.process_time()
        ops, seconds = await _calls(meta, op, prefix, seconds, concurrency)
        return {"ops": ops, "seconds": seconds, "cpu_s": time.process_time() - cpu}


def _meta_client_main(*args) -> dict:
    uvloop.install()
    return asyncio.run(_remote_calls(*args))


def postgres_cpu_seconds(pg: TempPostgres) -> float:
    """CPU time used so far by the server: the postmaster, its live children (backends, WAL writer,
    checkpointer) and those that ended."""
    return procstat.cpu_seconds(procstat.tree(pg.pid()), reaped=True)


def _row(label: str, services: int, op: str, concurrency: int, ops: int, seconds: float,
         cpu: dict[str, float]) -> dict:  # fmt: skip
    """A metadata row: the rate, and the cores each tier kept busy on average over the run."""
    row = {"metadata": label, "services": services, "op": op, "concurrency": concurrency, "ops": ops,
           "ops_per_s": round(ops / seconds)}  # fmt: skip
    row.update({f"{tier}_cores": round(used / seconds, 2) for tier, used in cpu.items()})
    if cpu.get("postgres") and ops:  # and the rate at which PostgreSQL alone would fill every core of this box
        row["postgres_us_per_op"] = round(cpu["postgres"] / ops * 1e6)
        row["postgres_ceiling_per_s"] = round(os.cpu_count() * ops / cpu["postgres"])
    print(json.dumps(row), flush=True)
    return row


def rpc_metadata_rows(pg: TempPostgres, services: int, seconds: float, concurrency: int,
                      tls: bool) -> list[dict]:  # fmt: skip
    """Commits and lookups through ``services`` metadata services on one database, with nothing else running:
    a client process of ``concurrency`` callers per service, each process on one service (as the clients of
    a cluster spread over its services)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="apollo-meta-bench-") as tmp:
        cluster = LocalCluster(Path(tmp), pg.create_database(f"rpc{services}"), nodes=0, metas=services,
                               gateways=0, tls=tls)  # fmt: skip
        with cluster:
            certs = cluster.client_certs and str(cluster.client_certs)
            asyncio.run(_create_bucket(cluster.meta_urls, certs))
            spawn = multiprocessing.get_context("spawn")
            with spawn.Manager() as manager, concurrent.futures.ProcessPoolExecutor(services, mp_context=spawn) as pool:
                for op in ("commit", "lookup"):
                    ready = manager.Barrier(services + 1)
                    runs = [pool.submit(_meta_client_main, meta.endpoint, certs, op, f"p{i}-", seconds, concurrency,
                                        ready) for i, meta in enumerate(cluster.metas)]  # fmt: skip
                    ready.wait()
                    metas = [meta.process.pid for meta in cluster.metas]
                    before = {"meta": procstat.cpu_seconds(metas), "postgres": postgres_cpu_seconds(pg)}
                    results = [run.result() for run in runs]
                    elapsed = max(result["seconds"] for result in results)
                    cpu = {"meta": procstat.cpu_seconds(metas) - before["meta"],
                           "postgres": postgres_cpu_seconds(pg) - before["postgres"],
                           "client": sum(result["cpu_s"] for result in results)}  # fmt: skip
                    rows.append(_row("apollo meta RPC, PostgreSQL", services, op, concurrency * services,
                                     sum(result["ops"] for result in results), elapsed, cpu))  # fmt: skip
    return rows


async def _create_bucket(endpoint: str, certs: str | None) -> None:
    async with aiohttp.ClientSession() as session:
        meta = RemoteMeta(endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY, session, ssl_context=_tls({"certs": certs}))
        await meta.create_bucket("ops", time.time())


async def local_metadata_rows(database: str, label: str, seconds: float, concurrency: int,
                              pg: TempPostgres | None = None) -> list[dict]:  # fmt: skip
    """Commits and lookups on an in-process ``MetaService``: no RPC, the store's own threads."""
    meta = MetaService(SqlStore(database))
    await meta.create_bucket("ops", time.time())
    rows = []
    try:
        for op in ("commit", "lookup"):
            before = (time.process_time(), pg and postgres_cpu_seconds(pg))
            ops, elapsed = await _calls(meta, op, "k", seconds, concurrency)
            cpu = {"process": time.process_time() - before[0]}
            if pg:
                cpu["postgres"] = postgres_cpu_seconds(pg) - before[1]
            rows.append(_row(label, 0, op, concurrency, ops, elapsed, cpu))
    finally:
        meta.close()
    return rows


def transfer_rows_on_a_cluster(stack: contextlib.ExitStack, tmp: Path, pg: TempPostgres, network: Network | None,
                               args: argparse.Namespace, client_cpus: set[int] | None) -> list[dict]:  # fmt: skip
    """The transfer rows on a cluster of six storage nodes (on hosts of their own with ``network``), stopped
    after them: idle roles left running would take CPU from the metadata rows."""
    database = pg.create_database("bench")
    if network:
        database = pg.socket_url(database)  # a Unix socket reaches the database from every host
    cluster = LocalCluster(tmp / "cluster", database, nodes=6, tls=args.tls, network=network)
    stack.callback(cluster.stop)  # before the network goes (the stack unwinds in reverse)
    for host in network.hosts.values() if args.host_rtt_ms else ():
        network.delay(host, args.host_rtt_ms)  # before the roles start: only new connections are delayed
    cluster.start()
    for host in network.hosts.values() if args.host_mbit else ():
        network.cap(host, args.host_mbit)
    rows = transfer_rows(cluster, args.object_mib * MiB, args.writers, args.checkpoint_mib * MiB, args.rounds,
                         client_cpus)  # fmt: skip
    cluster.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 MiB objects, 2 x 16 MiB checkpoint, 1 s per op")
    parser.add_argument("--object-mib", type=int, default=256)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--checkpoint-mib", type=int, default=512)
    parser.add_argument("--meta-seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="transfer rounds; the tables show each one's median")
    parser.add_argument("--output", help="write all rows as JSON here")
    parser.add_argument("--tls", action="store_true",
                        help="every role with --certs from a throwaway cluster CA: mutual TLS between the roles and "
                             "the native client, HTTPS to the gateway")  # fmt: skip
    parser.add_argument("--split-cpus", action="store_true",
                        help="the cluster (PostgreSQL, meta, nodes, gateway) on CPU 0 and the writers and readers on "
                             "CPU 1, as a client host and the storage hosts are separate machines")  # fmt: skip
    parser.add_argument("--host-mbit", type=float,
                        help="every role on a host (network namespace) of its own, its link capped at this many "
                             "Mbit/s each way; needs root")  # fmt: skip
    parser.add_argument("--host-rtt-ms", type=float,
                        help="every role on a host of its own, each adding this many ms to the round trip of "
                             "every connection into it (a link proxy per host); combines with --host-mbit; needs "
                             "root and iptables")  # fmt: skip
    parser.add_argument(
        "--meta-only",
        action="store_true",
        help="only the metadata rows: commits and lookups, through apollo meta and in process",
    )
    parser.add_argument("--metas", type=lambda text: [int(n) for n in text.split(",")], default=[1],
                        help="the RPC metadata rows with each of these numbers of metadata services on one database, "
                             "e.g. 1,2,4 (default 1); callers: --concurrency per service")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.object_mib, args.writers, args.checkpoint_mib, args.meta_seconds, args.rounds = 16, 2, 16, 1.0, 1
    if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):  # glibc reads them at start: the native client needs them too
        os.environ.update(MALLOC_TUNING)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    uvloop.install()  # as every Apollo process runs; a native client's user picks the loop
    all_cpus = os.sched_getaffinity(0)
    client_cpus = None
    if args.split_cpus:
        if len(all_cpus) < 2:
            raise SystemExit("--split-cpus needs two CPUs")
        cluster_cpu, client_cpu = sorted(all_cpus)[:2]
        client_cpus = {client_cpu}
        os.sched_setaffinity(0, {cluster_cpu})  # PostgreSQL and every role process started below inherit it
    placement = f"cluster on CPU {cluster_cpu}, clients on CPU {client_cpu}" if client_cpus else "all CPUs shared"
    links = _links(args.host_mbit, args.host_rtt_ms)
    print(f"config: 6 storage processes x 1 directory drive, 4+2, object {args.object_mib} MiB, checkpoint "
          f"{args.writers} x {args.checkpoint_mib} MiB, {args.rounds} rounds, {os.cpu_count()} cores ({placement}), "
          f"{'mutual TLS' if args.tls else 'plain HTTP'}, {links}", flush=True)  # fmt: skip
    rows: list[dict] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="apollo-cluster-bench-"))
        pg = stack.enter_context(TempPostgres(durable=True))
        network = stack.enter_context(Network()) if args.host_mbit or args.host_rtt_ms else None
        if not args.meta_only:
            rows += transfer_rows_on_a_cluster(stack, Path(tmp), pg, network, args, client_cpus)
        os.sched_setaffinity(0, all_cpus)  # the metadata rows run where they like
        for services in args.metas:
            rows += rpc_metadata_rows(pg, services, args.meta_seconds, args.concurrency, args.tls)
        rows += asyncio.run(local_metadata_rows(str(Path(tmp) / "ops.db"), "in-process, SQLite", args.meta_seconds,
                                                args.concurrency))  # fmt: skip
        rows += asyncio.run(local_metadata_rows(pg.create_database("ops"), "in-process, PostgreSQL",
                                                args.meta_seconds, args.concurrency, pg))  # fmt: skip
    summarize(rows)
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1))


def _links(mbit: float | None, rtt_ms: float | None) -> str:
    """The config line's words for the network: loopback, or hosts with their links' cap and added round trip."""
    if not mbit and not rtt_ms:
        return "loopback"
    cap = f"links capped at {mbit:g} Mbit/s" if mbit else "links uncapped"
    return f"each role on its own host, {cap}" + (f", +{rtt_ms:g} ms round trip into each" if rtt_ms else "")


def summarize(rows: list[dict]) -> None:
    """Per pattern and op, each way's median over the rounds (MiB/s), and the ratios of those medians."""
    print("\n| pattern | op | baseline MiB/s | native MiB/s | gateway MiB/s | native/gateway | native/baseline "
          "| rounds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for pattern in ("object", "checkpoint"):
        for op in ("PUT", "GET"):
            runs = {way: [r["mib_per_s"] for r in rows if r.get("pattern") == pattern and r.get("way") == way
                          and r.get("op") == op] for way in ("baseline", "native", "gateway")}  # fmt: skip
            if all(runs.values()):
                speed = {way: statistics.median(rates) for way, rates in runs.items()}
                # Rounded down: a ratio is never shown better than measured.
                versus_gateway = math.floor(speed["native"] / speed["gateway"] * 100) / 100
                versus_baseline = math.floor(speed["native"] / speed["baseline"] * 100)
                print(f"| {pattern} | {op} | {speed['baseline']} | {speed['native']} | {speed['gateway']} | "
                      f"{versus_gateway:.2f}x | {versus_baseline}% | {len(runs['native'])} |")  # fmt: skip
    print(f"\n| metadata | services | op | callers | ops/s | cores: clients | meta | PostgreSQL | PostgreSQL µs/op | "
          f"PostgreSQL alone on {os.cpu_count()} cores, ops/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "metadata" in row:
            clients = row.get("client_cores", row.get("process_cores", ""))
            meta = row.get("meta_cores", "in the process")
            print(f"| {row['metadata']} | {row['services'] or '-'} | {row['op']} | {row['concurrency']} | "
                  f"{row['ops_per_s']} | {clients} | {meta} | {row.get('postgres_cores', '-')} | "
                  f"{row.get('postgres_us_per_op', '-')} | {row.get('postgres_ceiling_per_s', '-')} |")  # fmt: skip


if __name__ == "__main__":
    main()
