"""``apollo admin recover-metadata``: lose the metadata database, rebuild it from the drives, get everything back.

Every test runs real servers, writes through boto3, deletes ``apollo.db`` (and its WAL)
and recovers from the drive directories alone; the namespace after recovery must be
identical: listings, bytes, ETags, headers, tags, checksums, uploads in progress.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from apollo.testing.admin import admin, admin_refused, run_admin
from apollo.testing.s3error import s3_error

MiB = 1024**2
MULTIPART = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)


def recover_args(server, *extra: str) -> tuple:
    """``apollo admin recover-metadata`` over the server's metadata directory and drives."""
    return ("recover-metadata", "--meta-dir", server.meta_dir, *extra, *server.drives)


def lose_database(server) -> None:
    for name in ("apollo.db", "apollo.db-wal", "apollo.db-shm"):
        (server.meta_dir / name).unlink(missing_ok=True)


def lose_and_recover(server) -> subprocess.CompletedProcess:
    """Delete a stopped server's database and rebuild it from the drives; the report is printed."""
    lose_database(server)
    done = run_admin(*recover_args(server), check=True)  # the report on stdout, progress bars on stderr
    print(done.stdout)
    return done


def create_key(server) -> tuple[str, str]:
    """An access key made the way an operator makes one: ``apollo admin key create`` beside the running server."""
    done = admin("key", "create", meta_dir=server.meta_dir)
    return re.search(r"access key: (\S+)", done)[1], re.search(r"secret key: (\S+)", done)[1]


def client_with(server, access: str, secret: str):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(retries={"max_attempts": 1}))  # fmt: skip


def write_dataset(client, rng: random.Random, tag: str) -> dict:
    """Every kind of thing the namespace holds; returns the upload left open and what was deleted."""
    plain, versioned = f"plain-{tag}", f"versioned-{tag}"
    client.create_bucket(Bucket=plain)
    client.put_object(Bucket=plain, Key="inline.txt", Body=rng.randbytes(5000), ContentType="text/plain",
                      Metadata={"owner": "ana"}, Tagging="team=ml&stage=raw", ChecksumAlgorithm="SHA256")  # fmt: skip
    client.put_object(Bucket=plain, Key="empty", Body=b"")
    client.put_object(Bucket=plain, Key="big.bin", Body=rng.randbytes(3 * MiB + 5), Metadata={"shard": "7"},
                      ContentType="application/x-tensor", ChecksumAlgorithm="CRC32")  # fmt: skip
    client.upload_fileobj(io.BytesIO(rng.randbytes(6 * MiB + 3)), plain, "multi.bin", Config=MULTIPART,
                          ExtraArgs={"Metadata": {"kind": "ckpt"}})  # fmt: skip
    client.put_object(Bucket=plain, Key="gone", Body=b"deleted soon")
    client.delete_object(Bucket=plain, Key="gone")
    upload = client.create_multipart_upload(Bucket=plain, Key="open.bin", Metadata={"left": "open"})["UploadId"]
    client.upload_part(Bucket=plain, Key="open.bin", UploadId=upload, PartNumber=1, Body=rng.randbytes(MiB))
    client.create_bucket(Bucket=versioned)
    client.put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
    for size in (3000, 300_000, 100):
        client.put_object(Bucket=versioned, Key="doc", Body=rng.randbytes(size), Metadata={"size": str(size)})
    client.delete_object(Bucket=versioned, Key="doc")  # a delete marker on top
    first = client.put_object(Bucket=versioned, Key="model", Body=rng.randbytes(2 * MiB), Tagging="v=1")
    client.put_object(Bucket=versioned, Key="model", Body=rng.randbytes(MiB), Tagging="v=2")
    client.delete_object(Bucket=versioned, Key="model", VersionId=first["VersionId"])  # a version deleted for good
    client.put_object_tagging(Bucket=versioned, Key="model", Tagging={"TagSet": [{"Key": "v", "Value": "2b"}]})
    gone = [(plain, "gone", None), (versioned, "model", first["VersionId"])]
    return {"open": (plain, "open.bin", upload), "gone": gone}


