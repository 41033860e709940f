"""The `apollo server` command line: drive lists, credentials, scheme defaults, refusals."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from apollo.cli.common import expand_braces
from apollo.roles.server import default_scheme


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/data/d{1...3}", ["/data/d1", "/data/d2", "/data/d3"]),
        ("/data/d{1..2}", ["/data/d1", "/data/d2"]),
        ("/mnt/disk{01...03}/x", ["/mnt/disk01/x", "/mnt/disk02/x", "/mnt/disk03/x"]),
        ("/n{1...2}/d{1...2}", ["/n1/d1", "/n1/d2", "/n2/d1", "/n2/d2"]),
        ("/plain/dir", ["/plain/dir"]),
    ],
)
def test_brace_expansion(pattern, expected):
    assert expand_braces(pattern) == expected


@pytest.mark.parametrize(("drives", "scheme"), [(1, "rep1"), (2, "rep2"), (3, "2+1"), (4, "2+2"), (5, "3+2"),
                                                (6, "4+2"), (11, "4+2"), (12, "8+4"), (16, "8+4")])  # fmt: skip
def test_default_scheme_follows_drive_count(drives, scheme):
    assert str(default_scheme(drives)) == scheme


def _server(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APOLLO_ROOT")}
    return subprocess.run([sys.executable, "-m", "apollo", "server", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=30)  # fmt: skip


@pytest.mark.parametrize(
    "env",
    [{}, {"APOLLO_ROOT_USER": "admin", "APOLLO_ROOT_PASSWORD": "short"},
     {"APOLLO_ROOT_USER": "admin", "APOLLO_ROOT_PASSWORD": "minioadmin"}],
)  # fmt: skip
def test_refuses_to_start_with_weak_or_missing_credentials(tmp_path, env):
    done = _server([str(tmp_path / "d1"), "--address", "127.0.0.1:1"], env)
    assert done.returncode != 0
    assert "APOLLO_ROOT_PASSWORD" in done.stderr
    assert not (tmp_path / "d1").exists(), "nothing may be formatted before the credentials check"


def test_refuses_metadata_inside_a_drive(tmp_path):
    done = _server([str(tmp_path / "d1"), str(tmp_path / "d2"), "--meta-dir", str(tmp_path / "d1" / "meta"), "--dev"],
                   {})  # fmt: skip
    assert done.returncode != 0
    assert "--meta-dir must not be inside a drive" in done.stderr


def test_two_drives_replicate_with_a_warning(make_server):
    server = make_server(drives=2)
    s3 = server.s3()
    s3.create_bucket(Bucket="rep")
    payload = os.urandom(2 * 1024**2 + 3)
    s3.put_object(Bucket="rep", Key="k", Body=payload)
    assert s3.get_object(Bucket="rep", Key="k")["Body"].read() == payload
    assert "storing 2 replica(s) instead of erasure coding" in server.log_tail(200)
    assert len(server.shard_files()) == 2
