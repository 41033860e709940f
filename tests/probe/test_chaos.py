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

import hashlib
import io
import json
import os
import random
import re
import shutil
import struct
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from support import admin, assert_all_exact, drive_state, pause_repair, query, wait_until, wipe, write_objects

from apollo.cluster.admin import replace_drive
from apollo.errors import ApolloError
from apollo.proto.layout import SegmentLayout
from apollo.roles.server import open_store
from apollo.storage.geometry import ShardGeometry
from apollo.storage.shardfile import HEADER_BYTES, decode_footer, decode_header, header_padding_is_zero

SEED = int(os.environ.get("APOLLO_CHAOS_SEED", "20250604"))
CHAOS_S = float(os.environ.get("APOLLO_CHAOS_SECONDS", "60"))
M = 2  # drives that may be damaged at once: 4+2 loses nothing with two shards of a segment gone
MIB = 1024**2
MULTIPART = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2)
SETTLE_TIMEOUT_S = 120.0
SIZES: dict[str, Callable[[random.Random], int]] = {
    "small": lambda rng: rng.randrange(16 * 1024),  # inline in the metadata row
    "medium": lambda rng: rng.randint(100 * 1024, 3 * MIB),
    "large": lambda rng: 9 * MIB + rng.randrange(64 * 1024),
    "multipart": lambda rng: rng.randint(6 * MIB, 11 * MIB),  # two or three parts
}
PLAIN_OPS = {"put_small": 3, "put_medium": 4, "put_large": 0.5, "multipart": 1, "delete": 2, "check": 3}
VERSIONED_OPS = {"put_small": 3, "put_medium": 3, "put_large": 0.3, "delete": 1.5, "delete_version": 2, "check": 3,
                 "check_version": 2}  # fmt: skip
ACTIONS = {"kill": 3, "wipe": 2, "corrupt": 2, "wait": 1}
FAILED = object()  # a read that got no answer
KEEP = "keep"  # a request that leaves the latest version as it is (deleting an older version)


@dataclass(frozen=True)
class Payload:
    """An object body kept as seed, size and digest; the bytes are regenerated when a check needs them."""

    seed: int
    size: int
    digest: str

    def body(self) -> bytes:
        return random.Random(self.seed).randbytes(self.size)


def make_payload(rng: random.Random, kind: str) -> tuple[Payload, bytes]:
    seed, size = rng.getrandbits(63), SIZES[kind](rng)
    body = random.Random(seed).randbytes(size)
    return Payload(seed, size, digest(body)), body


def digest(body: bytes | None) -> str | None:
    return None if body is None else hashlib.sha256(body).hexdigest()


@dataclass
class KeyModel:
    """What a key's latest version may be: exactly the state of the last answered request; a request the server
    never answered (it died under it) may or may not have happened, so its state joins the possible ones until
    a read tells which it was."""

    states: list[Payload | None] = field(default_factory=lambda: [None])  # None: absent, or a delete marker
    unanswered_in: int = -1  # server generation an unanswered request went to; -1: none

    def answered(self, state: Payload | None) -> None:
        self.states, self.unanswered_in = [state], -1

    def unanswered(self, state: Payload | None, generation: int) -> None:
        if state not in self.states:
            self.states.append(state)
        self.unanswered_in = generation

    def observe(self, found: str | None, generation: int) -> bool:
        """A read in ``generation`` saw the body with digest ``found``; False if no request could have left it.
        A read served after the process that got an unanswered request died (a later, even generation) settles
        the key."""
        match = [s for s in self.states if (s and s.digest) == found]
        if match and self.unanswered_in < generation and generation % 2 == 0:
            self.answered(match[0])
        return bool(match)

    def describe(self) -> str:
        return " or ".join("absent" if s is None else f"{s.size} bytes (seed {s.seed})" for s in self.states)


@dataclass
class VersionModel:
    """A versioned key's versions, as far as answered requests tell."""

    live: dict[str, str] = field(default_factory=dict)  # version id -> digest: each must read back exact
    markers: set[str] = field(default_factory=set)  # delete markers of answered DELETEs
    gone: set[str] = field(default_factory=set)  # versions deleted by answered requests: must stay gone
    maybe_gone: dict[str, str] = field(default_factory=dict)  # unanswered version deletes: exact or gone
    unknown_bodies: set[str] = field(default_factory=set)  # unanswered PUTs: versions whose id we never learned
    unknown_markers: int = 0  # unanswered DELETEs: delete markers whose id we never learned
    newest: str = ""  # the newest answered version or marker; never deleted, so KeyModel stays right


