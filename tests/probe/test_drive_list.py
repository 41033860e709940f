"""Which drives a server uses (docs/operations.md, "Which drives a server uses"), as an operator met them:
a removed drive came back online after a restart with the same command line, and a missing directory
(a disk that did not mount) was created and formatted on the root filesystem."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from support import drive_state, wait_until

from apollo.testing.admin import admin, admin_refused
from apollo.testing.server import ServerProcess, free_port
from apollo.testing.workload import Workload


def test_a_removed_drive_stays_removed_though_it_is_still_on_the_command_line(make_server):
    server = make_server(drives=7)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(5)
    objects.write(s3, "data", 4)
    leaving = server.drives[6]
    admin("drive", "drain", str(leaving), "--wait", meta_dir=server.meta_dir)
    wait_until(lambda: drive_state(server, leaving) == "retired", 60, "the drained drive to be retired")
    admin("drive", "remove", str(leaving), meta_dir=server.meta_dir)
    server.restart()  # the same command line, drive7 still on it
    assert drive_state(server, leaving) == ""  # before: online again
    assert "was removed from the deployment" in server.log_tail(200)
    objects.write(s3, "data", 4)
    assert list((leaving / "shards").rglob("*.*")) == []  # nothing placed on it
    objects.verify(s3, "data")


def test_a_drive_in_use_but_not_on_the_command_line_is_served_with_a_warning(make_server):
    server = make_server(drives=6)
    added = server.root / "drive-added"
    added.mkdir()
    admin("drive", "add", str(added), meta_dir=server.meta_dir)
    wait_until(lambda: drive_state(server, added) == "online", 30, "the added drive to come online")
    server.restart()
    assert drive_state(server, added) == "online"
    assert f"drive {added.resolve()} is in use but not on the command line" in server.log_tail(200)


def test_a_missing_drive_directory_is_not_created_without_dev(tmp_path):
    """Without ``--dev`` the server refuses a missing directory (an unmounted disk) and serves the others."""
    drives = [tmp_path / f"disk{n}" for n in range(1, 7)]
    for drive in drives[:5]:
        drive.mkdir()
    port = free_port()
    env = {**os.environ, "APOLLO_ROOT_USER": "operator", "APOLLO_ROOT_PASSWORD": "a-long-root-password"}
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "apollo", "server", str(tmp_path / "disk{1...6}"), "--meta-dir",
             str(tmp_path / "meta"), "--address", f"127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        wait_until(lambda: _answers(port) or process.poll() is not None, 30, "the server to start")
    finally:
        process.kill()
        process.wait()
    assert not drives[5].exists()  # before: created and formatted
    assert f"drive {drives[5]} does not exist (not mounted?)" in log.read_text()
    assert all((drive / "apollo-drive.json").exists() for drive in drives[:5]), log.read_text()


def _answers(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2).status == 200
    except OSError:
        return False


def test_drive_add_refuses_a_missing_directory(make_server):
    server = make_server(drives=6)
    missing = server.root / "not-mounted"
    refused = admin_refused("drive", "add", str(missing), meta_dir=server.meta_dir)
    assert "does not exist: mount the disk there first" in refused
    assert not missing.exists()  # before: created and formatted


def test_dev_servers_still_create_their_drive_directories(tmp_path):
    server = ServerProcess(tmp_path / "fresh")  # --dev, drives not made beforehand
    with server:
        assert all(drive.is_dir() for drive in server.drives)