def namespace(client) -> dict:
    """Everything a client can observe, bucket by bucket: versions with bytes and headers, markers, uploads."""
    found = {}
    for bucket in sorted(b["Name"] for b in client.list_buckets()["Buckets"]):
        entries = {"versioning": client.get_bucket_versioning(Bucket=bucket).get("Status")}
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for v in page.get("Versions", []):
                got = client.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"], ChecksumMode="ENABLED")
                tags = client.get_object_tagging(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["TagSet"]
                headers = {k: got[k] for k in ("ETag", "ContentType", "ContentLength", "LastModified", "Metadata")}
                headers |= {k: got[k] for k in got if k.startswith("Checksum")}
                entries[v["Key"], v["VersionId"]] = (
                    {k: v[k] for k in ("ETag", "Size", "LastModified", "IsLatest")}, headers,
                    hashlib.sha256(got["Body"].read()).hexdigest(), sorted((t["Key"], t["Value"]) for t in tags),
                )  # fmt: skip
            for m in page.get("DeleteMarkers", []):
                entries[m["Key"], m["VersionId"]] = ("delete marker", m["IsLatest"], m["LastModified"])
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])["Parts"]
            entries["upload", upload["Key"], upload["UploadId"]] = (upload["Initiated"], parts)
        found[bucket] = entries
    return found


def assert_deleted_stays_deleted(client, gone: list[tuple[str, str, str | None]]) -> None:
    for bucket, key, version in gone:
        with s3_error(("NoSuchKey", "NoSuchVersion")):
            client.get_object(Bucket=bucket, Key=key, **({"VersionId": version} if version else {}))


def complete_open_upload(client, bucket: str, key: str, upload: str) -> None:
    etag = client.list_parts(Bucket=bucket, Key=key, UploadId=upload)["Parts"][0]["ETag"]
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})  # fmt: skip
    assert len(client.get_object(Bucket=bucket, Key=key)["Body"].read()) == MiB


def recovered_counts(output: str) -> tuple[int, int]:
    """(checkpoint seq, commits replayed) from the summary."""
    checkpoint = re.search(r"journal seq ([\d,]+)\)", output)
    replayed = re.search(r"journal +([\d,]+) commits replayed", output)
    return int(checkpoint[1].replace(",", "")) if checkpoint else 0, int(replayed[1].replace(",", ""))


def journal_seq(server) -> int:
    with sqlite3.connect(f"{(server.meta_dir / 'apollo.db').as_uri()}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT value FROM settings WHERE name = 'journal.seq'").fetchone()[0])


def newest_checkpoint_seq(server) -> int:
    """The newest finished checkpoint (``checkpoint-new.db`` is one being written)."""
    names = [p.name for d in server.drives for p in (d / "meta-journal").glob("checkpoint-*.db")]
    return max((int(m[1]) for n in names if (m := re.fullmatch(r"checkpoint-(\d+)\.db", n))), default=-1)


def test_recover_after_a_clean_stop_and_again_after_kill_9(make_server, seed):
    server = make_server()
    client = server.s3()
    rng = random.Random(seed)
    access, secret = create_key(server)
    first = write_dataset(client, rng, "one")
    before = namespace(client)

    server.stop()
    done = lose_and_recover(server)
    assert "there was no previous database" in done.stdout and "LOST" not in done.stdout
    assert "0 degraded (readable), 0 unreadable; 0 missing shards" in done.stdout
    assert "journal records" in done.stderr and "segments" in done.stderr  # the progress bars
    server.start()
    client = server.s3()
    assert namespace(client) == before
    assert_deleted_stays_deleted(client, first["gone"])
    assert client_with(server, access, secret).list_buckets()["Buckets"]  # the key made by the CLI works

    # More writes on the recovered database, then kill -9 right after the last one: nothing acknowledged is lost.
    second = write_dataset(client, rng, "two")
    client.put_object(Bucket="versioned-one", Key="doc", Body=b"after the first recovery")
    client.delete_object(Bucket="plain-one", Key="inline.txt")
    before = namespace(client)
    server.kill()
    done = lose_and_recover(server)
    assert "LOST" not in done.stdout
    server.start()
    client = server.s3()
    assert namespace(client) == before
    assert_deleted_stays_deleted(client, second["gone"] + [("plain-one", "inline.txt", None)])
    for bucket, key, upload in (first["open"], second["open"]):
        complete_open_upload(client, bucket, key, upload)


