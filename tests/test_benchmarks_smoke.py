"""The benchmark's own load generator against the real server: its SigV4 signing is accepted, its
counts are right, a wrong secret is refused; the report never rounds a result in Apollo's favour."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
loadgen = importlib.import_module("loadgen")
report = importlib.import_module("report")


def _task(server, bucket: str, op: str, secret: str = DEV_SECRET_KEY, **extra) -> dict:
    now = time.monotonic()
    return {"target": "apollo", "op": op, "size": 4096, "endpoint": server.endpoint, "bucket": bucket,
            "access_key": DEV_ACCESS_KEY, "secret_key": secret, "start_at": now, "deadline": now, "warmup": False,
            "slots": 2, "worker": 0, **extra}  # fmt: skip


@pytest.mark.parametrize("client", ["raw", "aiohttp"])
def test_signed_put_get_list_are_accepted_and_counted(server, s3, bucket, client):
    put = asyncio.run(loadgen.run_task(_task(server, bucket, "populate", key_prefix="k/", populate=(0, 3),
                                             client=client)))  # fmt: skip
    assert (put["ops"], put["bytes"], put["errors"]) == (3, 3 * 4096, 0), put["first_error"]
    assert s3.get_object(Bucket=bucket, Key="k/0000002")["Body"].read() == loadgen.RANDOM[:4096]

    get = asyncio.run(loadgen.run_task(_task(server, bucket, "get", keys=["k/0000001"], ops_per_worker=4,
                                             client=client)))  # fmt: skip
    assert (get["ops"], get["bytes"], get["errors"]) == (4, 4 * 4096, 0), get["first_error"]

    listing = asyncio.run(loadgen.run_task(_task(server, bucket, "list", list_prefix="k/", page=2, expected=3,
                                                 ops_per_worker=1, slots=1, client=client)))  # fmt: skip
    assert (listing["ops"], listing["errors"]) == (1, 0), listing["first_error"]


def test_range_get_returns_exactly_the_range(server, bucket):
    asyncio.run(loadgen.run_task(_task(server, bucket, "populate", size=3 * 1024 * 1024, key_prefix="big/",
                                       populate=(0, 1), slots=1)))  # fmt: skip
    ranged = asyncio.run(loadgen.run_task(_task(server, bucket, "range", size=65536, keys=["big/0000000"],
                                                object_size=3 * 1024 * 1024, ops_per_worker=5)))  # fmt: skip
    assert (ranged["ops"], ranged["bytes"], ranged["errors"]) == (5, 5 * 65536, 0), ranged["first_error"]


def test_wrong_secret_is_refused_with_signature_mismatch(server, bucket):
    result = asyncio.run(loadgen.run_task(_task(server, bucket, "get", secret="not-the-secret", keys=["x"],
                                                ops_per_worker=1, slots=1)))  # fmt: skip
    assert (result["ops"], result["errors"]) == (0, 1)
    assert "HTTP 403" in result["first_error"] and "SignatureDoesNotMatch" in result["first_error"]


def test_report_rounds_against_apollo():
    row = {"measurement": "GET", "concurrency": 1, "value": 349.99, "unit": "MB/s", "baseline_name": "loopback",
           "baseline": 1000.0, "ratio": 0.34999, "target": 0.35, "target_kind": "ratio", "errors": 0}  # fmt: skip
    table = report.comparison_table([row])
    assert "349.9 MB/s" in table and "34.9%" in table and "MISS (−0.1 pts)" in table
    listing = {**row, "value": 1.9999, "unit": "s", "ratio": None, "target": 2.0, "target_kind": "max"}
    assert "PASS (+0.000 s)" in report.comparison_table([listing]) and "2.000 s" in report.comparison_table([listing])


def test_raw_client_reads_chunked_and_content_length_responses_on_one_connection():
    rawhttp = importlib.import_module("rawhttp")
    parts = [b"a" * 10, b"b" * 70000, b"c"]

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in parts:
            await response.write(part)
        await response.write_eof()
        return response

    async def plain(request: web.Request) -> web.Response:
        return web.Response(body=b"xyz")

    async def scenario():
        app = web.Application()
        app.router.add_get("/chunked", chunked)
        app.router.add_get("/plain", plain)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        connection = rawhttp.Connection("127.0.0.1", port)
        try:
            first = await connection.request("GET", "/chunked", {"Host": f"127.0.0.1:{port}"}, keep_body=True)
            protocol = connection.protocol
            second = await connection.request("GET", "/plain", {"Host": f"127.0.0.1:{port}"}, keep_body=True)
            missing = await connection.request("GET", "/nope", {"Host": f"127.0.0.1:{port}"})
            return first, second, missing, protocol is connection.protocol
        finally:
            connection.close()
            await runner.cleanup()

    first, second, missing, same_connection = asyncio.run(scenario())
    assert first == (200, 70011, b"".join(parts))
    assert second == (200, 3, b"xyz")
    assert missing[0] == 404 and b"Not Found" in missing[2]  # error bodies are always kept
    assert same_connection


def test_repair_bench_measures_every_target_and_rebuilds_all_that_was_lost(tmp_path):
    """The repair and scrub benchmark end to end at tiny sizes (its figures mean nothing here, its checks do)."""
    out = tmp_path / "repair.json"
    tiny = ["--quick", "--data-size", "16MiB", "--object-size", "4MiB", "--get-objects", "8", "--duration", "1",
            "--warmup", "0.2", "--scrub-rates", "8", "--scrub-window", "1.5", "--repair-rate", "2MiB/s",
            "--timeout", "60"]  # fmt: skip
    command = [sys.executable, str(BENCHMARKS / "repair_bench.py"), *tiny, "--dir", str(tmp_path), "--json", str(out)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as bench:
        try:
            stdout, stderr = bench.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            bench.terminate()  # SIGTERM, not SIGKILL: the benchmark stops its server and removes its files
            stdout, stderr = bench.communicate(timeout=30)
    assert bench.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "## Results against targets" in stdout
    figures = json.loads(out.read_text())
    facts = figures["facts"]
    # Every shard of the wiped drive was rebuilt (the benchmark also waited for the drive to be retired: nothing
    # refers to it any more); the worker may have moved a few more for the rebalance the failure triggers.
    assert facts["repaired_shards"] >= facts["lost_shard_files"] > 0
    assert facts["repair_worker_bytes"] > 0.9 * facts["lost_shard_bytes"]  # cell records: all but headers, footers
    assert facts["repair_ran_through_window"]  # the under-repair GET run really ran under repair
    kinds = {}
    for row in figures["results"]:
        kinds.setdefault(row["kind"], []).append(row)
    held = {kind: [r for r in rows if r["passed"] is not None] for kind, rows in kinds.items()}
    assert [r["value"] > 0 for r in held["scrub"]] == [True, True]  # the scrubber's counter, the server's read()s
    assert len(held["repair"]) == 1 and held["repair"][0]["ratio"] > 0
    assert [r["errors"] for r in kinds["get"]] == [0, 0, 0] and len(held["get"]) == 1
    assert not list(tmp_path.glob(".repairbench-*"))  # drives, database and baseline files are cleaned up


def test_cluster_bench_measures_every_path_and_metadata_engine(tmp_path):
    """The cluster benchmark end to end at tiny sizes: every row is measured, none is missing or zero."""
    out = tmp_path / "cluster.json"
    tiny = ["--object-mib", "4", "--writers", "2", "--checkpoint-mib", "4", "--meta-seconds", "0.3", "--rounds", "2",
            "--metas", "1,2"]  # fmt: skip
    command = [sys.executable, str(BENCHMARKS / "cluster_bench.py"), *tiny, "--output", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(out.read_text())
    transfers = [(r["pattern"], r["way"], r["op"]) for r in rows if "pattern" in r and r["mib_per_s"] > 0]
    assert len(transfers) == 2 * 12  # every pattern, way and op in each round
    assert set(transfers) == {(p, w, o) for p in ("object", "checkpoint") for w in ("baseline", "native", "gateway")
                         for o in ("PUT", "GET")}  # fmt: skip
    metadata = {(r["metadata"], r["services"], r["op"]) for r in rows if "metadata" in r and r["ops_per_s"] > 0}
    assert len(metadata) == 8  # through 1 and 2 services, in process on SQLite and PostgreSQL; commits and lookups
    for row in rows:  # every tier's CPU was measured, PostgreSQL's where it ran
        if row.get("services"):
            assert row["meta_cores"] > 0 and row["client_cores"] > 0 and row["postgres_us_per_op"] > 0, row
    assert "| checkpoint | PUT |" in result.stdout and " | 2 |" in result.stdout  # medians of both rounds


def test_the_snapshot_benchmark_runs_and_prints_what_it_measured():
    run = subprocess.run([sys.executable, str(BENCHMARKS / "snapshot_bench.py"), "--objects", "3000", "--engines",
                          "sqlite"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "3000 objects" in run.stdout and "sqlite: take a snapshot" in run.stdout and " ms " in run.stdout


def test_the_store_batch_benchmark_makes_every_call_and_says_what_each_item_cost():
    run = subprocess.run([sys.executable, str(BENCHMARKS / "store_batch_bench.py"), "--batches", "1,16", "--rounds",
                          "1", "--seconds", "0.3"], capture_output=True, text=True, timeout=180)  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [(row["op"], row["batch"]) for row in rows] == [("commit", 1), ("commit", 16), ("lookup", 1), ("lookup", 16)]
    for row in rows:
        assert row["items"] >= row["batch"] and row["items"] % row["batch"] == 0
        assert row["per_s"] > 0 and row["process_us_per_item"] > 0 and row["postgres_us_per_item"] > 0


def test_the_scale_simulator_prints_every_row_with_sane_values_and_replays_its_seed():
    """``scale_sim.py --quick`` (72 drives) end to end, twice with one seed: the same placement figures."""

    def run() -> dict[str, list[str]]:
        result = subprocess.run([sys.executable, str(BENCHMARKS / "scale_sim.py"), "--quick", "--seed", "7"],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "command: " in result.stdout and "seed 7" in result.stdout
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in result.stdout.splitlines()
                 if line.startswith("| ")]  # fmt: skip
        assert cells[0] == ["section", "measure", "4+2", "8+4"]
        return {f"{c[0]}: {c[1]}": c[2:] for c in cells[1:]}

    def number(cell: str) -> float:
        return float(cell.split()[0].rstrip("%").replace(",", ""))

    rows = run()
    assert {name.split(":")[0] for name in rows} == {"placement", "data moved", "rebuild", "cluster map", "metadata",
                                                     "limits"}  # fmt: skip
    for name, values in rows.items():
        if name.endswith("max/mean"):
            assert all(number(v) >= 1 for v in values), (name, values)
        if name.endswith("min/mean"):
            assert all(0 <= number(v) <= 1 for v in values), (name, values)
        if name.startswith("data moved"):
            assert all(0 < number(v) < 100 for v in values), (name, values)
        if name.endswith("target drives (repair worker's choice)"):
            assert all(number(v) >= 1 for v in values), (name, values)
    moves = [name for name in rows if name.startswith("data moved")]
    assert len(moves) == 12 and any("remove 1 rack" in name for name in moves)
    assert rows["metadata: 256 MiB objects: rows per object (1 version + segments)"] == ["5", "5"]
    assert all(number(v) > 0 for v in rows["cluster map: RPC answer, codec.dumps (sent as is)"])
    replayed = run()
    timed = ("Placement", "placing")  # rows whose name or value is a time
    placement = [name for name in rows if name.startswith(("placement", "data moved"))
                 and not any(word in name for word in timed)]  # fmt: skip
    assert [rows[name] for name in placement] == [replayed[name] for name in placement]
