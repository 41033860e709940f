"""The tools people already use: the AWS CLI and rclone, as subprocesses, against the real server."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

AWS = str(Path(sys.executable).with_name("aws"))


def _tree(root: Path, seed: int) -> dict[str, bytes]:
    """A directory of files: nested, empty, odd names, and one big enough for multipart uploads."""
    rng = random.Random(seed)
    files = {
        "a.txt": b"hello\n",
        "empty": b"",
        "nested/deeper/weights.bin": rng.randbytes(300_000),
        "with space/ünï €.dat": rng.randbytes(1000),
        "big.bin": rng.randbytes(21 * 1024**2 + 11),
    }
    for name, payload in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    return files


def _aws(server, *args: str) -> str:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": DEV_SECRET_KEY,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    done = subprocess.run([AWS, "--endpoint-url", server.endpoint, *args], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, f"aws {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_aws_cli_cp_sync_ls_roundtrip(server, tmp_path):
    source = tmp_path / "src"
    files = _tree(source, seed=5)
    _aws(server, "s3", "mb", "s3://cli-bucket")
    _aws(server, "s3", "cp", str(source / "big.bin"), "s3://cli-bucket/single/big.bin")  # multipart (> 8 MiB)
    _aws(server, "s3", "sync", str(source), "s3://cli-bucket/tree/")
    listing = _aws(server, "s3", "ls", "--recursive", "s3://cli-bucket/tree/")
    assert sorted(line.split(maxsplit=3)[3] for line in listing.splitlines()) == sorted(f"tree/{n}" for n in files)
    assert _aws(server, "s3", "sync", str(source), "s3://cli-bucket/tree/").strip() == ""  # nothing left to copy

    target = tmp_path / "dst"
    _aws(server, "s3", "sync", "s3://cli-bucket/tree/", str(target))
    _aws(server, "s3", "cp", "s3://cli-bucket/single/big.bin", str(tmp_path / "big.copy"))
    for name, payload in files.items():
        assert (target / name).read_bytes() == payload, name
    assert (tmp_path / "big.copy").read_bytes() == files["big.bin"]
    head = _aws(server, "s3api", "head-object", "--bucket", "cli-bucket", "--key", "single/big.bin")
    assert '"-3"' in head or '-3\\"' in head  # 21 MiB in 8 MiB parts: ETag ends in -3

    _aws(server, "s3", "rm", "--recursive", "s3://cli-bucket/")
    _aws(server, "s3", "rb", "s3://cli-bucket")


def _rclone(server, *args: str) -> subprocess.CompletedProcess:
    # AWS_CA_BUNDLE (set on some build machines) makes rclone's S3 SDK refuse its plain-HTTP transport.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env |= {"RCLONE_CONFIG": "/dev/null", "RCLONE_CONFIG_APOLLO_TYPE": "s3",
           "RCLONE_CONFIG_APOLLO_PROVIDER": "Other", "RCLONE_CONFIG_APOLLO_ACCESS_KEY_ID": DEV_ACCESS_KEY,
           "RCLONE_CONFIG_APOLLO_SECRET_ACCESS_KEY": DEV_SECRET_KEY, "RCLONE_CONFIG_APOLLO_ENDPOINT": server.endpoint,
           "RCLONE_CONFIG_APOLLO_REGION": "us-east-1"}  # fmt: skip
    return subprocess.run(["rclone", *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed (./run tests installs it as root)")
def test_rclone_copy_and_check(server, tmp_path):
    source = tmp_path / "src"
    files = _tree(source, seed=6)
    for args in (
        ("mkdir", "apollo:rclone-bucket"),
        ("copy", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(source), "apollo:rclone-bucket/data"),
        ("check", str(source), "apollo:rclone-bucket/data"),  # compares sizes and MD5 of every file
        ("copy", "apollo:rclone-bucket/data", str(tmp_path / "back")),
    ):
        done = _rclone(server, *args)
        assert done.returncode == 0, f"rclone {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    for name, payload in files.items():
        assert (tmp_path / "back" / name).read_bytes() == payload, name

    (source / "a.txt").write_bytes(b"changed\n")  # check must notice a difference
    assert _rclone(server, "check", str(source), "apollo:rclone-bucket/data").returncode != 0


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed (./run tests installs it as root)")
def test_a_versioned_bucket_is_listed_paged_and_emptied_by_the_tools(server):
    """What a cleanup script does: list every version (the AWS CLI paging one entry at a time, so every page
    resumes from key and version-id markers), see old versions with rclone, then purge them all, delete
    markers included, and the bucket with them."""
    s3 = server.s3()
    s3.create_bucket(Bucket="tools-versions")
    s3.put_bucket_versioning(Bucket="tools-versions", VersioningConfiguration={"Status": "Enabled"})
    for body in (b"v0", b"v1", b"v2"):
        s3.put_object(Bucket="tools-versions", Key="dir/a.txt", Body=body)
    s3.put_object(Bucket="tools-versions", Key="b.txt", Body=b"b")
    s3.delete_object(Bucket="tools-versions", Key="b.txt")  # a delete marker over it

    listed = json.loads(_aws(server, "s3api", "list-object-versions", "--bucket", "tools-versions",
                             "--page-size", "1"))  # fmt: skip
    assert sorted((v["Key"], v["IsLatest"]) for v in listed["Versions"]) == [
        ("b.txt", False), ("dir/a.txt", False), ("dir/a.txt", False), ("dir/a.txt", True)]  # fmt: skip
    assert [(m["Key"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [("b.txt", True)]

    done = _rclone(server, "ls", "--s3-versions", "apollo:tools-versions")
    assert done.returncode == 0, done.stderr
    names = sorted(line.split()[1] for line in done.stdout.splitlines())
    assert len(names) == 4 and names.count("dir/a.txt") == 1  # the current one, and three older versions
    assert sum(name.startswith("dir/a-v") for name in names) == 2 and names[0].startswith("b-v")

    done = _rclone(server, "purge", "--s3-versions", "apollo:tools-versions")
    assert done.returncode == 0, done.stderr
    assert "tools-versions" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