def test_recover_from_a_checkpoint_taken_midway_plus_the_journal_after_it(make_server):
    server = make_server(extra_args=["--journal-checkpoint-interval", "1"])
    client = server.s3()
    rng = random.Random(7)
    write_dataset(client, rng, "early")
    written = journal_seq(server)
    deadline = time.monotonic() + 30
    while newest_checkpoint_seq(server) < written:  # a periodic checkpoint covering the first half
        assert time.monotonic() < deadline, "no checkpoint within 30 s"
        time.sleep(0.1)
    late = write_dataset(client, rng, "late")
    before = namespace(client)
    # Freeze the server once no checkpoint covers its last write, then kill it: recovery must replay the journal.
    last = {}
    while True:
        last[f"last/{len(last)}"] = body = rng.randbytes(100)
        client.put_object(Bucket="plain-late", Key=f"last/{len(last) - 1}", Body=body)
        server.process.send_signal(signal.SIGSTOP)
        if newest_checkpoint_seq(server) < journal_seq(server):
            break
        server.process.send_signal(signal.SIGCONT)
    final_seq, checkpoint_seq = journal_seq(server), newest_checkpoint_seq(server)
    server.kill()
    done = lose_and_recover(server)
    recovered_from, replayed = recovered_counts(done.stdout)
    assert written <= recovered_from == checkpoint_seq < final_seq
    assert replayed == final_seq - checkpoint_seq
    server.start()
    client = server.s3()
    after = namespace(client)
    after["plain-late"] = {k: v for k, v in after["plain-late"].items() if not k[0].startswith("last/")}
    assert after == before
    for key, body in last.items():
        assert client.get_object(Bucket="plain-late", Key=key)["Body"].read() == body
    complete_open_upload(client, *late["open"])


def test_recover_with_a_journal_drive_wiped(make_server):
    server = make_server()
    client = server.s3()
    rng = random.Random(11)
    opened = write_dataset(client, rng, "w")["open"]
    before = namespace(client)
    server.stop()
    journal_drives = sorted(d for d in server.drives if (d / "meta-journal").is_dir())
    assert len(journal_drives) == 3
    ids = {json.loads((d / "apollo-drive.json").read_text())["drive_id"]: d for d in server.drives}
    wiped = ids[min(ids)]  # the first journal drive: it holds a checkpoint, a journal copy and shards
    assert wiped in journal_drives
    shutil.rmtree(wiped)
    wiped.mkdir()
    done = lose_and_recover(server)
    assert f"skipped          {wiped}: no drive format file" in done.stdout
    assert "LOST" not in done.stdout and " 0 unreadable" in done.stdout
    assert int(re.search(r"([\d,]+) degraded", done.stdout)[1]) > 0  # 4+2 segments that had a shard there
    server.start()
    client = server.s3()
    assert namespace(client) == before  # degraded reads rebuild the wiped drive's shards
    complete_open_upload(client, *opened)


def test_recover_with_several_workers_merges_their_journals_in_commit_order(make_server):
    server = make_server(extra_args=["--workers", "2"])
    server.s3().create_bucket(Bucket="versioned")
    server.s3().put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    server.s3().create_bucket(Bucket="plain")  # an overwrite deletes the previous row: replay order matters

    def writer(n: int) -> None:  # one connection per thread: the kernel spreads them over the workers
        client = server.s3()
        for i in range(30):  # the same few keys from every thread
            for bucket in ("versioned", "plain"):
                client.put_object(Bucket=bucket, Key=f"k{i % 5}", Body=f"{n}-{i}".encode() * (i + 1))
                if i % 7 == n:
                    client.delete_object(Bucket=bucket, Key=f"k{i % 5}")

    def workers_that_wrote() -> set[str]:
        writing = set()
        for path in (p for d in server.drives for p in (d / "meta-journal").glob("journal-w*.jsonl")):
            records = [json.loads(line) for line in path.read_text().splitlines()]
            if any(c["table"] == "versions" for r in records for c in r["changes"]):
                writing.add(path.name.split("-")[1])
        return writing

    # Which worker accepts a connection is the kernel's choice: write until both have (bounded).
    for _ in range(5):
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(writer, range(6)))
        if workers_that_wrote() == {"w0", "w1"}:
            break
    assert workers_that_wrote() == {"w0", "w1"}  # both workers committed object writes
    before = namespace(server.s3())
    server.kill()
    done = lose_and_recover(server)
    assert "LOST" not in done.stdout
    server.start()
    assert namespace(server.s3()) == before


def test_recover_refuses_a_running_server_and_an_existing_database(make_server):
    server = make_server()
    server.s3().create_bucket(Bucket="kept")
    running = admin_refused(*recover_args(server))
    assert "in use by an Apollo server" in running, running
    server.stop()
    present = admin_refused(*recover_args(server))
    assert "apollo.db exists" in present and "--force" in present, present
    forced = admin(*recover_args(server, "--force"))
    kept = re.search(r"previous database kept as (\S+)", forced)[1]
    assert Path(kept).is_file()
    nothing = admin_refused("recover-metadata", "--meta-dir", server.root / "elsewhere", server.root / "not-a-drive")
    assert "none of the given directories is an Apollo drive" in nothing, nothing
    assert not (server.root / "elsewhere" / "apollo.db").exists()
    server.start()
    assert [b["Name"] for b in server.s3().list_buckets()["Buckets"]] == ["kept"]
