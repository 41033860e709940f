"""Root keys that outlive their configuration, and secrets readable on disk: attacks on a real server.

With ``APOLLO_SECRETS_KEY`` the metadata database seals every secret (``apollo.meta.sealing``): neither its
files, its WAL, the journal and checkpoints on the data drives nor its backups show one. Without a key they
are in clear, and file modes (owner-only) are the floor. The root key is the one the server was last started
with; no other survives.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from apollo.meta.location import DB_FILE
from apollo.testing.admin import admin, admin_refused
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


def _new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _every_file(server: ServerProcess, *more: Path) -> list[Path]:
    """The database, its WAL, the journal and checkpoints on every drive, and ``more`` (backups)."""
    found = [p for p in server.meta_dir.rglob("*") if p.is_file()]
    found += [p for drive in server.drives for p in drive.rglob("*") if p.is_file() and "journal" in str(p)]
    return [*found, *more]


def test_sealed_secrets_appear_in_no_file_and_do_not_open_without_the_key(tmp_path):
    key = _new_key()
    sealed = {"APOLLO_ROOT_USER": REAL_USER, "APOLLO_ROOT_PASSWORD": REAL_PASSWORD, "APOLLO_SECRETS_KEY": key}
    server = ServerProcess(tmp_path / "server", env=sealed).start()
    try:
        made = admin("user", "create", "--policy", "readwrite", meta_dir=server.meta_dir, env=sealed)
        user, user_secret = made.split("access key: ")[1].split()[0], made.split("secret key: ")[1].split()[0]
        s3_as(server, user, user_secret).create_bucket(Bucket="sealed")
        assert s3_as(server, REAL_USER, REAL_PASSWORD).list_buckets()["Buckets"][0]["Name"] == "sealed"
        backup = tmp_path / "backup.db"
        admin("backup-metadata", backup, meta_dir=server.meta_dir, env=sealed)
        files = _every_file(server, backup)
        assert any("journal" in str(p) for p in files) and len(files) > 4
        for secret in (REAL_PASSWORD, user_secret):
            assert [str(p) for p in files if secret.encode() in p.read_bytes()] == []
    finally:
        server.stop()
    locked = ServerProcess(tmp_path / "server", env={k: v for k, v in sealed.items() if k != "APOLLO_SECRETS_KEY"})
    with pytest.raises(RuntimeError, match="sealed"):
        locked.start()
    # The refused start wrote nothing in clear first (it installs the root key only once the sealing holds).
    assert [str(p) for p in _every_file(server) if REAL_PASSWORD.encode() in p.read_bytes()] == []
    wrong = ServerProcess(tmp_path / "server", env={**sealed, "APOLLO_SECRETS_KEY": _new_key()})
    with pytest.raises(RuntimeError, match="does not hold"):
        wrong.start()
    refused = admin_refused("user", "create", meta_dir=server.meta_dir, env={"APOLLO_SECRETS_KEY": ""})
    assert "set APOLLO_SECRETS_KEY" in refused  # nor does an admin command add a secret in clear


def test_a_key_given_later_seals_what_was_clear_and_rotates_to_a_new_key(tmp_path):
    root = {"APOLLO_ROOT_USER": REAL_USER, "APOLLO_ROOT_PASSWORD": REAL_PASSWORD}
    old, new = _new_key(), _new_key()
    for env in (root, {**root, "APOLLO_SECRETS_KEY": old}, {**root, "APOLLO_SECRETS_KEY": f"{new},{old}"},
                {**root, "APOLLO_SECRETS_KEY": new}):  # fmt: skip
        server = ServerProcess(tmp_path / "server", env=env).start()
        try:
            assert s3_as(server, REAL_USER, REAL_PASSWORD).list_buckets()["Buckets"] == []
        finally:
            server.kill()  # a start that seals empties the WAL: what a kill leaves then holds no clear copy
        files = [p for p in server.meta_dir.iterdir() if p.is_file()]
        in_clear = [p.name for p in files if REAL_PASSWORD.encode() in p.read_bytes()]
        assert bool(in_clear) == ("APOLLO_SECRETS_KEY" not in env), in_clear
    with pytest.raises(RuntimeError, match="does not hold"):  # the old key alone opens nothing now
        ServerProcess(tmp_path / "server", env={**root, "APOLLO_SECRETS_KEY": old}).start()


def test_a_sealed_secret_moved_to_another_keys_row_does_not_open(tmp_path):
    """Someone with write access to the database copies the root key's sealed secret over a user's: the
    seal is bound to its row, so the start refuses rather than letting the user sign with root's secret."""
    env = {"APOLLO_ROOT_USER": REAL_USER, "APOLLO_ROOT_PASSWORD": REAL_PASSWORD, "APOLLO_SECRETS_KEY": _new_key()}
    server = ServerProcess(tmp_path / "server", env=env).start()
    admin("user", "create", "victim", meta_dir=server.meta_dir, env=env)
    server.stop()
    with sqlite3.connect(server.meta_dir / DB_FILE) as db:
        (root_sealed,) = db.execute("SELECT secret_key FROM access_keys WHERE access_key = ?", (REAL_USER,)).fetchone()
        assert root_sealed.startswith("sealed1:")
        db.execute("UPDATE access_keys SET secret_key = ? WHERE access_key = 'victim'", (root_sealed,))
    with pytest.raises(RuntimeError, match="does not open"):
        ServerProcess(tmp_path / "server", env=env).start()
