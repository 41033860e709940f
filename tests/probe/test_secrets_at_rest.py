"""Root keys that outlive their configuration, and secrets readable on disk: attacks on a real server.

The metadata database holds every access key's secret in clear (encrypting them is work still
to do), so its files, its WAL, the checkpoints copied to the data drives and its backups are
owner-only. The root key is the one the server was last started with; no other survives.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from apollo.meta.location import DB_FILE
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess

REAL_USER, REAL_PASSWORD = "admin", "a-long-random-root-secret"


def s3_as(server: ServerProcess, access: str, secret: str):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(retries={"max_attempts": 1}))  # fmt: skip


def refused(client) -> str:
    with pytest.raises(ClientError) as caught:
        client.list_buckets()
    return caught.value.response["Error"]["Code"]


def test_the_dev_key_and_a_renamed_root_user_stop_working(tmp_path):
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None) -> ServerProcess:  # one deployment, started again and again
        for server in started:
            server.stop()
        started.append(ServerProcess(tmp_path, env=env).start())
        return started[-1]

    try:
        dev = start()  # --dev, no root credentials in the environment: apollo-dev is root
        s3_as(dev, DEV_ACCESS_KEY, DEV_SECRET_KEY).create_bucket(Bucket="kept")
        real = start({"APOLLO_ROOT_USER": REAL_USER, "APOLLO_ROOT_PASSWORD": REAL_PASSWORD})
        assert refused(s3_as(real, DEV_ACCESS_KEY, DEV_SECRET_KEY)) == "InvalidAccessKeyId"
        assert [b["Name"] for b in s3_as(real, REAL_USER, REAL_PASSWORD).list_buckets()["Buckets"]] == ["kept"]
        renamed = start({"APOLLO_ROOT_USER": "operator", "APOLLO_ROOT_PASSWORD": REAL_PASSWORD})
        assert refused(s3_as(renamed, REAL_USER, REAL_PASSWORD)) == "InvalidAccessKeyId"
        assert s3_as(renamed, "operator", REAL_PASSWORD).list_buckets()["Buckets"][0]["Name"] == "kept"
    finally:
        for server in started:
            server.kill()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_database_its_wal_checkpoints_and_backups_are_owner_only(tmp_path):
    server = ServerProcess(tmp_path / "server")
    (server.meta_dir).mkdir(parents=True)
    (server.meta_dir / "stale-copy.db").write_bytes(b"left readable by an older version")
    (server.meta_dir / "stale-copy.db").chmod(0o644)
    server.start()  # the first start writes a checkpoint to the journal drives at once
    try:
        s3_as(server, DEV_ACCESS_KEY, DEV_SECRET_KEY).create_bucket(Bucket="secrets")
        backup = tmp_path / "backup.db"
        subprocess.run([sys.executable, "-m", "apollo", "admin", "backup-metadata", str(backup), "--meta-dir",
                        str(server.meta_dir)], check=True, capture_output=True)  # fmt: skip
        files = [p for p in server.meta_dir.iterdir() if p.is_file()]
        assert {DB_FILE, f"{DB_FILE}-wal", "stale-copy.db"} <= {p.name for p in files}
        journal_files = [p for drive in server.drives for p in drive.glob("*/*") if "journal" in str(p.parent)]
        assert any(p.name.startswith("checkpoint-") for p in journal_files), journal_files
        readable = {str(p): oct(_mode(p)) for p in [*files, *journal_files, backup] if _mode(p) & 0o077}
        assert readable == {}
        assert _mode(server.meta_dir) == 0o700
    finally:
        server.stop()