class Chaos:
    """The server under test and what the workload threads need to ride out its deaths."""

    def __init__(self, server) -> None:
        self.server = server
        self.generation = 0  # odd while the server is dying or down; bumped before each kill and after the restart
        self.up = threading.Event()
        self.up.set()
        self._client_lock = threading.Lock()  # boto3 client creation is not thread-safe

    def client(self):
        with self._client_lock:  # one attempt per request: every request the server saw is in the models
            return self.server.s3(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=120)

    def killed_since(self, generation: int) -> bool:
        """Whether a request sent in ``generation`` may have died with the server."""
        return generation % 2 == 1 or self.generation != generation

    def kill_and_restart(self, pause_s: float) -> None:
        self.up.clear()
        self.generation += 1
        self.server.kill()
        time.sleep(pause_s)
        self.server.start()
        self.generation += 1
        self.up.set()

    def restart_cleanly(self) -> None:
        self.generation += 1
        self.server.restart()
        self.generation += 1


class Workload(threading.Thread):
    """Seeded requests on one bucket; keeps every key's model and everything that went wrong."""

    def __init__(self, chaos: Chaos, bucket: str, versioned: bool, seed: int) -> None:
        super().__init__(daemon=True, name=f"workload-{bucket}")
        self.chaos, self.bucket, self.versioned = chaos, bucket, versioned
        self.rng = random.Random(seed)
        self.keys = {f"k{n:02d}": KeyModel() for n in range(8 if versioned else 16)}
        self.versions = {key: VersionModel() for key in self.keys}
        self.multipart_unanswered: set[str] = set()  # keys that may have a multipart upload left open
        self.violations: list[str] = []  # the store broke a promise: wrong bytes, a delete undone
        self.errors: list[str] = []  # requests that failed although the server was neither killed nor short of drives
        self.counts: Counter = Counter()
        self.stop = threading.Event()
        self.s3 = chaos.client()

    def run(self) -> None:
        ops = VERSIONED_OPS if self.versioned else PLAIN_OPS
        try:
            while not self.stop.is_set():
                op = self.rng.choices(list(ops), list(ops.values()))[0]
                key = self.rng.choice(list(self.keys))
                rng = random.Random(self.rng.getrandbits(64))  # the op's own draws: the main sequence stays aligned
                self.chaos.up.wait(60)
                getattr(self, op)(key, rng)
        except Exception:  # a bug in this test: report it rather than dying silently
            self.errors.append(f"workload {self.bucket} crashed:\n{traceback.format_exc()}")

    def finish(self) -> None:
        self.stop.set()
        self.join(300)
        assert not self.is_alive(), f"workload {self.bucket} did not stop"

    # requests ------------------------------------------------------------------------------------

    def _send(self, key: str, request: Callable[[], dict | None], state: Payload | None | str = KEEP) -> tuple:
        """Send a request that changes ``key`` (its latest becomes ``state`` unless KEEP).

        Returns ("answered" | "refused" | "unanswered", response). A refusal (an S3 error) changed nothing; an
        unanswered request (the server died under it) may have happened or not.
        """
        generation = self.chaos.generation
        try:
            response = request() or {}
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            answered_by_live_server = not self.chaos.killed_since(generation)
            self._trouble(f"{key}: {code}: {exc}", generation, tolerated=code == "InsufficientStorage")
            if answered_by_live_server:
                self.counts["refused"] += 1
                return "refused", {}
            outcome, response = "unanswered", {}  # a multi-request upload straddled a restart: play it safe
        except (BotoCoreError, Boto3Error, OSError) as exc:
            outcome, response = "unanswered", {}
            self._trouble(f"{key}: {exc!r}", generation)
        else:
            outcome = "answered"
        self.counts[outcome] += 1
        if state != KEEP:
            if outcome == "answered":
                self.keys[key].answered(state)
            else:
                self.keys[key].unanswered(state, generation)
        return outcome, response

    def _get(self, key: str, **params) -> bytes | None | object:
        """The body, None for 404 (absent, a delete marker latest, a deleted version), or FAILED."""
        generation = self.chaos.generation
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key, **params)["Body"].read()
        except ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return None
            self._trouble(f"GET {key} {params}: {exc}", generation)
        except (BotoCoreError, OSError) as exc:
            self._trouble(f"GET {key} {params}: {exc!r}", generation)
        return FAILED

    def _trouble(self, what: str, generation: int, tolerated: bool = False) -> None:
        """A request failed; unless the server was killed under it (or ran short of drives), that is an error."""
        if not self.chaos.killed_since(generation) and not tolerated:
            self.errors.append(f"{time.strftime('%H:%M:%S')} {self.bucket}/{what}")
        self.chaos.up.wait(60)
        self.s3 = self.chaos.client()  # no pooled connection to a dead process

    # operations ------------------------------------------------------------------------------------

    def put_small(self, key: str, rng: random.Random) -> None:
        self._put(key, rng, "small")

    def put_medium(self, key: str, rng: random.Random) -> None:
        self._put(key, rng, "medium")

    def put_large(self, key: str, rng: random.Random) -> None:
        self._put(key, rng, "large")

    def _put(self, key: str, rng: random.Random, kind: str) -> None:
        payload, body = make_payload(rng, kind)
        request = partial(self.s3.put_object, Bucket=self.bucket, Key=key, Body=body)
        outcome, response = self._send(key, request, payload)
        if self.versioned:
            versions = self.versions[key]
            if outcome == "answered":
                versions.live[response["VersionId"]] = payload.digest
                versions.newest = response["VersionId"]
            elif outcome == "unanswered":
                versions.unknown_bodies.add(payload.digest)

    def multipart(self, key: str, rng: random.Random) -> None:
        payload, body = make_payload(rng, "multipart")
        upload = partial(self.s3.upload_fileobj, io.BytesIO(body), self.bucket, key, Config=MULTIPART)
        if self._send(key, upload, payload)[0] == "unanswered":
            self.multipart_unanswered.add(key)

    def delete(self, key: str, rng: random.Random) -> None:
        outcome, response = self._send(key, partial(self.s3.delete_object, Bucket=self.bucket, Key=key), None)
        if self.versioned:
            versions = self.versions[key]
            if outcome == "answered":
                versions.markers.add(response["VersionId"])
                versions.newest = response["VersionId"]
            elif outcome == "unanswered":
                versions.unknown_markers += 1

    def delete_version(self, key: str, rng: random.Random) -> None:
        """Delete an older version for good (never the newest answered one: the latest stays as modelled)."""
        versions = self.versions[key]
        older = sorted(v for v in versions.live if v != versions.newest)
        if not older:
            return
        version_id = rng.choice(older)
        outcome, _ = self._send(key, partial(self.s3.delete_object, Bucket=self.bucket, Key=key, VersionId=version_id))
        if outcome == "answered":
            versions.gone.add(version_id)
            del versions.live[version_id]
        elif outcome == "unanswered":
            versions.maybe_gone[version_id] = versions.live.pop(version_id)

    def check(self, key: str, rng: random.Random) -> None:
        """Read the latest version (and a range of it): it must be one of the states the key may be in."""
        model, generation = self.keys[key], self.chaos.generation
        body = self._get(key)
        if body is FAILED:
            return
        if not model.observe(digest(body), generation):
            self.violations.append(f"{self.bucket}/{key}: reads {_describe(body)}, expected {model.describe()}")
            return
        settled = model.states[0] if len(model.states) == 1 else None
        if settled is not None and settled.size > 1 and rng.random() < 0.5:
            start = rng.randrange(settled.size - 1)
            end = rng.randrange(start, min(settled.size, start + 2 * MIB))
            part = self._get(key, Range=f"bytes={start}-{end}")
            if part is not FAILED and part != settled.body()[start : end + 1]:
                self.violations.append(f"{self.bucket}/{key}: bytes {start}-{end} read {_describe(part)}, not "
                                       f"those of {settled.size} bytes (seed {settled.seed})")  # fmt: skip

    def check_version(self, key: str, rng: random.Random) -> None:
        versions = self.versions[key]
        pool = [(v, {d}) for v, d in versions.live.items()] + [(v, {d, None}) for v, d in versions.maybe_gone.items()]
        pool += [(v, {None}) for v in versions.gone]
        if pool:
            version_id, allowed = rng.choice(sorted(pool, key=lambda item: item[0]))
            self._check_version(key, version_id, allowed)

    def _check_version(self, key: str, version_id: str, allowed: set[str | None]) -> None:
        body = self._get(key, VersionId=version_id)
        if body is not FAILED and digest(body) not in allowed:
            expected = " or ".join("gone" if d is None else "its bytes" for d in allowed)
            self.violations.append(f"{self.bucket}/{key} version {version_id}: reads {_describe(body)}, "
                                   f"expected {expected}")  # fmt: skip

    # after the chaos ------------------------------------------------------------------------------

    def abort_leftover_uploads(self) -> int:
        """Only multipart uploads the server died under may be left open; abort them (their parts become garbage)."""
        paginator = self.s3.get_paginator("list_multipart_uploads")
        uploads = [u for page in paginator.paginate(Bucket=self.bucket) for u in page.get("Uploads", [])]
        for upload in uploads:
            if upload["Key"] not in self.multipart_unanswered:
                self.violations.append(f"{self.bucket}/{upload['Key']}: multipart upload {upload['UploadId']} "
                                       "left open although every upload of that key was answered")  # fmt: skip
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        return len(uploads)

    def verify(self) -> None:
        """Every key (and version) as the answered requests say; the server is up and left alone meanwhile."""
        for key in self.keys:
            self.check(key, random.Random(key))
        if self.versioned:
            self._verify_versions()
        else:
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
            listed = {o["Key"] for page in pages for o in page.get("Contents", [])}
            present = {k for k, m in self.keys.items() if m.states != [None]}
            if listed != present:
                self.violations.append(f"{self.bucket}: listing shows {sorted(listed)}, present are {sorted(present)}")

    def _verify_versions(self) -> None:
        listed: dict[str, dict[str, str]] = defaultdict(dict)  # key -> version id -> "version" | "marker"
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            for entry in page.get("Versions", []):
                listed[entry["Key"]][entry["VersionId"]] = "version"
            for entry in page.get("DeleteMarkers", []):
                listed[entry["Key"]][entry["VersionId"]] = "marker"
        for key, versions in self.versions.items():
            seen = listed.pop(key, {})
            lost = [v for v in versions.live if seen.get(v) != "version"]
            lost += [v for v in versions.markers if seen.get(v) != "marker"]
            if lost:
                self.violations.append(f"{self.bucket}/{key}: answered versions/markers not listed: {lost}")
            unknown_markers = versions.unknown_markers
            for version_id, kind in seen.items():
                if version_id in versions.gone:
                    self.violations.append(f"{self.bucket}/{key}: deleted version {version_id} is listed again")
                elif kind == "marker" and version_id not in versions.markers:
                    unknown_markers -= 1
                    if unknown_markers < 0:
                        self.violations.append(f"{self.bucket}/{key}: delete marker {version_id} no DELETE made")
                elif kind == "version" and version_id not in versions.live and version_id not in versions.maybe_gone:
                    self._check_version(key, version_id, versions.unknown_bodies)
            for version_id, body_digest in versions.live.items():
                self._check_version(key, version_id, {body_digest})
            for version_id, body_digest in versions.maybe_gone.items():
                self._check_version(key, version_id, {body_digest, None})
            for version_id in versions.gone:
                self._check_version(key, version_id, {None})
        if listed:
            self.violations.append(f"{self.bucket}: keys nobody wrote are listed: {sorted(listed)}")


