"""Snapshots through the native client, on a cluster (PostgreSQL) and on ``apollo server`` (SQLite): taken
while four writers overwrite, create and delete keys under the prefix, a snapshot reads exactly the state of
one instant within its call, survives the deletion of every live key, and once deleted its data leaves the
drives."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import pytest
from deployments import Target, deployment

from apollo import errors
from apollo.client import BatchItem
from apollo.testing.admin import admin

BUCKET = "snapshots"
USER, SECRET = "snapshot-user", "snapshot-user-secret-key"
KEYS = [f"ds/{n:03d}" for n in range(60)]


@pytest.fixture(params=["cluster", "server"])
def target(request, make_cluster, make_server) -> Target:
    return deployment(request.param, make_cluster, make_server, USER, SECRET, meta_args=("--gc-delay", "0"))


@dataclass
class Write:
    """One writer call on a key: its bytes (None: a delete) and when the call began and returned."""

    key: str
    body: bytes | None
    began: float
    ended: float


def body_of(key: str, serial: int, rng: random.Random) -> bytes:
    """Bytes that name their write; small ones are inline in the metadata, larger ones in a segment."""
    head = f"{key}#{serial}#".encode()
    return head + rng.randbytes(rng.choice([100, 5_000, 70_000]))


def could_be_at_one_instant(writes: list[Write], seen: bytes | None, began: float, ended: float) -> bool:
    """Whether ``seen`` (None: absent) can be a key's state at one instant of ``[began, ended]``: a write
    of it that may have committed by ``ended`` and no other write surely committed after it and before ``began``."""
    for candidate in writes:
        if candidate.body != seen or candidate.began > ended:
            continue
        if not any(other.began > candidate.ended and other.ended < began for other in writes):
            return True
    return False


def test_a_snapshot_under_four_writers_reads_one_instant_after_every_live_key_is_gone(target, seed):
    rng = random.Random(seed)
    history: dict[str, list[Write]] = {key: [Write(key, None, -1.0, -1.0)] for key in KEYS}
    with target.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
        for key in KEYS[:40]:
            body = body_of(key, 0, rng)
            began = time.time()
            client.put(BUCKET, key, body)
            history[key].append(Write(key, body, began, time.time()))
        stop = threading.Event()
        failures: list[BaseException] = []
        lock = threading.Lock()

        def writer(number: int) -> None:
            writer_rng = random.Random(seed + number)
            try:
                with target.native(USER, SECRET) as own:
                    serial = 0
                    while not stop.is_set():
                        serial += 1
                        key = writer_rng.choice(KEYS)
                        body = None if writer_rng.random() < 0.25 else body_of(key, number * 100_000 + serial,
                                                                                writer_rng)  # fmt: skip
                        began = time.time()
                        if body is None:
                            own.delete(BUCKET, key)
                        else:
                            own.put(BUCKET, key, body)
                        with lock:
                            history[key].append(Write(key, body, began, time.time()))
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failures.append(exc)

        threads = [threading.Thread(target=writer, args=(number,)) for number in range(1, 5)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        began = time.time()
        snap = client.snapshot(BUCKET, "ds/")
        ended = time.time()
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join()
        assert not failures, failures
        writes = sum(len(h) - 1 for h in history.values())
        assert writes > 100, f"only {writes} writes: the writers did not overlap the snapshot"

        for entry in client.list(BUCKET, "ds/"):  # every live key goes: the snapshot alone keeps its bytes
            client.delete(BUCKET, entry.key)
        listed = {entry.key: entry for entry in client.list(BUCKET, snapshot=snap.snapshot_id)}
        assert len(listed) == snap.objects and sum(e.size for e in listed.values()) == snap.bytes
        results = list(client.get_batch([BatchItem(BUCKET, key, snapshot=snap.snapshot_id) for key in KEYS]))
        for key, result in zip(KEYS, results, strict=True):
            seen = result.data if result.ok else None
            if not result.ok:
                assert isinstance(result.error, errors.ObjectNotFound) and key not in listed
            else:
                assert listed[key].size == len(seen)
            assert could_be_at_one_instant(history[key], seen, began, ended), (key, seen and seen[:30])
        some = next(key for key in KEYS if key in listed)
        assert client.get(BUCKET, some, 3, 9, snapshot=snap.snapshot_id) == results[KEYS.index(some)].data[3:9]

        held = len(target.shard_files())
        assert held > 0
        with pytest.raises(errors.BucketNotEmpty):
            client.delete_bucket(BUCKET)
        other = client.snapshot(BUCKET, "nothing-here/")
        listed_by_admin = admin("snapshot", "list", **target.where)
        line = next(line for line in listed_by_admin.splitlines() if line.startswith(snap.snapshot_id))
        assert f" {snap.objects} " in line and USER in line and f" {snap.objects} ({snap.bytes} B)" in line
        assert other.snapshot_id in listed_by_admin
        admin("snapshot", "delete", BUCKET, other.snapshot_id, **target.where)  # any key's, for an operator
        assert [s.snapshot_id for s in client.snapshots(BUCKET)] == [snap.snapshot_id]
        client.delete_snapshot(BUCKET, snap.snapshot_id)
        deadline = time.monotonic() + 30
        while target.shard_files() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert target.shard_files() == [], f"{held} shard files held by the snapshot were not collected"
        with pytest.raises(errors.SnapshotNotFound):
            client.get(BUCKET, some, snapshot=snap.snapshot_id)
        client.delete_bucket(BUCKET)
