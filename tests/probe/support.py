"""What the damage tests share: a seeded object mix, byte-exact checks, metrics, the admin CLI."""

from __future__ import annotations

import hashlib
import io
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from boto3.s3.transfer import TransferConfig

SIZES = {"empty": 0, "tiny": 100, "inline-edge": 16 * 1024 + 1, "one-mib": 1024 * 1024, "nine-mib": 9 * 1024**2 + 7}
MULTIPART = TransferConfig(multipart_threshold=5 * 1024**2, multipart_chunksize=5 * 1024**2)


def write_objects(s3, bucket: str, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    objects = {name: rng.randbytes(size) for name, size in SIZES.items()}
    for name, payload in objects.items():
        s3.put_object(Bucket=bucket, Key=name, Body=payload)
    objects["multipart"] = rng.randbytes(11 * 1024**2 + 3)
    s3.upload_fileobj(io.BytesIO(objects["multipart"]), bucket, "multipart", Config=MULTIPART)
    return objects


def assert_all_exact(s3, bucket: str, objects: dict[str, bytes]) -> None:
    for name, payload in objects.items():
        got = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        assert hashlib.md5(got).hexdigest() == hashlib.md5(payload).hexdigest(), name
        if len(payload) > 10:
            part = s3.get_object(Bucket=bucket, Key=name, Range="bytes=3-9")["Body"].read()
            assert part == payload[3:10], name


def metric(server, name: str) -> float:
    text = urllib.request.urlopen(f"{server.endpoint}/metrics").read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


def shards_by_segment(server) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in server.shard_files():
        groups[path.name.rsplit(".", 1)[0]].append(path)
    return groups


def admin(server, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``apollo admin ARGS --meta-dir <server's>`` as the operator would."""
    result = subprocess.run([sys.executable, "-m", "apollo", "admin", *args, "--meta-dir", str(server.meta_dir)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"apollo admin {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> float:
    """Poll until ``condition()`` is truthy; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def pause_repair(server) -> None:
    """Stop the repair worker (damage then stays put for inspection) and wait until the server applied it."""
    admin(server, "repair", "--pause")
    wait_until(lambda: "repair_paused=1" in server.log_path.read_text(), 10, "the server to pause repair")


def query(server, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of one statement on the server's metadata database, read-only: one consistent snapshot while the
    server keeps writing (ask for several counts with subqueries in one statement to see them together)."""
    with closing(sqlite3.connect(f"file:{server.meta_dir / 'apollo.db'}?mode=ro", uri=True)) as db:
        return db.execute(sql, args).fetchall()


def wipe(drive: Path) -> None:
    """``rm -rf`` a drive directory while the server may still be writing into it (as a dying disk's
    directory would be): retry until it is gone, since a file created mid-delete makes rmtree fail."""
    for _ in range(50):
        shutil.rmtree(drive, ignore_errors=True)
        if not drive.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"could not wipe {drive}")


def drive_state(server, drive: Path) -> str:
    """State of the newest drive registered at a path (a replacement shares its predecessor's path)."""
    rows = query(server, "SELECT state FROM drives WHERE path = ? ORDER BY added DESC LIMIT 1", (str(drive.resolve()),))
    return rows[0][0] if rows else ""