def _describe(body: bytes | None) -> str:
    return "nothing (404)" if body is None else f"{len(body)} bytes (sha256 {digest(body)[:12]})"


# damage and healing --------------------------------------------------------------------------------


@dataclass
class Healing:
    """Self-healing progress, from one snapshot of the metadata."""

    backlog: int  # shards queued for repair (or moves)
    walking: int  # drive jobs still queueing a failed or draining drive's shards
    unretired: int  # failed or draining drives something still refers to
    scrubbed_at: float  # start of the last finished scrub pass (wall clock)

    @property
    def settled(self) -> bool:
        return self.backlog == self.walking == self.unretired == 0


def healing(server) -> Healing:
    (row,) = query(server, "SELECT (SELECT COUNT(*) FROM repair_queue), "
                           "(SELECT COUNT(*) FROM drive_jobs WHERE finished = 0), "
                           "(SELECT COUNT(*) FROM drives WHERE state IN ('failed', 'draining')), "
                           "(SELECT value FROM settings WHERE name = 'scrub.state')")  # fmt: skip
    last_scrub = json.loads(row[3] or "{}").get("last", {})
    return Healing(row[0], row[1], row[2], last_scrub.get("started", 0.0))


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
        admin(self.server, "drive", "replace", str(drive))

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


def drive_directories(server) -> dict[str, Path]:
    """Drive id -> directory, from the format file in each drive directory."""
    return {json.loads((d / "apollo-drive.json").read_text())["drive_id"]: d for d in server.drives}


