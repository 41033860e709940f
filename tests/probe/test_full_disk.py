"""Full disks, for real: drives and metadata on size-limited tmpfs mounts the tests create.

Each scenario fills a filesystem (with objects, or with a filler file beside the
drive directory) and checks what a client sees: ``507 InsufficientStorage``,
fast and never a 500; no temp file, no partial object; earlier objects intact;
and writes working again once space is freed, without a restart. Mounting needs
root (as in CI); elsewhere the tests skip and say why.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import random
import re
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from apollo.testing.s3error import S3ErrorCaught, s3_error
from apollo.testing.server import ServerProcess

MIB = 1024**2
FAST_FAILURE_S = 0.5  # a refused PUT answers at once: no timeout, no retry loop on the server
RECOVERY_S = 30.0  # GC runs every 5 s and the drive probe every 2 s


def _mount_tmpfs(path: Path, size_bytes: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs at {path}: {done.stderr.strip()}")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(drive_mib=[32] * 6, meta_mib=None, extra_args=[...])``: None is a plain directory.

    Each drive directory (and the metadata directory) sits one level below its mount point, so a
    test can put a filler file beside it. Servers are killed before anything is unmounted.
    """
    servers: list[ServerProcess] = []
    mounts: list[Path] = []

    def start(drive_mib: list[int | None], meta_mib: int | None = None, extra_args: tuple[str, ...] = ()):
        server = ServerProcess(tmp_path / f"server{len(servers)}", drives=len(drive_mib), extra_args=list(extra_args))
        roots = [server.root / f"mnt{n}" for n in range(1, len(drive_mib) + 1)]
        for root, size_mib in zip([*roots, server.root / "metamnt"], [*drive_mib, meta_mib], strict=True):
            if size_mib is not None:
                _mount_tmpfs(root, size_mib * MIB)
                mounts.append(root)
        server.drives = [root / "drive" for root in roots]
        server.meta_dir = server.root / "metamnt" / "meta"
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()
    stuck = [m for m in reversed(mounts) if subprocess.run(["umount", str(m)], capture_output=True).returncode]
    assert stuck == [], f"could not unmount {stuck}"


def _free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _fill(mount: Path, leave_bytes: int = 0) -> Path:
    """Take all but ``leave_bytes`` of a filesystem's free space with a filler file beside the drive."""
    filler = mount / f"filler-{len(list(mount.glob('filler-*')))}"
    with open(filler, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, _free_bytes(mount) - leave_bytes)
    return filler


def _unfill(mount: Path) -> None:
    for filler in mount.glob("filler-*"):
        filler.unlink()


def _drive_id(drive: Path) -> str:
    return json.loads((drive / "apollo-drive.json").read_text())["drive_id"]


def _metric(server: ServerProcess, name: str, drive_id: str) -> float:
    text = urllib.request.urlopen(f"{server.endpoint}/metrics").read().decode()
    return float(re.search(rf'^{name}{{drive="{drive_id}"}} ([0-9.e+]+)$', text, re.M).group(1))


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def _wait_for_probe(server: ServerProcess, drives: list[Path], below_bytes: int) -> None:
    """Until the server's drive probe has seen every one of ``drives`` below ``below_bytes`` free."""
    ids = [_drive_id(drive) for drive in drives]
    _wait_until(lambda: all(_metric(server, "apollo_drive_free_bytes", i) < below_bytes for i in ids), 10,
                f"the drive probe sees {len(ids)} drive(s) nearly full")  # fmt: skip


def _assert_no_tmp_files(server: ServerProcess) -> None:
    """Aborted writes leave nothing; polled, because the repair worker may be writing a shard right now."""
    _wait_until(lambda: server.tmp_files() == [], 5, f"temp files gone: {server.tmp_files()}")


def _assert_insufficient_storage(error: ClientError, message: str | None = None) -> None:
    S3ErrorCaught.of(error).check("InsufficientStorage", 507, message)


