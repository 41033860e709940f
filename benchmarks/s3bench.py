"""Reproducible S3 benchmark of Apollo against the raw disk and loopback HTTP, in one run.

    .venv/bin/python benchmarks/s3bench.py            # the full run (tens of minutes, ~25 GB of disk)
    .venv/bin/python benchmarks/s3bench.py --quick    # smoke run: small objects, short durations
    .venv/bin/python benchmarks/s3bench.py --only small,list --duration 5 --json out.json
    .venv/bin/python benchmarks/s3bench.py --tls ...   # the same, with Apollo serving HTTPS (--certs)

Starts a real ``apollo server`` (6 directory drives by default, in a temp dir beside the
working directory, so on the same filesystem), a loopback aiohttp server in its
own process, and a pool of load-generator processes (``loadgen.py``). For each
scenario and concurrency it runs Apollo and its baselines back to back and
reports Apollo as a fraction of the baseline the target is set against.

Scenarios (``--only``): ``small`` (4 KiB PUT/GET ops/s), ``medium`` (1 MiB),
``large`` (256 MiB), ``range`` (random 64 KiB range GETs inside a 1 GiB object),
``list`` (ListObjectsV2 of 100k keys, 1000 per page), ``rss`` (server memory
peak while a 5 GiB object is PUT and then GET, streamed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import baselines
import loadgen
import procstat
import report

from apollo import limits
from apollo.testing.certs import ThrowawayCA
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess, free_port

KiB, MiB, GiB = 1024, 1024**2, 1024**3
SCENARIOS = ("small", "medium", "large", "range", "list", "rss")
BUCKET = "bench"
TARGETS = {  # (op, scenario) -> (fraction of the baseline, baseline target name)
    ("get", "small"): (0.40, "loopback-mem"), ("put", "small"): (0.25, "loopback-mem"),
    ("get", "medium"): (0.50, "loopback"), ("put", "medium"): (0.35, "loopback-disk"),
    ("get", "large"): (0.50, "loopback"), ("put", "large"): (0.35, "loopback-disk"),
    ("range", "range"): (None, "loopback"),
}  # fmt: skip
BASELINE_LABEL = {  # (target, op) -> what the baseline does
    ("loopback-mem", "get"): "loopback, from memory", ("loopback-mem", "put"): "loopback, body discarded",
    ("loopback", "get"): "loopback, file from page cache", ("loopback", "range"): "loopback, file from page cache",
    ("loopback", "put"): "loopback, body discarded", ("loopback-disk", "put"): "loopback+disk (write+fsync)",
    ("disk", "get"): "raw disk read", ("disk", "range"): "raw disk pread", ("disk", "put"): "raw disk write+fsync",
}  # fmt: skip
LIST_LIMIT_S = 2.0
RSS_LIMIT_MIB = 300


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drives", type=int, default=6, help="directory drives of the server (default 6)")
    parser.add_argument("--small-size", type=int, default=4 * KiB, help="bytes of the 'small' objects (default 4 KiB)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 MiB large objects, 10k keys, 3 s runs")
    parser.add_argument("--only", help=f"comma-separated scenarios out of {','.join(SCENARIOS)}")
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 10, --quick 3)")
    parser.add_argument("--warmup", type=float, help="seconds of unmeasured small requests first (default 1)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrency levels")
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="load generator processes")
    parser.add_argument("--large-size", type=int, help="bytes of the 'large' objects (default 256 MiB, quick 64 MiB)")
    parser.add_argument("--range-object-size", type=int, help="bytes of the range-GET object (1 GiB, quick 64 MiB)")
    parser.add_argument("--list-keys", type=int, help="keys for the LIST scenario (default 100000, quick 10000)")
    parser.add_argument("--rss-size", type=int, help="bytes of the RSS-scenario object (default 5 GiB, quick 256 MiB)")
    parser.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="load generator HTTP client: raw (lean keep-alive protocol, default) or aiohttp",
    )
    parser.add_argument(
        "--loopback-procs",
        type=int,
        default=1,
        help="loopback server processes (match the server's worker processes, if any)",
    )
    parser.add_argument("--dir", default=".", help="where to make the temp dir (default: the working directory)")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra `apollo server` argument, repeatable: --server-arg=--cell-size=131072",
    )
    parser.add_argument("--tls", action="store_true",
                        help="Apollo serves HTTPS (--certs, a throwaway CA's ECDSA P-256 certificate) and the load "
                             "generator verifies it; baselines stay plain HTTP")  # fmt: skip
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (3.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    args.large_size = args.large_size or (64 * MiB if quick else 256 * MiB)
    args.range_object_size = args.range_object_size or (64 * MiB if quick else GiB)
    args.list_keys = args.list_keys or (10_000 if quick else 100_000)
    args.rss_size = args.rss_size or (256 * MiB if quick else 5 * GiB)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.only = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.files = workdir / "loopback" / "files"  # served by the loopback server, read by the disk runs
        self.raw_put = workdir / "raw-put"
        self.files.mkdir(parents=True)
        self.raw_put.mkdir()
        tls = {}
        if getattr(args, "tls", False):  # repair_bench.py builds a Bench from arguments of its own
            ca = ThrowawayCA.create(workdir / "tls")
            tls = {"certs": ca.issue(workdir / "tls" / "certs", name="s3bench"), "ca_file": ca.cert}
        self.server = ServerProcess(workdir / "apollo", drives=args.drives, extra_args=args.server_arg, **tls)
        self.loopback = baselines.LoopbackServer(workdir / "loopback", free_port(), args.loopback_procs)
        self.pool: loadgen.WorkerPool | None = None
        self.runs: list[dict] = []
        self.rows: list[dict] = []
        self.cores = os.cpu_count() or 1

    def disk_needed(self) -> int:
        """A rough peak of bytes on disk: EC (4+2 = 1.5x) copies, baseline files, concurrent PUT targets."""
        a, maxc = self.args, max(self.args.concurrency)
        big = a.large_size if "large" in a.only else MiB if "medium" in a.only else 0
        return int(big * maxc * 3.5 + ("rss" in a.only) * a.rss_size * 1.5
                   + ("range" in a.only) * a.range_object_size * 2.5 + 3 * 512 * MiB * 2.5)  # fmt: skip

    def start(self) -> None:
        need, free = self.disk_needed(), shutil.disk_usage(self.workdir).free
        if free < need:
            print(f"WARNING: {free / GiB:.1f} GiB free under {self.workdir.parent}, this run may need up to "
                  f"{need / GiB:.1f} GiB (see --large-size, --rss-size, --concurrency, --dir)", flush=True)  # fmt: skip
        self.server.start()
        self.loopback.start()
        self.pool = loadgen.WorkerPool(self.args.procs)
        self._s3("PUT", f"/{BUCKET}")

    def stop(self) -> None:
        if self.pool:
            self.pool.close()
        self.loopback.stop()
        self.server.stop()

    def _s3(self, method: str, path: str) -> None:
        """One signed admin request (bucket create, object delete) with the load generator's own signer."""
        signer = loadgen.Signer(DEV_ACCESS_KEY, DEV_SECRET_KEY, f"127.0.0.1:{self.server.port}")
        _, headers = signer.sign(method, path)
        request = urllib.request.Request(f"{self.server.endpoint}{path}", method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=60, context=self.server.ssl_context()) as response:
            response.read()

    def check_alive(self) -> None:
        """A server that died mid-run makes every later figure meaningless: stop with its log."""
        if self.server.process.poll() is not None:
            raise RuntimeError(f"apollo server exited with {self.server.process.returncode}:\n{self.server.log_tail()}")
        if not self.loopback.alive():
            raise RuntimeError("a loopback server process exited")

    # -- measuring ---------------------------------------------------------------------------------------------

    def measure(self, target: str, op: str, size: int, concurrency: int, label: str, *, warm: bool,
                ops_per_worker: int | None = None, **task) -> dict:  # fmt: skip
        """Run one measurement across the generator processes; record and return its figures."""
        procs = min(self.args.procs, concurrency)
        shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
        start_at = time.monotonic() + (self.args.warmup if warm else 0.3)
        deadline = start_at + (0 if ops_per_worker is not None else self.args.duration)
        base = self._task(target, op, size, start_at, deadline, warmup=warm, ops_per_worker=ops_per_worker, **task)
        watched = {"apollo": [self.server.process.pid], "disk": []}.get(target, self.loopback.pids)
        self.pool.submit([{**base, "slots": s, "worker": i} for i, s in enumerate(shares)])
        time.sleep(max(0.0, start_at - time.monotonic()))
        server_cpu0 = procstat.cpu_seconds([p for pid in watched for p in procstat.tree(pid)])
        results = self.pool.collect()
        window = time.monotonic() - start_at
        server_cpu1 = procstat.cpu_seconds([p for pid in watched for p in procstat.tree(pid)])
        server_cpu = server_cpu1 - server_cpu0 if watched else None
        latencies = sorted(x for r in results for x in r["latencies"])
        ops, nbytes = sum(r["ops"] for r in results), sum(r["bytes"] for r in results)
        wall = max((r["t_end"] for r in results if r["ops"]), default=start_at) - start_at
        self.check_alive()
        run = {
            "name": label, "target": target, "op": op, "size": size, "concurrency": concurrency, "ops": ops,
            "bytes": nbytes, "wall_s": wall, "ops_s": ops / wall if wall > 0 else 0.0,
            "mb_s": nbytes / wall / 1e6 if wall > 0 else 0.0,
            "p50_ms": _percentile(latencies, 0.50) * 1000, "p99_ms": _percentile(latencies, 0.99) * 1000,
            "errors": sum(r["errors"] for r in results),
            "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
            "gen_cpu_pct": 100 * sum(r["cpu_s"] for r in results) / window / self.cores,
            "gen_cpu_us_per_op": 1e6 * sum(r["cpu_s"] for r in results) / ops if ops else 0.0,
            "srv_cpu_pct": None if server_cpu is None else 100 * server_cpu / window / self.cores,
        }  # fmt: skip
        self.runs.append(run)
        print(f"  {label:<44} conc {concurrency:>3}: {run['ops_s']:>10.1f} ops/s {run['mb_s']:>9.1f} MB/s  "
              f"p50 {run['p50_ms']:.2f} ms  p99 {run['p99_ms']:.2f} ms  errors {run['errors']}",
              flush=True)  # fmt: skip
        return run

    def _task(self, target: str, op: str, size: int, start_at: float, deadline: float, **extra) -> dict:
        """What every generator process of one measurement is told (``loadgen.run_task`` reads it)."""
        task = {"target": target, "op": op, "size": size, "start_at": start_at, "deadline": deadline,
                "endpoint": self.server.endpoint if target == "apollo" else self.loopback.endpoint, "bucket": BUCKET,
                "access_key": DEV_ACCESS_KEY, "secret_key": DEV_SECRET_KEY, "client": self.args.client,
                "warmup": False, **extra}  # fmt: skip
        if target == "apollo" and self.server.ca_file:
            task["ca_file"] = str(self.server.ca_file)
        if target == "disk":
            task["dir"] = str(self.raw_put if op == "put" else self.files)
        return task

    def populate(self, prefix: str, count: int, size: int, files: bool = True) -> None:
        """PUT ``count`` Apollo objects ``<prefix>NNNNNNN`` and write the same bytes as baseline files."""
        procs = min(self.args.procs, count)
        bounds = [count * i // procs for i in range(procs + 1)]
        start = time.monotonic()
        slots = max(1, min(32, count) // procs)
        self.pool.submit([self._task("apollo", "populate", size, start, start, key_prefix=prefix, slots=slots,
                                     worker=i, populate=(bounds[i], bounds[i + 1])) for i in range(procs)])  # fmt: skip
        results = self.pool.collect()
        self.check_alive()
        failed = sum(r["errors"] for r in results)
        if failed:
            first = next(r["first_error"] for r in results if r["first_error"])
            raise RuntimeError(f"populating {prefix}: {failed} PUTs failed; first: {first}")
        print(f"  populated {count} x {report.size_label(size) if size else '0 B'} objects under {prefix!r} "
              f"in {time.monotonic() - start:.1f} s", flush=True)  # fmt: skip
        if files:
            for i in range(count):
                baselines.write_file(self.files / f"{prefix}{i:07d}".replace("/", "_"), size, loadgen.RANDOM)

    def compare(self, measurement: str, scenario: str, op: str, apollo: dict, baseline: dict | None,
                metric: str, unit: str) -> None:  # fmt: skip
        target, base_target = TARGETS.get((op, scenario), (None, None))
        value = apollo[metric] if apollo["ops"] else None
        base_value = baseline[metric] if baseline else None
        ratio = value / base_value if base_value and value is not None else None
        self.rows.append({
            "measurement": measurement, "concurrency": apollo["concurrency"], "value": value, "unit": unit,
            "baseline_name": BASELINE_LABEL[baseline["target"], op] if baseline else None, "baseline": base_value,
            "ratio": ratio, "target": target if baseline and baseline["target"] == base_target else None,
            "target_kind": "ratio", "errors": apollo["errors"] + (baseline["errors"] if baseline else 0),
            "p50_ms": apollo["p50_ms"] if apollo["ops"] else None, "p99_ms": apollo["p99_ms"],
        })  # fmt: skip

    # -- scenarios -----------------------------------------------------------------------------------------------

    def object_scenario(self, scenario: str, size: int) -> None:
        """PUT and GET of whole objects of one size; baselines as the targets define them."""
        label = report.size_label(size)
        unit, metric = ("ops/s", "ops_s") if size < MiB else ("MB/s", "mb_s")
        gets = max(2, min(64, 512 * MiB // size))
        prefix = f"get/{scenario}/k"
        self.populate(prefix, gets, size)
        keys = [f"{prefix}{i:07d}" for i in range(gets)]
        warm = size < MiB
        if size < MiB:
            put_targets = get_targets = ["apollo", "loopback-mem", "disk"]
        else:
            put_targets, get_targets = ["apollo", "loopback-disk", "loopback", "disk"], ["apollo", "loopback", "disk"]
        for concurrency in self.args.concurrency:
            for op, targets in (("put", put_targets), ("get", get_targets)):
                runs = {}
                for target in targets:
                    name = f"{target} {op.upper()} {label}"
                    runs[target] = self.measure(target, op, size, concurrency, name, warm=warm,
                                                key_prefix=f"put/{scenario}/", keys=keys)  # fmt: skip
                for target in targets[1:]:
                    self.compare(f"{op.upper()} {label} {unit}", scenario, op, runs["apollo"], runs[target], metric,
                                 unit)  # fmt: skip
        self.free_put_space(f"put/{scenario}/")

    def free_put_space(self, prefix: str) -> None:
        """Delete what the PUT runs wrote (Apollo frees the shards after its GC delay), so sizes add up less."""
        for directory in (self.raw_put, self.workdir / "loopback" / "upload"):
            for path in directory.iterdir():
                path.unlink()
        procs = min(self.args.procs, max(self.args.concurrency))
        for worker in range(procs):
            for slot in range(max(self.args.concurrency) // procs + 1):
                self._s3("DELETE", f"/{BUCKET}/{prefix}w{worker}s{slot}")  # S3 DELETE of a missing key is a 204

    def range_scenario(self) -> None:
        size, rsize = self.args.range_object_size, 64 * KiB
        self.populate("range/obj", 1, size)
        key = "range/obj0000000"
        label = f"range GET {report.size_label(rsize)} in {report.size_label(size)}"
        for concurrency in self.args.concurrency:
            runs = {t: self.measure(t, "range", rsize, concurrency, f"{t} {label}", warm=True, keys=[key],
                                    object_size=size) for t in ("apollo", "loopback", "disk")}  # fmt: skip
            for target in ("loopback", "disk"):
                self.compare(f"{label} ops/s", "range", "range", runs["apollo"], runs[target], "ops_s", "ops/s")

    def list_scenario(self) -> None:
        count = self.args.list_keys
        self.populate("list/k", count, 0, files=False)
        label = f"LIST {count} keys, 1000 per page"
        for concurrency in self.args.concurrency:
            run = self.measure("apollo", "list", 0, concurrency, f"apollo {label}", warm=False, list_prefix="list/",
                               page=limits.list_keys_max, expected=count)  # fmt: skip
            self.rows.append({
                "measurement": f"{label}: p50 s per full listing" + ("" if concurrency == 1 else " (concurrent)"),
                "concurrency": concurrency, "value": run["p50_ms"] / 1000 if run["ops"] else None, "unit": "s",
                "baseline_name": None, "baseline": None, "ratio": None,
                "target": LIST_LIMIT_S if concurrency == 1 else None, "target_kind": "max", "errors": run["errors"],
            })  # fmt: skip

    def rss_scenario(self) -> None:
        """Restart the server (so VmHWM covers this scenario only), then stream one big PUT and its GET."""
        size = self.args.rss_size
        self.server.restart()
        pid = self.server.process.pid
        label = report.size_label(size)
        peaks = {}
        for op in ("put", "get"):
            with procstat.RssSampler(pid) as sampler:
                run = self.measure("apollo", op, size, 1, f"apollo {op.upper()} {label} (RSS scenario)", warm=False,
                                   key_prefix="rss/", keys=["rss/w0s0"], ops_per_worker=1)  # fmt: skip
            if run["errors"]:
                raise RuntimeError(f"RSS scenario {op} failed: {run['first_error']}")
            peaks[op] = sampler.peak_bytes
            print(f"  {op}: server tree RSS peak {sampler.peak_bytes / MiB:.1f} MiB ({sampler.samples} samples)")
        hwm = procstat.status_kib(pid, "VmHWM") * 1024
        self._s3("DELETE", f"/{BUCKET}/rss/w0s0")
        for what, value in (("PUT", peaks["put"]), ("GET", peaks["get"]), ("VmHWM since restart", hwm)):
            self.rows.append({
                "measurement": f"server RSS peak, {label} object: {what} (MiB)", "concurrency": 1,
                "value": value / MiB, "unit": "MiB", "baseline_name": None, "baseline": None, "ratio": None,
                "target": RSS_LIMIT_MIB, "target_kind": "max", "errors": 0,
            })  # fmt: skip

    def run(self) -> None:
        steps = {"small": lambda: self.object_scenario("small", self.args.small_size),
                 "medium": lambda: self.object_scenario("medium", MiB),
                 "large": lambda: self.object_scenario("large", self.args.large_size),
                 "range": self.range_scenario, "list": self.list_scenario, "rss": self.rss_scenario}  # fmt: skip
        for name in SCENARIOS:
            if name in self.args.only:
                print(f"[{name}]", flush=True)
                steps[name]()

    def configuration(self) -> dict:
        match = re.search(r"scheme=(\S+)", self.server.log_path.read_text(errors="replace"))
        cell = _option(self.args.server_arg, "--cell-size")
        return {
            "date (UTC)": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
            "drives": f"{len(self.server.drives)} directory drives",
            "EC scheme": match.group(1) if match else "?",
            "cell size": report.size_label(int(cell)) if cell else report.size_label(limits.cell_size_bytes_default),
            "extra server args": " ".join(self.args.server_arg) or "none",
            "TLS (Apollo only)": self._tls_description(),
            "loopback baseline server": f"{self.args.loopback_procs} aiohttp+uvloop process(es)",
            "CPU": f"{self.cores} × {_cpu_model()}",
            "memory": f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GiB:.1f} GiB",
            "Python": f"{platform.python_implementation()} {platform.python_version()}",
            "kernel": platform.release(),
            "filesystem": baselines.filesystem_of(self.workdir),
            "load generator": f"{self.args.procs} processes, {self.args.client} HTTP client, own SigV4 signer "
                              "(UNSIGNED-PAYLOAD)",
            "duration / warm-up per run": f"{self.args.duration:g} s / {self.args.warmup:g} s (requests < 1 MiB only)",
            "sizes": f"large {report.size_label(self.args.large_size)}, range object "
                     f"{report.size_label(self.args.range_object_size)}, LIST {self.args.list_keys} keys, "
                     f"RSS object {report.size_label(self.args.rss_size)}",
        }  # fmt: skip

    def _tls_description(self) -> str:
        """What one handshake with the server negotiates, or "off": the figures depend on the cipher."""
        if not self.server.certs:
            return "off (plain HTTP)"
        with _tls_probe(self.server) as tls:
            return f"{tls.version()} {tls.cipher()[0]}, ECDSA P-256 certificate, keep-alive connections"


def _tls_probe(server: ServerProcess) -> ssl.SSLSocket:
    """One verified TLS connection to the server, handshake done."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")


def _option(args: list[str], name: str) -> str | None:
    """The value of ``name`` in a list of command-line arguments (``--name=v`` or ``--name v``), else None."""
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (the value at or above q of the samples); 0 without samples."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


NOTES = [
    "MB/s is 10^6 bytes per second. Rates and ratios are rounded down, latencies and times up; "
    "PASS/MISS is decided on unrounded figures.",
    "A run's wall time ends at its last completed request: big requests running past the duration count in full.",
    "CPU columns are user+sys seconds / wall / all cores: generator = load-generator processes, server = the "
    "server under test and its children (Apollo, or the loopback server; none for raw disk).",
    "Generator and server share the same cores, as do Apollo and its baselines: compare ratios, not absolutes.",
    "GET runs read from page cache on both sides (objects and baseline files were just written).",
    "Run names: apollo = the server under test; loopback-mem = loopback server answering GETs from memory and "
    "discarding PUT bodies; loopback = GETs of files by sendfile, PUT bodies discarded; loopback-disk = PUT bodies "
    "written and fsynced; disk = plain files in threads, no network (write+fsync, read, pread).",
    f"Apollo keeps objects up to {limits.inline_object_bytes_max // 1024} KiB inline in its metadata database, so "
    "the 4 KiB runs measure the request path and metadata commits, not the drives.",
    "LIST at concurrency > 1 runs that many complete listings at once; the figure is the p50 time of one of them.",
]


def _interrupt(signum, frame) -> None:
    """SIGTERM cleans up like Ctrl-C: servers, generator processes and the temp dir."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix=".s3bench-", dir=os.path.abspath(args.dir)))
    signal.signal(signal.SIGTERM, _interrupt)
    bench = Bench(args, workdir)
    try:
        print(f"s3bench: temp dir {workdir}", flush=True)
        bench.start()
        bench.run()
        config = bench.configuration()
        text = report.render(config, bench.rows, bench.runs, NOTES)
        print("\n" + text)
        if args.json:
            for row in bench.rows:
                row["target_text"], row["result"] = report.verdict_cells(row)
            Path(args.json).write_text(json.dumps({"config": config, "results": bench.rows, "runs": bench.runs},
                                                  indent=2, default=str))  # fmt: skip
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
