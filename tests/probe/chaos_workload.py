"""The request side of the seeded chaos run (test_chaos.py): PUTs, overwrites, DELETEs and multipart uploads
in one bucket, with a model of what every key (and version) may hold given which requests were answered.

``Chaos`` is the server under test as the workload threads see it: it dies (kill -9) and comes back, and
a request sent to a process that died may or may not have happened.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from apollo.testing.s3error import error_of

MIB = 1024**2
MULTIPART = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2)
SIZES: dict[str, Callable[[random.Random], int]] = {
    "small": lambda rng: rng.randrange(16 * 1024),  # inline in the metadata row
    "medium": lambda rng: rng.randint(100 * 1024, 3 * MIB),
    "large": lambda rng: 9 * MIB + rng.randrange(64 * 1024),
    "multipart": lambda rng: rng.randint(6 * MIB, 11 * MIB),  # two or three parts
}
PLAIN_OPS = {"put_small": 3, "put_medium": 4, "put_large": 0.5, "multipart": 1, "delete": 2, "check": 3}
VERSIONED_OPS = {"put_small": 3, "put_medium": 3, "put_large": 0.3, "delete": 1.5, "delete_version": 2, "check": 3,
                 "check_version": 2}  # fmt: skip
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


class ChaosWorkload(threading.Thread):
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
            code = error_of(exc)[0]
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
            if error_of(exc)[1] == 404:
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
