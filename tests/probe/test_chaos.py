"""Seeded chaos: PUTs, overwrites, DELETEs and multipart uploads in a versioned and an unversioned bucket while
a driver kills -9 and restarts the server, wipes drives (and replaces them) and flips bytes in shard files,
never more than m = 2 drives damaged at once.

At the end (one clean restart, every damage found and repaired, the GC queue drained, an orphan sweep) every
acknowledged write reads back byte-exact, every acknowledged delete stays deleted, the drives hold exactly the
shard files the metadata refers to, and a deep scrub finds nothing wrong.

The seed fixes every choice: operations, keys, sizes, payload bytes, chaos actions, their targets and pauses.
Thread timing still varies, so a seed replays the same scenario but not the same interleaving; a failure that
does not come back at once may need a few runs. Replay:

    APOLLO_CHAOS_SEED=<seed> APOLLO_CHAOS_SECONDS=<s> .venv/bin/python -m pytest tests/probe/test_chaos.py
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from chaos_workload import Chaos, ChaosWorkload
from shard_state import Healing, damaged_shards, healing, missing_shards, referenced_shards
from support import drive_state, query, wait_until, wipe

from apollo.testing.admin import admin, run_admin

SEED = int(os.environ.get("APOLLO_CHAOS_SEED", "20250604"))
CHAOS_S = float(os.environ.get("APOLLO_CHAOS_SECONDS", "60"))
M = 2  # drives that may be damaged at once: 4+2 loses nothing with two shards of a segment gone
SETTLE_TIMEOUT_S = 120.0
ACTIONS = {"kill": 3, "wipe": 2, "corrupt": 2, "wait": 1}


# damage --------------------------------------------------------------------------------------------


@dataclass
class Damage:
    drive: Path
    kind: str  # "wipe" or "corrupt"
    done_at: float  # wall clock once the damage was complete

    def healed(self, now: Healing) -> bool:
        """Redundancy is back: nothing queued or walking, no failed drive left; flipped bytes also need a
        scrub pass that started after them (nothing else is sure to look at every shard)."""
        return now.settled and (self.kind == "wipe" or now.scrubbed_at > self.done_at)


def flip_bits(path: Path, rng: random.Random) -> bool:
    """Flip one to three bits anywhere in a shard file, in place; False if the file went away meanwhile."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(fd).st_size
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(size)
            os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ (1 << rng.randrange(8))]), at)
    finally:
        os.close(fd)
    return True


class Driver:
    """Seeded chaos actions against the server, never leaving more than M drives damaged at once."""

    def __init__(self, chaos: Chaos, seed: int) -> None:
        self.chaos = chaos
        self.server = chaos.server
        self.rng = random.Random(seed)
        self.damage: list[Damage] = []  # not healed yet, as far as the last look said
        self.history: list[str] = []  # what was done when: the first thing to read when the test fails
        self.done: Counter = Counter()
        self.started = time.monotonic()

    def run(self, seconds: float) -> None:
        first = self.rng.sample(["kill", "wipe", "corrupt"], 3)  # every run does each at least once
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pause = self.rng.uniform(0.5, 3.0)
            action = first.pop() if first else self.rng.choices(list(ACTIONS), list(ACTIONS.values()))[0]
            drive = self.rng.choice(self.server.drives)
            rng = random.Random(self.rng.getrandbits(64))  # the action's own draws: the main sequence stays aligned
            time.sleep(pause)
            if action in ("wipe", "corrupt") and not self._may_damage(drive):
                self._note(f"{action} {drive.name} skipped: {sorted({d.drive.name for d in self.damage})} not healed")
                action = "wait"
            getattr(self, action)(drive, rng)
            self.done[action] += 1

    def _may_damage(self, drive: Path) -> bool:
        now = healing(self.server)
        self.damage = [d for d in self.damage if not d.healed(now)]
        damaged = {d.drive for d in self.damage}
        return drive in damaged or len(damaged) < M

    def _note(self, what: str) -> None:
        self.history.append(f"{time.monotonic() - self.started:6.1f} s  {what}")

    def kill(self, drive: Path, rng: random.Random) -> None:
        pause = rng.choice([0.0, 0.0, 0.5, 2.0])
        self._note(f"kill -9, restart after {pause} s")
        self.chaos.kill_and_restart(pause)

    def wipe(self, drive: Path, rng: random.Random) -> None:
        """rm -rf a drive and `apollo admin drive replace` it at the same path: at once half of the time (a
        quick disk swap the server's probe never sees), otherwise once the server marked it failed."""
        swap = rng.random() < 0.5
        self._note(f"wipe {drive.name}" + (", replace at once" if swap else ""))
        wipe(drive)
        self.damage.append(Damage(drive, "wipe", time.time()))
        if not swap:
            wait_until(lambda: drive_state(self.server, drive) == "failed", 30, f"{drive.name} to be marked failed")
        drive.mkdir()
        admin("drive", "replace", str(drive), meta_dir=self.server.meta_dir)

    def corrupt(self, drive: Path, rng: random.Random) -> None:
        files = sorted((drive / "shards").rglob("*.*"))
        flipped = sum(flip_bits(path, rng) for path in rng.sample(files, min(len(files), rng.randint(1, 5))))
        self.damage.append(Damage(drive, "corrupt", time.time()))
        self._note(f"flip bits in {flipped} shard files of {drive.name}")

    def wait(self, drive: Path, rng: random.Random) -> None:
        pause = rng.uniform(1.0, 4.0)
        self._note(f"wait {pause:.1f} s")
        time.sleep(pause)


