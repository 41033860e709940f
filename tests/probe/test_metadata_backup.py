"""``apollo admin backup-metadata`` / ``restore-metadata`` against a real server that keeps writing."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from apollo.meta.store import SqlStore
from apollo.testing.admin import admin, admin_refused, run_admin

MiB = 1024**2


def namespace(client, bucket: str) -> dict:
    """Every version and delete marker of a bucket, with bytes and attributes, by (key, version id)."""
    found = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            obj = client.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
            tags = client.get_object_tagging(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["TagSet"]
            found[v["Key"], v["VersionId"]] = (obj["Body"].read(), obj["ETag"], obj["Metadata"], obj["ContentType"],
                                               sorted((t["Key"], t["Value"]) for t in tags), v["IsLatest"])  # fmt: skip
        for marker in page.get("DeleteMarkers", []):
            found[marker["Key"], marker["VersionId"]] = ("delete marker", marker["IsLatest"])
    return found


def write_dataset(client, rng: random.Random) -> str:
    """Inline, multi-MiB, multipart, versions with a delete marker, tags, user metadata; one upload left open."""
    client.create_bucket(Bucket="plain")
    client.put_object(Bucket="plain", Key="inline.txt", Body=rng.randbytes(5000), ContentType="text/plain",
                      Metadata={"owner": "ana"}, Tagging="team=ml&stage=raw")  # fmt: skip
    client.put_object(Bucket="plain", Key="big.bin", Body=rng.randbytes(6 * MiB + 13), Metadata={"shard": "7"})
    upload = client.create_multipart_upload(Bucket="plain", Key="multi.bin", Metadata={"kind": "ckpt"},
                                            Tagging="step=100")["UploadId"]  # fmt: skip
    parts = []
    for number, size in enumerate([5 * MiB, 5 * MiB, MiB + 7], start=1):
        etag = client.upload_part(Bucket="plain", Key="multi.bin", UploadId=upload, PartNumber=number,
                                  Body=rng.randbytes(size))["ETag"]  # fmt: skip
        parts.append({"PartNumber": number, "ETag": etag})
    client.complete_multipart_upload(Bucket="plain", Key="multi.bin", UploadId=upload,
                                     MultipartUpload={"Parts": parts})  # fmt: skip
    open_upload = client.create_multipart_upload(Bucket="plain", Key="open.bin")["UploadId"]
    client.upload_part(Bucket="plain", Key="open.bin", UploadId=open_upload, PartNumber=1, Body=rng.randbytes(MiB))
    client.create_bucket(Bucket="versioned")
    client.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    for size in (3000, 300_000, 100):
        client.put_object(Bucket="versioned", Key="doc", Body=rng.randbytes(size), Metadata={"size": str(size)})
    client.delete_object(Bucket="versioned", Key="doc")
    client.put_object(Bucket="versioned", Key="model", Body=rng.randbytes(2 * MiB), Tagging="v=1")
    client.put_object(Bucket="versioned", Key="model", Body=rng.randbytes(2 * MiB), Tagging="v=2")
    return open_upload


class Writer(threading.Thread):
    """Keeps PUTting small objects, one after the other, remembering when each was acknowledged."""

    def __init__(self, client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.acked: list[tuple[str, bytes, float]] = []  # (key, body, monotonic time of the 200)
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        while not self.stop.is_set():
            key, body = f"during/{len(self.acked):05d}", rng.randbytes(rng.randint(1, 16_000))
            self.client.put_object(Bucket="plain", Key=key, Body=body)
            self.acked.append((key, body, time.monotonic()))


def test_backup_under_writes_then_restore_brings_back_that_moment(make_server, tmp_path, seed):
    server = make_server()
    client = server.s3()
    open_upload = write_dataset(client, random.Random(seed))
    before = {bucket: namespace(client, bucket) for bucket in ("plain", "versioned")}

    # Back up while a writer keeps committing (one page per step, so the copy spans many of its commits).
    writer = Writer(server.s3())
    writer.start()
    while len(writer.acked) < 200:  # a database of some size first
        time.sleep(0.05)
    backup_started = time.monotonic()
    done = run_admin("backup-metadata", "--meta-dir", server.meta_dir, tmp_path / "meta.bak", "--step-pages", "1",
                     timeout=120, check=True)  # fmt: skip
    backup_ended = time.monotonic()
    writer.stop.set()
    writer.join(30)
    assert "integrity check ok" in done.stdout and "buckets          2" in done.stdout
    assert "uploads          1 in progress" in done.stdout
    assert "pages" in done.stderr  # the progress bar
    assert not (tmp_path / "meta.bak.partial").exists()

    # After the backup: new objects, a new version, a delete. The restore must forget all of it.
    client.put_object(Bucket="plain", Key="after/big", Body=random.randbytes(3 * MiB))
    client.put_object(Bucket="plain", Key="after/small", Body=b"late")
    client.put_object(Bucket="versioned", Key="doc", Body=b"a fourth version")
    client.delete_object(Bucket="plain", Key="inline.txt")

    # While the server runs: no restore, no second backup onto the first.
    refused = admin_refused("restore-metadata", "--meta-dir", server.meta_dir, tmp_path / "meta.bak")
    assert "in use by an Apollo server" in refused, refused
    backup_bytes = (tmp_path / "meta.bak").read_bytes()
    again = admin_refused("backup-metadata", "--meta-dir", server.meta_dir, tmp_path / "meta.bak")
    assert "exists; pass --force" in again, again
    assert (tmp_path / "meta.bak").read_bytes() == backup_bytes

    # Lose the database, restore the backup, start again.
    server.stop()
    for name in ("apollo.db", "apollo.db-wal", "apollo.db-shm"):
        (server.meta_dir / name).unlink(missing_ok=True)
    restored = admin("restore-metadata", "--meta-dir", server.meta_dir, tmp_path / "meta.bak")
    assert "there was no previous database" in restored, restored
    server.start()
    client = server.s3()

    # Everything acknowledged before the backup started: same bytes, ETags, metadata, tags, versions, markers.
    assert namespace(client, "versioned") == before["versioned"]
    plain = namespace(client, "plain")
    assert {k: v for k, v in plain.items() if not k[0].startswith("during/")} == before["plain"]
    # The concurrent writes: one consistent cut of the writer's sequence, with every write acknowledged
    # before the backup started, none that began after it ended, each byte-exact.
    during = sorted(k for k, _ in plain if k.startswith("during/"))
    assert during == [key for key, _, _ in writer.acked[: len(during)]]
    assert len(during) >= sum(1 for _, _, acked in writer.acked if acked < backup_started)
    assert len(during) <= sum(1 for _, _, acked in writer.acked if acked < backup_ended) + 1
    for key, body, _ in writer.acked[: len(during)]:
        assert plain[key, "null"][0] == body
    # The upload left open before the backup completes with its part.
    uploads = client.list_multipart_uploads(Bucket="plain").get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("open.bin", open_upload)]
    etag = client.list_parts(Bucket="plain", Key="open.bin", UploadId=open_upload)["Parts"][0]["ETag"]
    client.complete_multipart_upload(Bucket="plain", Key="open.bin", UploadId=open_upload,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})  # fmt: skip
    assert len(client.get_object(Bucket="plain", Key="open.bin")["Body"].read()) == MiB


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_server_and_a_restore_are_refused_while_a_server_runs(make_server, tmp_path, workers):
    server = make_server(extra_args=["--workers", str(workers)])
    server.s3().create_bucket(Bucket="kept")
    admin("backup-metadata", "--meta-dir", server.meta_dir, tmp_path / "meta.bak")

    second = subprocess.Popen(
        [sys.executable, "-m", "apollo", "server", *map(str, server.drives), "--meta-dir", str(server.meta_dir),
         "--address", "127.0.0.1:0", "--dev"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        output, _ = second.communicate(timeout=30)
    finally:
        second.kill()
    assert second.returncode != 0
    assert f"metadata directory {server.meta_dir} is in use by an Apollo server" in output
    refused = admin_refused("restore-metadata", "--meta-dir", server.meta_dir, tmp_path / "meta.bak")
    assert "in use by an Apollo server" in refused, refused
    server.s3().put_object(Bucket="kept", Key="still-serving", Body=b"yes")  # the first one was not disturbed

    # kill -9 drops the lock too, and leaves a WAL behind: the restore keeps it with the database it replaces
    # (replayed onto the restored file, it would corrupt it).
    server.kill()
    assert (server.meta_dir / "apollo.db-wal").stat().st_size > 0
    restored = admin("restore-metadata", "--meta-dir", server.meta_dir, tmp_path / "meta.bak")
    [kept] = server.meta_dir.glob("apollo.db.before-restore-*[0-9Z]")
    assert f"previous database kept as {kept}" in restored, restored
    with sqlite3.connect(kept) as conn:
        assert conn.execute("SELECT COUNT(*) FROM versions WHERE key = 'still-serving'").fetchone()[0] == 1
    server.start()
    assert [b["Name"] for b in server.s3().list_buckets()["Buckets"]] == ["kept"]
    assert server.s3().list_objects_v2(Bucket="kept").get("Contents", []) == []

    # Undo: the set-aside database, read with its WAL, is itself a backup.
    server.stop()
    admin("restore-metadata", "--meta-dir", server.meta_dir, kept)
    server.start()
    assert server.s3().get_object(Bucket="kept", Key="still-serving")["Body"].read() == b"yes"


def _not_apollo(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")


def _truncated_backup(path: Path) -> None:
    store = SqlStore(path.with_name("whole.db"))
    for n in range(300):
        store.set_setting(f"padding{n}", "x" * 2000)  # several pages, so that cutting the file loses some
    store.close()
    data = path.with_name("whole.db").read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        (lambda p: p.write_text("not a database"), "file is not a database"),
        (_not_apollo, "not an Apollo metadata database"),
        (_truncated_backup, "malformed"),
    ],
)
def test_restore_refuses_a_bad_source_and_changes_nothing(tmp_path, make_source, message):
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    SqlStore(meta_dir / "apollo.db").close()
    current = (meta_dir / "apollo.db").read_bytes()
    source = tmp_path / "source.db"
    make_source(source)
    refused = admin_refused("restore-metadata", "--meta-dir", meta_dir, source)
    assert message in refused, refused
    assert sorted(p.name for p in meta_dir.iterdir()) == ["apollo.db", "apollo.lock"]
    assert (meta_dir / "apollo.db").read_bytes() == current


def test_a_failed_backup_leaves_no_file(tmp_path):
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    _not_apollo(meta_dir / "apollo.db")
    refused = admin_refused("backup-metadata", "--meta-dir", meta_dir, tmp_path / "meta.bak")
    assert "not an Apollo metadata database" in refused, refused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta"]