def shard_path(directory: Path, pg: int, segment_id: str, index: int) -> Path:
    return directory / "shards" / f"{pg:04x}" / f"{segment_id}.{index}"


def referenced_shards(server) -> tuple[set[Path], list[str]]:
    """The shard files the segments table names, and the shards it names on no present drive."""
    directory = drive_directories(server)
    expected, unplaced = set(), []
    for (raw,) in query(server, "SELECT layout FROM segments"):
        layout = json.loads(raw)
        for index, drive_id in enumerate(layout["drives"]):
            if drive_id in directory:
                expected.add(shard_path(directory[drive_id], layout["pg"], layout["segment_id"], index))
            else:
                unplaced.append(f"{layout['segment_id']}.{index} on {drive_id or 'no drive'}")
    return expected, unplaced


def missing_shards(server) -> list[str]:
    """Referenced shard files not on their drive, in two looks a second apart (a move that commits between
    reading the layouts and looking at the files is no loss)."""

    def look() -> set[Path]:
        expected, _ = referenced_shards(server)
        return {path for path in expected if not path.exists()}

    first = look()
    time.sleep(1.0)
    return sorted(map(str, first & look()))


def damaged_shards(server) -> list[str]:
    """Referenced shard files that do not verify on their own: header naming the shard, zero padding, every cell
    record's CRC32C, footer. Read from the files with the format's primitives, not by asking the scrubber; a
    finding is confirmed by a second look (a move may commit between reading a layout and reading its file)."""
    first = _unverified_shards(server)
    if first:
        time.sleep(1.0)
        first &= _unverified_shards(server)
    return sorted(first)