# the end state ---------------------------------------------------------------------------------------


def settle(server, problems: list[str], when: str) -> None:
    """Wait until repair is done (the backlog empty, walks done, failed drives retired): `repair --wait`, bounded."""
    try:
        wait_until(lambda: healing(server).settled, SETTLE_TIMEOUT_S, f"self-healing to settle {when}")
    except AssertionError as exc:
        problems.append(f"{exc}: {healing(server)}\n{run_admin('status', meta_dir=server.meta_dir).stdout}")


def scrub_problems(server) -> int:
    done = admin("scrub", "--now", "--wait", meta_dir=server.meta_dir)
    return int(re.search(r"scrub done: .* (\d+) problems", done).group(1))


def test_acknowledged_state_survives_seeded_chaos(make_server):
    replay = f"APOLLO_CHAOS_SEED={SEED} APOLLO_CHAOS_SECONDS={CHAOS_S:g}"
    print(f"chaos seed {SEED}, {CHAOS_S:g} s of chaos (replay: {replay})")
    server = make_server(drives=7, extra_args=["--gc-delay", "0"])  # 4+2 and a spare drive
    try:
        chaos, workloads = _run_chaos(server)
        _check_end_state(chaos, workloads)
    except BaseException as exc:
        exc.add_note(f"chaos seed {SEED}: replay with {replay}; server log {server.log_path}")
        raise


def _run_chaos(server) -> tuple[Chaos, list[ChaosWorkload]]:
    """Requests flow in both buckets while the driver kills, wipes and corrupts."""
    # Scrub every 10 s during the chaos, so flipped bits nobody reads are found (and count as healed).
    admin("scrub", "--interval", "10", "--rate", "0", "--mode", "deep", meta_dir=server.meta_dir)
    chaos = Chaos(server)
    s3 = chaos.client()
    for bucket in ("plain", "versioned"):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    seeds = random.Random(SEED)
    workloads = [ChaosWorkload(chaos, "plain", False, seeds.getrandbits(64)),
                 ChaosWorkload(chaos, "versioned", True, seeds.getrandbits(64))]  # fmt: skip
    driver = Driver(chaos, seeds.getrandbits(64))
    for workload in workloads:
        workload.start()
    try:
        driver.run(CHAOS_S)
    finally:
        for workload in workloads:
            workload.finish()
        print("\n".join(driver.history))
    print(f"driver: {dict(driver.done)}; requests: {[dict(w.counts) for w in workloads]}")
    assert all(driver.done[action] for action in ("kill", "wipe", "corrupt")), driver.done
    assert all(w.counts["answered"] >= 20 for w in workloads), "too few requests answered: the test proves nothing"
    return chaos, workloads


def _check_end_state(chaos: Chaos, workloads: list[ChaosWorkload]) -> None:
    server, problems = chaos.server, []
    # One clean restart (pending writes of killed processes become due for GC); every damage is found (a deep
    # scrub) and repaired, failed drives are evacuated and retired; no referenced shard may be missing then.
    chaos.restart_cleanly()
    settle(server, problems, "after the chaos")
    if missing := missing_shards(server):
        problems.append(f"{len(missing)} referenced shard files missing although nothing is queued for repair "
                        f"(redundancy silently lost), e.g. {missing[:5]}")  # fmt: skip
    print(f"the scrub after the chaos found {scrub_problems(server)} problems (flipped bits nobody had read)")
    settle(server, problems, "after the scrub")

    # Garbage: leftover uploads aborted, the GC queue drained, then an orphan sweep for what it cannot see.
    aborted = sum(w.abort_leftover_uploads() for w in workloads)
    try:
        wait_until(lambda: query(server, "SELECT COUNT(*) FROM garbage")[0][0] == 0, 60, "the GC queue to drain")
    except AssertionError as exc:
        problems.append(str(exc))
    sweep = admin("gc", "--now", "--wait", "--min-age", "0", meta_dir=server.meta_dir).strip().splitlines()[-1]
    print(f"{aborted} multipart uploads left open and aborted; {sweep}")

    # The drives hold exactly the shards the metadata names, no temp files, all intact.
    if server.tmp_files():
        problems.append(f"temp files left: {server.tmp_files()[:5]}")
    expected, unplaced = referenced_shards(server)
    if unplaced:
        problems.append(f"{len(unplaced)} shards on no present drive, e.g. {unplaced[:5]}")
    found = set(server.shard_files())
    if found != expected:
        problems.append(f"orphan shard files {sorted(map(str, found - expected))[:5]} ({len(found - expected)}); "
                        f"missing {sorted(map(str, expected - found))[:5]} ({len(expected - found)})")  # fmt: skip
    if (bad := scrub_problems(server)) != 0:
        problems.append(f"the final deep scrub found {bad} problems")
    if damaged := damaged_shards(server):
        problems.append(f"{len(damaged)} shard files do not verify (the scrub missed them), e.g. {damaged[:5]}")

    # Every acknowledged write reads back byte-exact, every acknowledged delete is gone; and redundancy is really
    # back (not just reported so): with m drives gone, everything still reads byte-exact.
    for workload in workloads:
        workload.verify()
    if not any(w.violations + w.errors for w in workloads):
        for drive in random.Random(SEED).sample(server.drives, M):
            wipe(drive)
        for workload in workloads:
            workload.verify()
    problems += [problem for w in workloads for problem in w.violations + w.errors]
    assert not problems, "\n".join(problems[:40])
