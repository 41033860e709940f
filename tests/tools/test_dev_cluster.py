"""``apollo dev-cluster``: one command starts a working cluster, prints how to reach it, and Ctrl-C stops it all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import boto3
import pytest

from apollo.client import Client
from apollo.testing.patroni import ETCD, PATRONI
from apollo.testing.postgres import find_bindir
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

ENGINES = {"sqlite": [], "postgresql": ["--postgres"], "postgresql-ha": ["--postgres-ha"]}


@pytest.mark.parametrize("engine", ENGINES)
def test_dev_cluster_serves_s3_and_native_clients_and_stops_on_ctrl_c(tmp_path, engine):
    if engine != "sqlite" and find_bindir() is None:
        pytest.skip("PostgreSQL server binaries not installed")
    patroni = os.path.exists(PATRONI) and os.path.exists(ETCD)
    if engine == "postgresql-ha" and not patroni and not os.environ.get("CI"):
        pytest.skip("Patroni or etcd not installed (apt-get install patroni etcd-server)")
    args = [sys.executable, "-m", "apollo", "dev-cluster", "--nodes", "6", "--data", str(tmp_path / "dc")]
    process = subprocess.Popen(args + ENGINES[engine], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 150  # three PostgreSQL servers under Patroni take 25 s
        while not lines or "Ctrl-C stops everything" not in lines[-1]:
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stdout.readline())
        banner = "".join(lines)
        s3_endpoint = re.search(r"S3\s+(\S+)", banner).group(1)
        meta_endpoint = re.search(r"metadata\s+(\S+)", banner).group(1)
        assert len(re.findall(r"storage\s+http", banner)) == 6
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=DEV_ACCESS_KEY,
                          aws_secret_access_key=DEV_SECRET_KEY, region_name="us-east-1")  # fmt: skip
        s3.create_bucket(Bucket="hello")
        s3.put_object(Bucket="hello", Key="k", Body=b"v" * 2_000_000)
        with Client(meta_endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as native:
            assert native.get("hello", "k") == b"v" * 2_000_000
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0 and "dev cluster stopped" in output
    for root in [str(tmp_path / "dc"), *re.findall(r"Patroni\s+(\S+)", banner)]:
        leftovers = subprocess.run(["pgrep", "-f", root], capture_output=True, text=True).stdout
        assert leftovers == "", f"processes of {root} left running"