def _unverified_shards(server) -> set[str]:
    directory = drive_directories(server)
    found = set()
    for (raw,) in query(server, "SELECT layout FROM segments"):
        layout = SegmentLayout.from_json(json.loads(raw))
        geometry = ShardGeometry(layout)
        for index, drive_id in enumerate(layout.drives):
            where = directory.get(drive_id)
            try:
                data = shard_path(where, layout.pg, layout.segment_id, index).read_bytes() if where else b""
                header, records, footer = data[:HEADER_BYTES], data[HEADER_BYTES:], data[geometry.records_end :]
                intact = (decode_header(header)["shard"] == index and header_padding_is_zero(header)
                          and decode_footer(footer)["length"] == layout.length
                          and None not in geometry.split(records, 0, layout.stripe_count))  # fmt: skip
            except (ApolloError, OSError, ValueError, KeyError, struct.error):  # a flipped length field, say
                intact = False
            if not intact:
                found.add(f"{layout.segment_id}.{index} on {drive_id}")
    return found


def settle(server, problems: list[str], when: str) -> None:
    """Wait until repair is done (the backlog empty, walks done, failed drives retired): `repair --wait`, bounded."""
    try:
        wait_until(lambda: healing(server).settled, SETTLE_TIMEOUT_S, f"self-healing to settle {when}")
    except AssertionError as exc:
        problems.append(f"{exc}: {healing(server)}\n{admin(server, 'status', check=False).stdout}")


