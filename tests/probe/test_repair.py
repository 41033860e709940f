"""Self-healing, by doing the damage: wipe a drive under load, flip bytes, drain; then prove redundancy is back.

"Back" is proven the hard way: after repair, m *other* drives are deleted and
every object must still read byte-exact.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from contextlib import closing

from support import drive_state, metric, pause_repair, query, shards_by_segment, wait_until, wipe

from apollo.storage.shardfile import HEADER_BYTES
from apollo.testing.admin import admin, admin_refused
from apollo.testing.workload import Workload


class Load(threading.Thread):
    """PUTs and GETs while the damage happens; every request must succeed."""

    def __init__(self, server, bucket: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.s3 = server.s3()
        self.bucket = bucket
        self.rng = random.Random(seed)
        self.acknowledged = Workload(seed)  # what the store acknowledged, checked byte for byte
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            key = f"load-{n % 25}"
            try:
                self.acknowledged.put(self.s3, self.bucket, key, self.rng.choice([5_000, 300_000, 2_100_000]))
                probe = self.rng.choice(self.acknowledged.keys(self.bucket))
                if (wrong := self.acknowledged.check(self.s3, self.bucket, probe, ranges=False)) is not None:
                    self.errors.append(wrong)
            except Exception as exc:  # any failed request is a test failure, reported at the end
                self.errors.append(f"{key}: {exc}")
            n += 1

    def finish(self) -> Workload:
        self.stop.set()
        self.join(60)
        assert not self.errors, self.errors[:5]
        return self.acknowledged


def drive_states(server) -> list[str]:
    return sorted(state for (state,) in query(server, "SELECT state FROM drives"))


def queue_length(server) -> int:
    return query(server, "SELECT COUNT(*) FROM repair_queue")[0][0]


def test_wiped_drive_is_detected_rebuilt_onto_its_replacement_under_load(make_server):
    server = make_server()
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(11)
    objects.write(s3, "data", 6)
    load = Load(server, "data", seed=12)
    load.start()
    wait_until(lambda: len(load.acknowledged) >= 5, 30, "the workload to get going")

    wiped = server.drives[2]
    wipe(wiped)
    took = wait_until(lambda: drive_state(server, wiped) == "failed", 15, "the wiped drive to be marked failed")
    assert took < 10, f"a wiped drive must be noticed within seconds, took {took:.1f} s"
    # 4+2 on 6 drives: no spare drive, so its shards wait for the replacement (reads decode meanwhile).
    wiped.mkdir()
    replaced = admin("drive", "replace", str(wiped), "--wait", meta_dir=server.meta_dir)
    assert "replaces" in replaced
    wait_until(lambda: "retired" in drive_states(server) and queue_length(server) == 0, 120, "repairs")
    acknowledged = load.finish()
    assert drive_states(server) == ["online"] * 6 + ["retired"], drive_states(server)
    assert metric(server, "apollo_repaired_shards_total") > 0

    objects.verify(s3, "data")
    acknowledged.verify(s3, "data")
    for drive in (server.drives[0], server.drives[4]):  # redundancy is really back: lose m = 2 other drives
        wipe(drive)
    objects.verify(s3, "data")
    acknowledged.verify(s3, "data")


def test_scrub_finds_every_flipped_shard_and_repair_restores_the_exact_bytes(make_server):
    server = make_server()
    pause_repair(server)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(21)
    objects.write(s3, "data", 6)
    objects.write(s3, "data", 10, sizes=(20_000, 600_000), prefix="small-")
    rng = random.Random(21)
    originals = {}
    for paths in shards_by_segment(server).values():
        for path in rng.sample(paths, rng.randint(1, 2)):  # at most m = 2 damaged shards per segment
            raw = bytearray(path.read_bytes())
            originals[path] = bytes(raw)
            where = rng.choice(["header", "padding", "cells", "footer"])
            region = {"header": (16, 64), "padding": (1024, HEADER_BYTES), "cells": (HEADER_BYTES, len(raw) - 64),
                      "footer": (len(raw) - 40, len(raw))}[where]  # fmt: skip
            raw[rng.randrange(*region)] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(raw))
    assert len(originals) >= 16  # every one of the 16 segments has one or two damaged shards
    objects.verify(s3, "data")  # reads stay correct (and report what they trip over)

    scrub = admin("scrub", "--now", "--wait", meta_dir=server.meta_dir)
    found = json.loads(_setting(server, "scrub.state"))["last"]
    assert found["errors"] == len(originals), scrub
    assert queue_length(server) == len(originals)

    admin("repair", "--resume", meta_dir=server.meta_dir)
    wait_until(lambda: queue_length(server) == 0, 120, "the repair queue to drain")
    for path, original in originals.items():
        assert path.read_bytes() == original, f"{path} was not rebuilt to its exact bytes"
    admin("scrub", "--now", "--wait", meta_dir=server.meta_dir)
    assert json.loads(_setting(server, "scrub.state"))["last"]["errors"] == 0
    objects.verify(s3, "data")


def _seven_drives_written(make_server, seed: int):
    """A server of 7 drives with objects in bucket ``data``: (server, its S3 client, the objects written)."""
    server = make_server(drives=7)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(seed)
    objects.write(s3, "data", 6)
    return server, s3, objects


def test_drained_drive_is_emptied_and_retired_with_nothing_lost(make_server):
    server, s3, objects = _seven_drives_written(make_server, 31)
    leaving = server.drives[3]
    assert list((leaving / "shards").rglob("*.*"))
    admin("drive", "drain", str(leaving), "--wait", meta_dir=server.meta_dir)
    wait_until(lambda: drive_state(server, leaving) == "retired", 30, "the drained drive to be retired")
    assert list((leaving / "shards").rglob("*.*")) == []  # copies removed once the new ones were committed
    admin("drive", "remove", str(leaving), meta_dir=server.meta_dir)
    assert drive_state(server, leaving) == ""
    wipe(leaving)
    for drive in server.drives[:2]:  # the drained data kept full redundancy
        wipe(drive)
    objects.verify(s3, "data")


def test_a_drive_the_shard_index_forgot_is_not_retired_while_it_holds_shards(make_server):
    """The shard index rows of a drive are lost (as an older metadata service, or SQL by hand, would leave
    them): its drain walks nothing, but the check before retiring asks the layouts, finds the shards, corrects
    the index and walks again, so the drive is emptied before it goes and nothing is lost."""
    server, s3, objects = _seven_drives_written(make_server, 37)
    leaving = server.drives[3]
    (drive_id,) = query(server, "SELECT drive_id FROM drives WHERE path = ?", (str(leaving.resolve()),))[0]
    server.stop()
    with closing(sqlite3.connect(server.meta_dir / "apollo.db")) as db, db:
        assert db.execute("DELETE FROM drive_shards WHERE drive_id = ?", (drive_id,)).rowcount > 0
    server.start()
    admin("drive", "drain", str(leaving), "--wait", meta_dir=server.meta_dir)
    wait_until(lambda: drive_state(server, leaving) == "retired", 60, "the drained drive to be retired")
    assert list((leaving / "shards").rglob("*.*")) == []
    assert "disagreed with the layouts" in server.log_tail(400)
    wipe(leaving)
    for drive in server.drives[:2]:
        wipe(drive)
    objects.verify(s3, "data")


def test_scrub_resumes_where_a_killed_server_stopped(make_server):
    server = make_server()
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    Workload(41).write(s3, "data", 6)
    for n in range(60):
        s3.put_object(Bucket="data", Key=f"more-{n}", Body=random.Random(n).randbytes(40_000))
    admin("scrub", "--rate", "1MiB/s", "--mode", "deep", meta_dir=server.meta_dir)
    admin("scrub", "--now", meta_dir=server.meta_dir)

    def progressed() -> bool:
        current = json.loads(_setting(server, "scrub.state") or "{}").get("current")
        return bool(current and current["segments"] >= 32)

    wait_until(progressed, 60, "the scrub pass to check a page of segments")
    server.kill()
    before = json.loads(_setting(server, "scrub.state"))["current"]
    server.start()
    admin("scrub", "--rate", "0", meta_dir=server.meta_dir)

    def finished() -> bool:
        state = json.loads(_setting(server, "scrub.state"))
        return "current" not in state and state["last"]["request"] == before["request"]

    wait_until(finished, 60, "the pass to finish")
    last = json.loads(_setting(server, "scrub.state"))["last"]
    assert last["started"] == before["started"]  # the same pass, resumed, not a new one
    assert last["segments"] == last["total"] > before["segments"]
    assert f"resuming the scrub pass started {time.ctime(before['started'])}: deep, at group {before['cursor_pg']}" in (
        server.log_path.read_text()
    )


def rebalance_state(server) -> dict:
    return json.loads(_setting(server, "rebalance.state") or "{}")


def _setting(server, name: str) -> str | None:
    rows = query(server, "SELECT value FROM settings WHERE name = ?", (name,))
    return rows[0][0] if rows else None


def shard_bytes_by_drive(server, drives) -> list[int]:
    return [sum(f.stat().st_size for f in (d / "shards").rglob("*.*")) for d in drives]


def test_drain_one_and_add_two_drives_under_load_ends_balanced(make_server):
    server = make_server(drives=7, extra_args=["--gc-delay", "0"])
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(61)
    objects.write(s3, "data", 160, sizes=(200_000, 900_000))
    load = Load(server, "data", seed=62)
    load.start()
    leaving = server.drives[0]
    admin("drive", "drain", str(leaving), meta_dir=server.meta_dir)
    new_drives = [server.root / "drive8", server.root / "drive9"]
    for drive in new_drives:
        drive.mkdir()  # the new disks are mounted
        admin("drive", "add", str(drive), meta_dir=server.meta_dir)
    wait_until(lambda: drive_state(server, leaving) == "retired", 120, "the drained drive to be retired")
    acknowledged = load.finish()  # no request failed while shards moved
    wait_until(lambda: _garbage_due(server) == 0, 30, "GC of overwritten data")
    admin("rebalance", "--now", "--wait", meta_dir=server.meta_dir)
    wait_until(lambda: queue_length(server) == 0, 120, "the planned moves")

    online = [d for d in server.drives[1:] + new_drives]
    usage = shard_bytes_by_drive(server, online)
    mean = sum(usage) / len(usage)
    assert (max(usage) - min(usage)) / mean <= 0.10, [round(u / 1e6, 2) for u in usage]
    assert shard_bytes_by_drive(server, [leaving]) == [0]
    objects.verify(s3, "data")
    acknowledged.verify(s3, "data")


def _garbage_due(server) -> int:
    return query(server, "SELECT COUNT(*) FROM garbage WHERE owner = ''")[0][0]


def test_unreachable_drive_goes_offline_comes_back_and_fails_after_the_grace(make_server):
    server = make_server(drives=7)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(71)
    objects.write(s3, "data", 6)
    admin("tune", "drive_offline_grace_s=4", meta_dir=server.meta_dir)
    drive = server.drives[1]
    format_file = drive / "apollo-drive.json"
    identity = format_file.read_bytes()

    def break_it() -> None:  # reading the format file now fails with EISDIR: an I/O error, not a wipe
        format_file.unlink()
        format_file.mkdir()

    def heal_it() -> None:
        format_file.rmdir()
        format_file.write_bytes(identity)

    break_it()
    wait_until(lambda: drive_state(server, drive) == "offline", 10, "the drive to go offline")
    # A pass while it is offline waits for it, planning nothing around it.
    admin("rebalance", "--now", meta_dir=server.meta_dir)
    requested = float(_setting(server, "rebalance.requested"))
    wait_until(lambda: rebalance_state(server).get("current", {}).get("waiting"), 10, "the pass to wait")
    assert queue_length(server) == 0
    heal_it()
    wait_until(lambda: drive_state(server, drive) == "online", 10, "the drive to come back online")
    # A drive that came back within the grace costs no rebuild. (The waiting pass goes on now and may plan
    # moves of the data written before, whose shares are uneven: those are not rebuilds.)
    assert query(server, "SELECT COUNT(*) FROM repair_queue WHERE reason <> 'rebalance'")[0][0] == 0
    # Served by the pass that waited, or by a later one (the drive's return requested another).
    wait_until(lambda: rebalance_state(server).get("last", {}).get("request", 0) >= requested, 30,
               "a pass to serve the request made while the drive was offline")  # fmt: skip

    break_it()
    took = wait_until(lambda: drive_state(server, drive) == "failed", 20, "the drive to be declared failed")
    assert took >= 3, f"failed after {took:.1f} s: the 4 s grace was not honoured"
    wait_until(lambda: drive_state(server, drive) == "retired", 60, "its shards to be rebuilt on the spare drive")
    wipe(drive)
    for other in server.drives[2:4]:
        wipe(other)
    objects.verify(s3, "data")


def test_waiting_for_a_repair_that_cannot_finish_gives_up_after_its_timeout(make_server):
    server = make_server()  # 4+2 on 6 drives: a lost drive's shards have nowhere to go until it is replaced
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(81)
    objects.write(s3, "data", 6)
    wipe(server.drives[0])
    wait_until(lambda: queue_length(server) > 0, 30, "the lost drive's shards to be queued")
    started = time.monotonic()
    waited = admin_refused("repair", "--wait", "--timeout", "2", meta_dir=server.meta_dir)
    assert "not done after 2 s" in waited, waited
    assert time.monotonic() - started < 30
    objects.verify(s3, "data")  # meanwhile every read decodes around the lost drive
    # The manager says what five drives for six shards cost, in the words `drive drain` would refuse with.
    shortfall = ("5 live drives for 6-wide segments: each holds one shard of a segment and 1 finds no drive, so only "
                 "1 of them may fail at once, not 2 (surviving any 2 takes 6 drives)")  # fmt: skip
    wait_until(lambda: f"WARNING apollo.manager: 4+2 segments: {shortfall}" in server.log_path.read_text(), 10,
               "the manager's warning")  # fmt: skip
    assert f"WARNING: {shortfall}" in " ".join(admin("status", meta_dir=server.meta_dir).split())
    refused = admin_refused("drive", "drain", str(server.drives[1]), meta_dir=server.meta_dir)
    assert "leaves 4 live drives for 6-wide segments" in refused, refused