def _put(s3, key: str, body: bytes) -> ClientError | None:
    """PUT, returning the S3 error instead of raising it (any other failure raises)."""
    try:
        s3.put_object(Bucket="data", Key=key, Body=body)
    except ClientError as exc:
        return exc
    return None


def _timed_put(s3, key: str, body: bytes) -> tuple[ClientError | None, float]:
    started = time.monotonic()
    error = _put(s3, key, body)
    return error, time.monotonic() - started


def _assert_exact(s3, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        got = s3.get_object(Bucket="data", Key=key)["Body"].read()
        assert hashlib.md5(got).digest() == hashlib.md5(body).digest(), key


def _assert_absent(s3, key: str) -> None:
    with s3_error(status=404, note=key):
        s3.head_object(Bucket="data", Key=key)


def _shards_per_segment(server: ServerProcess) -> Counter:
    return Counter(path.name.rsplit(".", 1)[0] for path in server.shard_files())


def _put_until_accepted(s3, key: str, body: bytes) -> None:
    """Retry while space is being freed: every refusal on the way must be a clean 507."""
    deadline = time.monotonic() + RECOVERY_S
    while (error := _put(s3, key, body)) is not None:
        _assert_insufficient_storage(error)
        assert time.monotonic() < deadline, f"PUT still refused {RECOVERY_S} s after space was freed: {error}"
        time.sleep(0.5)


def test_full_drives_refuse_writes_fast_and_take_them_again_when_space_is_freed(start_server):
    server = start_server([32] * 6, extra_args=("--drive-reserve", "4MiB", "--gc-delay", "0"))
    pid = server.process.pid
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    rng = random.Random(1)

    # Fill the drives with 2 MiB objects (512 KiB per drive each) until a PUT is refused.
    stored: dict[str, bytes] = {}
    refused: ClientError | None = None
    for n in range(200):
        body = rng.randbytes(2 * MIB)
        refused = _put(s3, f"obj-{n}", body)
        if refused is not None:
            break
        stored[f"obj-{n}"] = body
    assert refused is not None, "6 x 32 MiB drives took 400 MiB of shards"
    _assert_insufficient_storage(refused)
    assert len(stored) >= 30  # the drives really were used up to about the reserve
    failed_key = f"obj-{len(stored)}"

    # From now on the refusal is immediate, and says why.
    for attempt in range(3):
        error, elapsed = _timed_put(s3, f"late-{attempt}", rng.randbytes(2 * MIB))
        assert error is not None, "a PUT was accepted on full drives"
        _assert_insufficient_storage(error, "space")
        assert elapsed < FAST_FAILURE_S, f"refusal took {elapsed:.2f} s"
        _assert_absent(s3, f"late-{attempt}")

    # Nothing partial: no temp files, no trace of the refused keys; every earlier object intact.
    _assert_absent(s3, failed_key)
    _assert_no_tmp_files(server)
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="data")["Contents"]) == sorted(stored)
    _assert_exact(s3, stored)

    # Free space by deleting objects: once GC has removed their shards, writes work again, same process.
    deleted = list(stored)[: len(stored) // 2]
    s3.delete_objects(Bucket="data", Delete={"Objects": [{"Key": key} for key in deleted]})
    for key in deleted:
        del stored[key]
    stored[failed_key] = rng.randbytes(2 * MIB)
    _put_until_accepted(s3, failed_key, stored[failed_key])
    assert server.process.poll() is None and server.process.pid == pid
    _assert_exact(s3, stored)


@pytest.mark.parametrize("drive_count", [6, 7])
def test_a_nearly_full_drive_gets_no_new_shards_and_writes_go_on(start_server, drive_count):
    # One small drive, the others plain directories; 4+2 either way (7 drives leave placement a spare).
    server = start_server([16] + [None] * (drive_count - 1), extra_args=("--drive-reserve", "8MiB"))
    small = server.drives[0]
    s3 = server.s3()
    s3.create_bucket(Bucket="data")

    # Leave 4 MiB on the small drive: below the reserve, but room for every shard this test writes.
    _fill(small.parent, leave_bytes=4 * MIB)
    _wait_for_probe(server, [small], below_bytes=8 * MIB)
    rng = random.Random(2)
    objects = {f"obj-{n}": rng.randbytes(MIB + n) for n in range(8)}
    for key, body in objects.items():
        s3.put_object(Bucket="data", Key=key, Body=body)

    assert [p for p in server.shard_files() if small in p.parents] == []
    shard_counts = set(_shards_per_segment(server).values())
    assert shard_counts == ({5} if drive_count == 6 else {6})  # 6 drives: the quorum; 7: full width elsewhere
    _assert_exact(s3, objects)


def test_a_burst_that_fills_a_drive_takes_it_out_of_placement_at_once(start_server):
    server = start_server([16] + [None] * 5, extra_args=("--drive-reserve", "4MiB"))
    small = server.drives[0]
    small_id = _drive_id(small)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    rng = random.Random(3)
    objects = {f"obj-{n}": rng.randbytes(MIB) for n in range(5)}

    # Fill the small drive completely, then write at once: the probe (every 2 s) has not seen it yet.
    _fill(small.parent)
    for key, body in objects.items():
        s3.put_object(Bucket="data", Key=key, Body=body)

    # Only the first write may have tried the full drive (and lost that shard to ENOSPC); its
    # failure took the drive out of placement, so the writes right after it did not try again.
    tried = re.findall(rf"drive={small_id}: \w+ failed: \[Errno 28\]", server.log_path.read_text())
    assert len(tried) <= 1, tried
    _assert_no_tmp_files(server)  # the failed shard's temp file went, though ENOSPC hit its very first write
    _assert_exact(s3, objects)


def test_multipart_part_on_full_drives_is_507_and_the_upload_completes_after_freeing(start_server):
    server = start_server([24] * 6, extra_args=("--drive-reserve", "4MiB"))
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    rng = random.Random(4)
    first, second = rng.randbytes(5 * MIB), rng.randbytes(3 * MIB + 7)
    upload = s3.create_multipart_upload(Bucket="data", Key="big")["UploadId"]
    etag1 = s3.upload_part(Bucket="data", Key="big", UploadId=upload, PartNumber=1, Body=first)["ETag"]

    # The drives fill up (2 MiB left, reserve 4 MiB): the next part is refused at once.
    for drive in server.drives:
        _fill(drive.parent, leave_bytes=2 * MIB)
    _wait_for_probe(server, server.drives, below_bytes=4 * MIB)
    started = time.monotonic()
    with s3_error("InsufficientStorage", 507):
        s3.upload_part(Bucket="data", Key="big", UploadId=upload, PartNumber=2, Body=second)
    assert time.monotonic() - started < FAST_FAILURE_S
    parts = s3.list_parts(Bucket="data", Key="big", UploadId=upload).get("Parts", [])
    assert [p["PartNumber"] for p in parts] == [1]
    _assert_no_tmp_files(server)

    # Space comes back: the same upload takes part 2 and completes.
    for drive in server.drives:
        _unfill(drive.parent)
    deadline = time.monotonic() + RECOVERY_S
    while True:
        try:
            etag2 = s3.upload_part(Bucket="data", Key="big", UploadId=upload, PartNumber=2, Body=second)["ETag"]
            break
        except ClientError as exc:
            _assert_insufficient_storage(exc)
            assert time.monotonic() < deadline, "part still refused after space was freed"
            time.sleep(0.5)
    s3.complete_multipart_upload(Bucket="data", Key="big", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": etag2}]})  # fmt: skip
    _assert_exact(s3, {"big": first + second})


def test_enospc_mid_write_is_a_clean_507_or_a_success_with_quorum(start_server):
    # No reserve: the probe never protects a drive, so writes run into ENOSPC halfway through a shard.
    server = start_server([16] * 6, extra_args=("--drive-reserve", "0"))
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    rng = random.Random(5)
    # 3 MiB objects put about 0.75 MiB on each drive; the drives have from 0.25 to 3.25 MiB left.
    for n, drive in enumerate(server.drives):
        _fill(drive.parent, leave_bytes=MIB // 4 + n * 3 * MIB // 5)

    # The first write loses one shard to ENOSPC on the fullest drive and keeps its quorum of 5.
    objects = {"first": rng.randbytes(3 * MIB)}
    s3.put_object(Bucket="data", Key="first", Body=objects["first"])
    (segment,) = _shards_per_segment(server)
    assert _shards_per_segment(server)[segment] == 5
    log = server.log_path.read_text()
    assert re.search(rf"damaged shard segment={segment} shard=\d drive=\w+: \w+ failed: \[Errno 28\]", log), log

    # A burst of concurrent writes runs the other drives out of space: each one succeeds or is a clean 507.
    bodies = {f"burst-{n}": rng.randbytes(3 * MIB) for n in range(12)}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes = dict(zip(bodies, pool.map(lambda kv: _put(s3, *kv), bodies.items()), strict=True))
    for key, error in outcomes.items():
        if error is None:
            objects[key] = bodies[key]
        else:
            _assert_insufficient_storage(error)
            _assert_absent(s3, key)
    assert any(error is not None for error in outcomes.values()), "the burst never ran out of space"
    _assert_no_tmp_files(server)
    _assert_exact(s3, objects)
    assert server.process.poll() is None


def test_two_drives_full_at_open_is_a_507_naming_the_cause_and_leaves_no_temp_file(start_server):
    # No reserve, so placement still offers both full drives; their shard files cannot even take a header.
    server = start_server([8] * 6, extra_args=("--drive-reserve", "0"))
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    for drive in server.drives[:2]:
        _fill(drive.parent)

    body = random.Random(7).randbytes(MIB)
    error, elapsed = _timed_put(s3, "refused", body)
    assert error is not None, "a 4+2 write was accepted with two drives full"
    _assert_insufficient_storage(error, "No space left on device")
    assert elapsed < FAST_FAILURE_S
    _assert_absent(s3, "refused")
    _assert_no_tmp_files(server)  # the four shards opened on the other drives were aborted too

    for drive in server.drives[:2]:
        _unfill(drive.parent)
    _put_until_accepted(s3, "refused", body)
    _assert_exact(s3, {"refused": body})


def test_a_full_metadata_disk_is_507_and_writes_resume_when_space_returns(start_server):
    server = start_server([None] * 6, meta_mib=8, extra_args=("--drive-reserve", "1MiB"))
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    rng = random.Random(6)
    objects = {"before-inline": rng.randbytes(1000), "before-ec": rng.randbytes(MIB)}
    for key, body in objects.items():
        s3.put_object(Bucket="data", Key=key, Body=body)

    # Fill the metadata filesystem: commits need new WAL pages, and there are none.
    mount = server.meta_dir.parent
    _fill(mount)
    refused, key = None, ""
    for n in range(50):  # pages left in the WAL file may take the first few commits
        key, body = f"during-{n}", rng.randbytes(10_000 if n % 2 else MIB)  # inline and erasure-coded
        refused = _put(s3, key, body)
        if refused is not None:
            break
        objects[key] = body
    assert refused is not None, "PUTs kept committing on a full metadata filesystem"
    _assert_insufficient_storage(refused, "metadata")
    _assert_absent(s3, key)
    _assert_exact(s3, objects)
    assert urllib.request.urlopen(f"{server.endpoint}/health/ready").status == 200

    # Space returns: the same server process commits again.
    _unfill(mount)
    objects["after"] = rng.randbytes(MIB)
    _put_until_accepted(s3, "after", objects["after"])
    _assert_exact(s3, objects)
    assert server.process.poll() is None