def scrub_problems(server) -> int:
    done = admin(server, "scrub", "--now", "--wait").stdout
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


def _run_chaos(server) -> tuple[Chaos, list[Workload]]:
    """Requests flow in both buckets while the driver kills, wipes and corrupts."""
    # Scrub every 10 s during the chaos, so flipped bits nobody reads are found (and count as healed).
    admin(server, "scrub", "--interval", "10", "--rate", "0", "--mode", "deep")
    chaos = Chaos(server)
    s3 = chaos.client()
    for bucket in ("plain", "versioned"):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    seeds = random.Random(SEED)
    workloads = [Workload(chaos, "plain", False, seeds.getrandbits(64)),
                 Workload(chaos, "versioned", True, seeds.getrandbits(64))]  # fmt: skip
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


def _check_end_state(chaos: Chaos, workloads: list[Workload]) -> None:
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
    sweep = admin(server, "gc", "--now", "--wait", "--min-age", "0").stdout.strip().splitlines()[-1]
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


# what the chaos found, each pinned down on its own ----------------------------------------------------


def test_a_drive_replaced_before_the_server_noticed_the_wipe_keeps_its_rebuilt_shards(make_server):
    server = make_server(drives=7)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = write_objects(s3, "data", seed=61)
    for n in range(30):
        s3.put_object(Bucket="data", Key=f"more-{n}", Body=random.Random(n).randbytes(300_000))

    # Wipe a drive and replace it at the same path within milliseconds, as a quick disk swap does: the server's
    # probe (every 2 s) never sees the drive gone. Retried on another drive if a probe fell in between after all.
    for victim in server.drives[:3]:
        old_id = json.loads((victim / "apollo-drive.json").read_text())["drive_id"]
        wiped = victim.with_name(f"{victim.name}-wiped")
        victim.rename(wiped)
        victim.mkdir()
        store = open_store(server.meta_dir)
        replace_drive(store, str(victim), None)
        store.close()
        shutil.rmtree(wiped)
        wait_until(lambda: healing(server).settled, 60, "the replaced drive's shards to be rebuilt")
        seen_wiped = re.search(rf"detached drive {old_id} \(.*\): its format file is gone", server.log_path.read_text())
        if not seen_wiped:  # the probe found the drive replaced, never wiped: the race ran
            break
    else:
        pytest.fail("a probe saw every wiped drive before its replacement: the race was never run")

    # Repair says it is done; every shard it rebuilt must be on the replacement.
    assert missing_shards(server) == []
    assert_all_exact(s3, "data", objects)


def test_a_segment_with_m_damaged_shards_and_a_third_being_moved_is_repaired(make_server):
    """It stalled for ever ("only 3 good cells in a stripe, need 4") until moving shards counted as decode sources."""
    server = make_server(drives=7)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = write_objects(s3, "data", seed=71)
    pause_repair(server)

    # Flip a cell bit in two shards of one segment and let a scrub queue them; drain the drive of a third,
    # healthy shard, so its move is queued beside them.
    (raw,) = query(server, "SELECT layout FROM segments ORDER BY segment_id LIMIT 1")[0]
    layout = json.loads(raw)
    directory = drive_directories(server)
    for index in (0, 1):
        path = shard_path(directory[layout["drives"][index]], layout["pg"], layout["segment_id"], index)
        with open(path, "r+b") as shard:
            shard.seek(HEADER_BYTES + 100)
            flipped = shard.read(1)[0] ^ 1
            shard.seek(HEADER_BYTES + 100)
            shard.write(bytes([flipped]))
    admin(server, "scrub", "--now", "--wait")
    admin(server, "drive", "drain", str(directory[layout["drives"][2]]))

    def queued() -> int:
        return query(server, "SELECT COUNT(*) FROM repair_queue WHERE segment_id = ?", (layout["segment_id"],))[0][0]

    wait_until(lambda: queued() == 3, 30, "the drain walk to queue the move")

    # Four shards are readable, so the repair has all it needs: both damaged shards rebuilt, the third moved.
    admin(server, "repair", "--resume")
    wait_until(lambda: queued() == 0, 20, "the segment to be repaired")
    assert missing_shards(server) == []
    assert_all_exact(s3, "data", objects)
