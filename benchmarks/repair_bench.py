"""Repair and scrub benchmark (issue 4): rebuild speed, GET latency under repair, scrub pacing, in one run.

    .venv/bin/python benchmarks/repair_bench.py                 # full run: 2 GiB of objects, ~2 min
    .venv/bin/python benchmarks/repair_bench.py --quick         # smoke run: 512 MiB, 3 s windows, ~1 min
    .venv/bin/python benchmarks/repair_bench.py --json out.json

Starts a real ``apollo server`` on 7 directory drives (4+2 leaves one spare, so
a lost drive is rebuilt without a replacement), in a temp dir beside the working
directory, fills it with objects, and then, in this order:

1. **scrub**: a deep pass at each ``--scrub-rates`` setting; the bytes the
   scrubber counts (``apollo_scrub_bytes_total``) and the bytes the server
   process read, over a window that starts once the server has applied the
   setting, against the setting;
2. **repair**: repair unlimited (``--rate 0 --iops 0``), one drive wiped; the
   lost drive's shard bytes per second, from the moment the server marks it
   failed until its last shard is back, against plain file I/O doing the same
   disk work without decoding (read ``k`` files, write one, fsync);
3. **GET under repair**: GET p99 of 1 MiB objects on a healthy server, then with
   a second drive wiped while repair is paused (degraded reads only), then while
   repair runs at its rate limit (``--repair-rate``, default the server's).

Between 2 and 3 an empty drive is added (``apollo admin drive add``), so a spare
exists again. Every knob is set with ``apollo admin``, as an operator would.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import baselines
import loadgen
import procstat
import report
import s3bench

from apollo.cluster import admin
from apollo.cluster.tuning import SETTING_PREFIX, Tuning, parse_rate
from apollo.proto.cluster_map import DriveRecord
from apollo.proto.layout import Scheme
from apollo.roles.server import open_store

MiB, GiB = 1024**2, 1024**3
GET_SIZE = MiB
REPAIR_RATIO_TARGET = 0.40
GET_P99_RATIO_TARGET = 2.0
SCRUB_TOLERANCE = 0.10
SETTLE_S = 0.5  # after the server applied a knob: longer than the rate limiter's 0.2 s burst credit
POLL_S = 0.05


def _size(text: str) -> int:
    """``2GiB``, ``64MiB``, ``1000`` -> bytes (the admin CLI's own parser)."""
    return int(parse_rate(text))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 512 MiB of data, 3 s windows")
    parser.add_argument("--drives", type=int, default=7, help="directory drives (default 7: 4+2 and one spare)")
    parser.add_argument("--data-size", type=_size, help="bytes of objects written (default 2GiB, quick 512MiB)")
    parser.add_argument("--object-size", type=_size, default=64 * MiB, help="bytes per object (default 64MiB)")
    parser.add_argument("--get-objects", type=int, default=64, help="1 MiB objects the GET runs read (default 64)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent GETs (default 4)")
    parser.add_argument("--duration", type=float, help="seconds per GET measurement (default 10, quick 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of uncounted GETs first (default 1)")
    parser.add_argument("--repair-rate", help="repair limit during the GET runs, e.g. 128MiB/s (default: the server's)")
    parser.add_argument("--repair-parallel", type=int, help="segments repaired at once (default: the server's)")
    parser.add_argument("--scrub-rates", default="20,50,100", help="MiB/s settings to check (default 20,50,100)")
    parser.add_argument("--scrub-window", type=float, help="seconds sampled per scrub setting (default 10, quick 3)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a repair after this many seconds")
    parser.add_argument("--procs", type=int, default=min(2, os.cpu_count() or 1), help="load generator processes")
    parser.add_argument("--dir", default=".", help="where to make the temp dir (default: the working directory)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `apollo server` argument")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    args.data_size = args.data_size or (512 * MiB if args.quick else 2 * GiB)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.scrub_window = args.scrub_window or (3.0 if args.quick else 10.0)
    args.scrub_rates = [float(r) for r in args.scrub_rates.split(",")]
    args.repair_rate = parse_rate(args.repair_rate) if args.repair_rate else Tuning().repair_bytes_per_s
    # What s3bench.Bench (whose measuring and populating this reuses) reads from its arguments.
    args.client, args.loopback_procs = "raw", 1
    return args


class RepairBench(s3bench.Bench):
    """One server, one generator pool; the measurement loop and object writing are s3bench's."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__(args, workdir)
        self.store = None
        self.results: list[dict] = []
        self.facts: dict[str, object] = {}
        self._log_offset = 0
        self._log = {"tuning": Tuning(), "scrubs_started": 0, "scrubs_done": 0}  # no tuning line yet: defaults

    def start(self) -> None:
        self.server.start()
        self.pool = loadgen.WorkerPool(self.args.procs)
        self._s3("PUT", f"/{s3bench.BUCKET}")
        self.store = open_store(self.server.meta_dir)

    # -- talking to the server as an operator --------------------------------------------------------------

    def admin(self, *args: str) -> str:
        """``apollo admin ARGS --meta-dir M``: the command an operator would type."""
        command = [sys.executable, "-m", "apollo", "admin", *args, "--meta-dir", str(self.server.meta_dir)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"apollo admin {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def tune(self, *args: str) -> None:
        """Change knobs with ``apollo admin`` and wait until the server logs that it runs with exactly them."""
        self.admin(*args)
        wanted = Tuning.load(self.store.settings_like(SETTING_PREFIX))
        _wait(lambda: self.follow_log()["tuning"] == wanted, 15, f"the server to apply {' '.join(args)}")
        time.sleep(SETTLE_S)

    def follow_log(self) -> dict:
        """What the server's log said so far: the knobs it last applied, scrub passes started and finished.

        The log, not the database: the scrubber saves its progress only after each page of segments.
        """
        with open(self.server.log_path, "rb") as handle:
            handle.seek(self._log_offset)
            raw = handle.read()
        whole_lines = raw[: raw.rfind(b"\n") + 1]  # a line still being written is read next time
        self._log_offset += len(whole_lines)
        text = whole_lines.decode(errors="replace")
        tunings = re.findall(r"tuning: (Tuning\(.*\))", text)
        if tunings:
            self._log["tuning"] = _parse_tuning(tunings[-1])
        self._log["scrubs_started"] += len(re.findall(r"scrub pass started", text))
        self._log["scrubs_done"] += len(re.findall(r"scrub pass done", text))
        return self._log

    def scrub_pass(self) -> int | None:
        """The number of the scrub pass running now (counting from 1 since the server started), if any."""
        log = self.follow_log()
        return log["scrubs_started"] if log["scrubs_started"] > log["scrubs_done"] else None

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"{self.server.endpoint}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))

    def drive_record(self, path: Path) -> DriveRecord | None:
        """The drive at ``path`` that is not retired, if any."""
        wanted = str(path.resolve())
        return next((r for r in self.store.list_drives() if r.path == wanted and r.state != "retired"), None)

    def drive_by_id(self, drive_id: str) -> DriveRecord:
        return next(r for r in self.store.list_drives() if r.drive_id == drive_id)

    def wipe(self, drive: Path) -> dict:
        """``rm -rf`` a drive; returns what it held and when the server marked it failed."""
        record = self.drive_record(drive)
        shards = [p for p in (drive / "shards").rglob("*") if p.is_file()]
        lost = {"drive_id": record.drive_id, "shard_files": len(shards),
                "shard_sizes": [p.stat().st_size for p in shards]}  # fmt: skip
        wiped_at = time.time()
        shutil.rmtree(drive)
        _wait(lambda: self.drive_by_id(record.drive_id).state != "online", 30, f"{record.drive_id} to be marked failed")
        lost["failed_at"] = self.drive_by_id(record.drive_id).state_since  # the server's own clock, at detection
        lost["detection_s"] = lost["failed_at"] - wiped_at
        print(f"  wiped {drive.name} ({record.drive_id}): {lost['shard_files']} shard files, "
              f"{sum(lost['shard_sizes']) / MiB:.1f} MiB; marked failed after {lost['detection_s']:.2f} s",
              flush=True)  # fmt: skip
        return lost

    def queued(self, drive_id: str) -> bool:
        """The drive's evacuation walk has queued every shard it held."""
        return any(j.drive_id == drive_id and j.finished for j in self.store.drive_jobs(active_only=False))

    def repaired(self, drive_id: str) -> bool:
        return self.queued(drive_id) and self.store.pending_repairs_on(drive_id) == 0

    # -- scenarios ------------------------------------------------------------------------------------------

    def populate_all(self) -> None:
        count = max(1, self.args.data_size // self.args.object_size)
        self.populate("data/", count, self.args.object_size, files=False)
        self.populate("get/", self.args.get_objects, GET_SIZE, files=False)
        self.facts["data"] = f"{count} x {report.size_label(self.args.object_size)} + " \
                             f"{self.args.get_objects} x {report.size_label(GET_SIZE)}"  # fmt: skip

    def scrub_scenario(self) -> None:
        """Each rate setting during one deep pass: bytes the scrubber read over a window, against the setting."""
        for n, rate_mib in enumerate(self.args.scrub_rates):
            self.tune("scrub", "--rate", f"{rate_mib:g}MiB/s", "--mode", "deep")
            if n == 0:
                self.admin("scrub", "--now")
                _wait(lambda: self.scrub_pass() is not None, 15, "the scrub pass to start")
                time.sleep(SETTLE_S)
            running = self.scrub_pass()
            before = self.scrub_sample()
            time.sleep(self.args.scrub_window)
            after = self.scrub_sample()
            if running is None or self.scrub_pass() != running:
                raise RuntimeError(f"no scrub pass ran through the {rate_mib:g} MiB/s window: use a larger "
                                   "--data-size or a shorter --scrub-window")  # fmt: skip
            seconds = after["at"] - before["at"]
            counted, read = ((after[x] - before[x]) / seconds for x in ("counted", "read"))
            setting = rate_mib * MiB
            print(f"  scrub at {rate_mib:g} MiB/s: counted {counted / MiB:.2f} MiB/s, server read() "
                  f"{read / MiB:.2f} MiB/s over {seconds:.1f} s", flush=True)  # fmt: skip
            for what, achieved in (("apollo_scrub_bytes_total", counted), ("server read() calls (rchar)", read)):
                self.results.append({
                    "measurement": f"deep scrub at {rate_mib:g} MiB/s: {what}", "kind": "scrub",
                    "value": achieved / MiB, "unit": "MiB/s", "baseline": setting / MiB, "baseline_name": "setting",
                    "ratio": achieved / setting, "target": f"within ±{SCRUB_TOLERANCE:.0%} of the setting",
                    "passed": abs(achieved / setting - 1) <= SCRUB_TOLERANCE,
                })  # fmt: skip
        self._finish_scrub()

    def scrub_sample(self) -> dict:
        pids = procstat.tree(self.server.process.pid)
        return {"counted": self.metric("apollo_scrub_bytes_total"), "read": procstat.read_chars(pids),
                "at": time.monotonic()}  # fmt: skip

    def _finish_scrub(self) -> None:
        """End the pass unlimited (so it cannot disturb the repair runs), and report the unpaced rate."""
        self.tune("scrub", "--rate", "0")
        before = self.scrub_sample()
        _wait(lambda: self.scrub_pass() is None, self.args.timeout, "the scrub pass to finish")
        after = self.scrub_sample()
        seconds = after["at"] - before["at"]
        scrubbed = after["counted"] - before["counted"]
        print(f"  scrub unlimited until the pass ended: {scrubbed / MiB:.1f} MiB in {seconds:.1f} s", flush=True)
        if seconds >= 1:  # shorter: too few segments left for a rate
            name = f"deep scrub unlimited, last {scrubbed / MiB:.0f} MiB of the pass: apollo_scrub_bytes_total"
            self.results.append(_info_row("scrub", name, scrubbed / seconds / MiB, "MiB/s"))

    def repair_scenario(self) -> None:
        """Unlimited repair of one wiped drive, against plain file I/O doing the same reads and writes."""
        knobs = ["--rate", "0", "--iops", "0"]
        if self.args.repair_parallel:
            knobs += ["--parallel", str(self.args.repair_parallel)]
        self.tune("repair", *knobs)
        parallel = Tuning.load(self.store.settings_like(SETTING_PREFIX)).repair_parallel
        run = self.timed_repair(self.server.drives[1])
        seconds, lost, shards = run["repair_seconds"], run["lost_shard_bytes"], run["lost_shard_files"]
        print(f"  rebuilt {shards} shards, {lost / MiB:.1f} MiB in {seconds:.2f} s ({lost / seconds / MiB:.1f} MiB/s), "
              f"first after {run['first_shard_s']:.2f} s; the repair worker also moved "
              f"{run['repaired_shards'] - shards:.0f} other shards meanwhile; server CPU "
              f"{run['server_cpu_pct_of_core']:.0f}% of a core", flush=True)  # fmt: skip
        k = self._scheme().k
        base_bytes, base_seconds = self.rebuild_baseline(run["shard_sizes"], k, parallel)
        print(f"  baseline: read {k} + write 1 + fsync per shard, {parallel} threads: {base_bytes / MiB:.1f} MiB "
              f"in {base_seconds:.2f} s ({base_bytes / base_seconds / MiB:.1f} MiB/s)", flush=True)  # fmt: skip
        apollo_rate, base_rate = lost / seconds, base_bytes / base_seconds
        self.facts.update({key: value for key, value in run.items() if key != "shard_sizes"})
        self.facts.update({"repair_parallel": parallel, "baseline_bytes": base_bytes, "baseline_seconds": base_seconds})
        # From the first rebuilt shard to the last: the worker's pace once started (one shard's bytes fewer).
        steady = lost * (shards - 1) / shards / max(1e-9, seconds - run["first_shard_s"])
        self.results += [
            _info_row("repair", "wipe to drive marked failed", run["detection_s"], "s"),
            _info_row("repair", "marked failed to first shard rebuilt", run["first_shard_s"], "s"),
            _info_row("repair", "marked failed to last shard rebuilt", seconds, "s"),
            _info_row("repair", "other shards the repair worker moved meanwhile (rebalance)",
                      run["repaired_shards"] - shards, "shards"),
            _info_row("repair", "repair, unlimited: lost bytes/s from first to last shard rebuilt", steady / MiB,
                      "MiB/s"),
            {"measurement": f"repair, unlimited: lost bytes/s from failure detection to the last of {shards} "
                            f"shards ({lost / MiB:.0f} MiB) rebuilt",
             "kind": "repair", "value": apollo_rate / MiB, "unit": "MiB/s", "baseline": base_rate / MiB,
             "baseline_name": f"plain files: read {k} + write 1 + fsync, {parallel} threads",
             "ratio": apollo_rate / base_rate, "target": f"≥ {REPAIR_RATIO_TARGET:.0%} of the baseline",
             "passed": apollo_rate / base_rate >= REPAIR_RATIO_TARGET},
        ]  # fmt: skip

    def timed_repair(self, drive: Path) -> dict:
        """Wipe ``drive`` and time its repair: detection, first and last shard rebuilt, server CPU.

        The repair worker's counters also count whatever else it did meanwhile (rebalance moves the lost
        drive sets off); what had to be rebuilt is the lost shard files, and the drive is retired only once
        no segment refers to it any more.
        """
        bytes0, shards0 = self.metric("apollo_repair_bytes_total"), self.metric("apollo_repaired_shards_total")
        cpu0 = procstat.cpu_seconds(procstat.tree(self.server.process.pid))
        lost = self.wipe(drive)
        first_shard: list[float] = []  # seconds after detection

        def finished() -> bool:
            if not first_shard and self.metric("apollo_repaired_shards_total") > shards0:
                first_shard.append(time.time() - lost["failed_at"])
            return self.repaired(lost["drive_id"])

        _wait(finished, self.args.timeout, "the wiped drive's shards to be rebuilt")
        seconds = time.time() - lost["failed_at"]
        cpu = procstat.cpu_seconds(procstat.tree(self.server.process.pid)) - cpu0
        first_s = first_shard[0] if first_shard else seconds
        self.check_alive()
        _wait(lambda: self.drive_record(drive) is None, 30, "the emptied drive to be retired")
        return {
            "lost_shard_files": lost["shard_files"], "lost_shard_bytes": sum(lost["shard_sizes"]),
            "shard_sizes": lost["shard_sizes"], "detection_s": lost["detection_s"], "repair_seconds": seconds,
            "first_shard_s": first_s, "repair_worker_bytes": self.metric("apollo_repair_bytes_total") - bytes0,
            "repaired_shards": self.metric("apollo_repaired_shards_total") - shards0,
            "server_cpu_pct_of_core": 100 * cpu / seconds,
        }  # fmt: skip

    def _scheme(self) -> Scheme:
        return Scheme.parse(self.store.get_setting(admin.SCHEME_SETTING))

    def rebuild_baseline(self, sizes: list[int], k: int, threads: int) -> tuple[int, float]:
        """The disk work of rebuilding shards of these sizes without decoding: (bytes written, seconds)."""
        root = self.workdir / "rebuild-baseline"
        root.mkdir()
        jobs = []
        for n, size in enumerate(sizes):
            sources = [root / f"{n}.{i}" for i in range(k)]
            for source in sources:
                baselines.write_file(source, size, loadgen.RANDOM, durable=True)
            jobs.append((sources, root / f"{n}.out"))
        started = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            written = sum(pool.map(lambda job: baselines.rebuild_file(*job), jobs))
        seconds = time.monotonic() - started
        shutil.rmtree(root)
        return written, seconds

    def get_scenario(self) -> None:
        """GET p99 healthy, degraded with repair paused, and while repair runs at its limit."""
        spare = self.server.root / "drive-spare"
        spare.mkdir()  # the new disk, mounted: `drive add` never creates the directory
        self.admin("drive", "add", str(spare))
        _wait(lambda: self.drive_record(spare).free_bytes > 0, 30, "the server to attach the added drive")
        self.tune("repair", "--rate", f"{self.args.repair_rate:.0f}", "--iops", f"{Tuning().repair_ops_per_s:g}",
                  "--pause")  # fmt: skip
        keys = [f"get/{i:07d}" for i in range(self.args.get_objects)]

        def measure(label: str) -> dict:
            return self.measure("apollo", "get", GET_SIZE, self.args.concurrency, label, warm=True, keys=keys)

        healthy = measure("GET 1 MiB, healthy")
        lost = self.wipe(self.server.drives[4])
        _wait(lambda: self.queued(lost["drive_id"]), 60, "the wiped drive's shards to be queued")
        degraded = measure("GET 1 MiB, drive lost, repair paused")
        self.tune("repair", "--resume")
        before, t0 = self.metric("apollo_repair_bytes_total"), time.monotonic()
        repairing = measure("GET 1 MiB, drive lost, repair running")
        repair_rate = (self.metric("apollo_repair_bytes_total") - before) / (time.monotonic() - t0)
        ran_through = not self.repaired(lost["drive_id"])
        limit = f"{self.args.repair_rate / MiB:g} MiB/s"
        print(f"  repair worker meanwhile: wrote {repair_rate / MiB:.1f} MiB/s (limit {limit} read+written); "
              f"still running at the end: {ran_through}", flush=True)  # fmt: skip
        self.facts.update({"repair_rate_during_gets": repair_rate, "repair_ran_through_window": ran_through})
        self.results += [
            _latency_row("GET 1 MiB p99, healthy", healthy, None),
            _latency_row("GET 1 MiB p99, a drive lost, repair paused (degraded reads)", degraded, healthy),
            _latency_row(f"GET 1 MiB p99, a drive lost, repair running (limit {limit}; the worker wrote "
                         f"{repair_rate / MiB:.1f} MiB/s meanwhile)", repairing, healthy,
                         target=True if ran_through else "none: repair ended inside the window (more --data-size)"),
        ]  # fmt: skip

    def configuration(self) -> dict:
        scheme = self._scheme()
        tuning = Tuning()
        return {
            "date (UTC)": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
            "drives": f"{len(self.server.drives)} directory drives (+1 added before the GET runs)",
            "EC scheme": str(scheme),
            "data": self.facts.get("data", "?"),
            "extra server args": " ".join(self.args.server_arg) or "none",
            "repair for the throughput run": f"unlimited (--rate 0 --iops 0), {self.facts.get('repair_parallel')} "
                                             "segments at a time",
            "repair during the GET runs": f"{self.args.repair_rate / MiB:g} MiB/s read+written, "
                                          f"{tuning.repair_ops_per_s:g} ops/s",
            "GET runs": f"{self.args.concurrency} concurrent, {self.args.duration:g} s + {self.args.warmup:g} s "
                        f"warm-up, {self.args.get_objects} x 1 MiB objects, {self.args.procs} generator processes",
            "scrub windows": f"{self.args.scrub_window:g} s each, from {SETTLE_S:g} s after the server applied the "
                             "setting",
            "CPU": f"{self.cores} × {s3bench._cpu_model()}",
            "memory": f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GiB:.1f} GiB",
            "Python": f"{platform.python_implementation()} {platform.python_version()}",
            "kernel": platform.release(),
            "filesystem": baselines.filesystem_of(self.workdir),
        }  # fmt: skip


def _info_row(kind: str, measurement: str, value: float, unit: str) -> dict:
    """A figure reported for understanding, held to no target."""
    return {"measurement": measurement, "kind": kind, "value": value, "unit": unit, "baseline": None,
            "baseline_name": None, "ratio": None, "target": None, "passed": None}  # fmt: skip


def _latency_row(name: str, run: dict, healthy: dict | None, target: bool | str = False) -> dict:
    """A GET run's p99 against the healthy one's; ``target``: held to the latency target, or why not."""
    ratio = run["p99_ms"] / healthy["p99_ms"] if healthy else None
    checked = target is True and healthy is not None
    return {
        "measurement": f"{name}, conc {run['concurrency']}", "kind": "get", "value": run["p99_ms"], "unit": "ms",
        "p50_ms": run["p50_ms"], "errors": run["errors"], "baseline": healthy["p99_ms"] if healthy else None,
        "baseline_name": "p99 healthy" if healthy else None, "ratio": ratio,
        "target": f"≤ {GET_P99_RATIO_TARGET:g}x healthy" if checked else (target or None),
        "passed": (ratio <= GET_P99_RATIO_TARGET and not run["errors"]) if checked else None,
    }  # fmt: skip


def _parse_tuning(text: str) -> Tuning:
    """The ``Tuning(...)`` repr the server logs, back into a Tuning."""
    fields = dict(re.findall(r"(\w+)=('[^']*'|[^,)]+)", text))
    return Tuning.load({SETTING_PREFIX + k: v.strip("'") for k, v in fields.items()})


def _wait(condition, timeout_s: float, what: str) -> float:
    """Poll until ``condition()`` is truthy; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic() - start


def results_table(results: list[dict]) -> str:
    rows = []
    for row in results:
        lower_is_better = row["unit"] in ("ms", "s")
        shown = report.up if lower_is_better else report.down
        digits = 0 if row["unit"] == "shards" else 2
        value = "—" if row["value"] is None else f"{shown(row['value'], digits)} {row['unit']}"
        baseline = "—" if row["baseline"] is None else f"{shown(row['baseline'], 2)} {row['unit']}"
        if row["ratio"] is None:
            ratio = "—"
        elif row["kind"] == "get":
            ratio = f"{report.up(row['ratio'], 2)}x"
        else:
            ratio = f"{report.down(row['ratio'] * 100, 1)}%"
        result = "info" if row["passed"] is None else "PASS" if row["passed"] else "MISS"
        if row.get("errors"):
            result = f"ERROR ({row['errors']} failed GETs)"
        rows.append([row["measurement"], value, row["baseline_name"] or "—", baseline, ratio, row["target"] or "—",
                     result])  # fmt: skip
    return report.table(["measurement", "Apollo", "baseline", "baseline figure", "ratio", "target", "result"], rows)


NOTES = [
    "MiB/s is 2^20 bytes per second. Rates and ratios are rounded down, latencies and latency ratios up; "
    "PASS/MISS is decided on unrounded figures.",
    "Repair ratio: the wiped drive's shard bytes (file sizes before the wipe) per second, from the moment the "
    "server marked the drive failed (its own timestamp) until no shard of the drive was left in the repair queue, "
    "divided by the bytes per second of the baseline doing the disk work of the same rebuild with plain files: for "
    "every lost shard, read k files of its size and write one, fsynced, as many threads as repair segments at once. "
    "Both read data written minutes before, i.e. from page cache. Apollo also decodes, reads every rebuilt shard "
    "back to verify it and commits the new layout; and the rebalance moves the failure triggers share its worker.",
    "The repair rate limit counts bytes read + written (and read back): rebuilding one byte of a k+m shard costs "
    "about k + 2 bytes of budget, so the bytes the worker writes are well below the limit.",
    "GET runs: 1 MiB objects from page cache; a lost drive makes the reads of its segments decode from parity, "
    "so the 'repair paused' run separates that cost from the repair's own.",
    "Scrub rates, two ways over the same window: the scrubber's own counter (apollo_scrub_bytes_total), which "
    "counts a read when it asks the rate limiter for it, before waiting, so it may run ahead of the reads by one "
    "read batch (2 MiB in 4+2) per shard being checked; and every byte the server process read by system calls "
    "(rchar of /proc/<pid>/io, page-cache hits included; nothing else reads in bulk meanwhile): the pacing as the "
    "drives see it.",
]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix=".repairbench-", dir=os.path.abspath(args.dir)))
    signal.signal(signal.SIGTERM, s3bench._interrupt)
    bench = RepairBench(args, workdir)
    try:
        print(f"repair_bench: temp dir {workdir}", flush=True)
        bench.start()
        bench.populate_all()
        for name, step in (("scrub", bench.scrub_scenario), ("repair", bench.repair_scenario),
                           ("GET under repair", bench.get_scenario)):  # fmt: skip
            print(f"[{name}]", flush=True)
            step()
            bench.check_alive()
        config = bench.configuration()
        text = "\n".join(["## Configuration", "", report.config_table(config), "", "## Results against targets", "",
                          results_table(bench.results), "", "## Every GET run", "", report.runs_table(bench.runs), "",
                          "## Notes", "", *[f"- {note}" for note in NOTES], ""])  # fmt: skip
        print("\n" + text)
        if args.json:
            Path(args.json).write_text(json.dumps({"config": config, "results": bench.results, "runs": bench.runs,
                                                   "facts": bench.facts}, indent=2, default=str))  # fmt: skip
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    except Exception:
        print(f"failed; the server's log ends with:\n{bench.server.log_tail(80)}", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
