"""kill -9 the server in the middle of uploads: every acknowledged object survives
byte-exact, nothing half-written is ever visible, and nothing leaks.

Writers run in threads with their own boto3 clients and a seeded payload per
attempt, so after the crash the test knows, for every key, the bytes of the
last acknowledged write and of the write that was in flight. A key must hold
one of those two exactly (or be absent if nothing was acknowledged).
"""

from __future__ import annotations

import io
import random
import threading
import time

import pytest
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from apollo.testing.s3error import error_of, s3_error

MULTIPART = TransferConfig(multipart_threshold=5 * 1024**2, multipart_chunksize=5 * 1024**2, max_concurrency=2)
MIB = 1024**2


def _payload(seed: int) -> bytes:
    rng = random.Random(seed)
    return rng.randbytes(rng.choice([100, 20_000, 700_000, 3 * MIB + 5, 9 * MIB + 1]))


class Writer(threading.Thread):
    """Overwrites a few keys again and again; remembers what was acknowledged and what is in flight."""

    def __init__(self, server, bucket: str, number: int, multipart: bool) -> None:
        super().__init__(daemon=True)
        self.s3 = server.s3()
        self.bucket, self.number, self.multipart = bucket, number, multipart
        self.acked: dict[str, int] = {}  # key -> seed of the last acknowledged payload
        self.in_flight: dict[str, int] = {}  # key -> seed of the payload being written when the server died
        self.stop = threading.Event()

    def run(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            key = f"w{self.number}/k{attempt % 3}"
            seed = self.number * 1_000_000 + attempt  # seed 0 is a real seed: compare with None, never truthiness
            self.in_flight[key] = seed
            try:
                if self.multipart:
                    body = _payload(seed) + random.Random(seed).randbytes(6 * MIB)
                    self.s3.upload_fileobj(io.BytesIO(body), self.bucket, key, Config=MULTIPART)
                else:
                    self.s3.put_object(Bucket=self.bucket, Key=key, Body=_payload(seed))
            except (ClientError, BotoCoreError, Boto3Error, OSError, ValueError):
                return  # the server is gone: this write stays "in flight"
            self.acked[key] = seed
            del self.in_flight[key]
            attempt += 1

    def expected(self, key: str, seed: int) -> bytes:
        body = _payload(seed)
        return body + random.Random(seed).randbytes(6 * MIB) if self.multipart else body


class Deleter(threading.Thread):
    """PUTs a fresh key and DELETEs it, again and again: an acknowledged delete must stay deleted."""

    def __init__(self, server, bucket: str) -> None:
        super().__init__(daemon=True)
        self.s3 = server.s3()
        self.bucket = bucket
        self.deleted: list[str] = []  # deletes acknowledged
        self.present: dict[str, bytes] = {}  # acknowledged PUT, delete not acknowledged (maybe in flight)
        self.in_flight_put: tuple[str, bytes] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            key, body = f"del/{n}", random.Random(n).randbytes(50_000)
            self.in_flight_put = (key, body)
            try:
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
                self.in_flight_put, self.present[key] = None, body
                self.s3.delete_object(Bucket=self.bucket, Key=key)
            except (ClientError, BotoCoreError, OSError, ValueError):
                return
            del self.present[key]
            self.deleted.append(key)
            n += 1


@pytest.mark.parametrize("seed", [11, 12])
def test_kill_minus_nine_during_uploads_keeps_every_acknowledged_write(make_server, seed):
    server = make_server(extra_args=["--gc-delay", "0"])
    s3 = server.s3()
    s3.create_bucket(Bucket="crash")
    writers = [Writer(server, "crash", n, multipart=(n == 0)) for n in range(4)]
    deleter = Deleter(server, "crash")
    for thread in [*writers, deleter]:
        thread.start()
    time.sleep(random.Random(seed).uniform(1.5, 3.5))
    server.kill()
    for thread in [*writers, deleter]:
        thread.stop.set()
        thread.join(30)
    assert sum(len(w.acked) for w in writers) > 0, "no write finished before the kill: the test proves nothing"
    assert deleter.deleted, "no delete finished before the kill: the test proves nothing"

    server.start()
    s3 = server.s3()
    assert server.tmp_files() == [], "temp files of interrupted writes survive a restart"
    for writer in writers:
        for key in set(writer.acked) | set(writer.in_flight):
            seeds = (writer.acked.get(key), writer.in_flight.get(key))
            allowed = [writer.expected(key, s) for s in seeds if s is not None]
            try:
                got = s3.get_object(Bucket="crash", Key=key)["Body"].read()
            except ClientError as exc:
                assert error_of(exc)[0] == "NoSuchKey"
                assert key not in writer.acked, f"acknowledged {key} is gone"
                continue
            assert any(got == body for body in allowed), f"{key}: {len(got)} bytes match no write"

    for key in deleter.deleted:
        with s3_error("404", note=f"acknowledged delete of {key} undone"):
            s3.head_object(Bucket="crash", Key=key)
    for key, body in [*deleter.present.items(), *([deleter.in_flight_put] if deleter.in_flight_put else [])]:
        try:  # delete (or put) in flight at the kill: the object is whole or gone
            assert s3.get_object(Bucket="crash", Key=key)["Body"].read() == body
        except ClientError as exc:
            assert error_of(exc)[0] == "NoSuchKey"

    # Everything written (acknowledged, interrupted, overwritten) must be collectable: no orphan shard remains.
    for upload in s3.list_multipart_uploads(Bucket="crash").get("Uploads", []):
        s3.abort_multipart_upload(Bucket="crash", Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="crash"):
        for entry in page.get("Contents", []):
            s3.delete_object(Bucket="crash", Key=entry["Key"])
    deadline = time.monotonic() + 30
    while server.shard_files() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert server.shard_files() == [], f"{len(server.shard_files())} orphan shard files after GC"
