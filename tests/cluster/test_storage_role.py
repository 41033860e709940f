"""``apollo storage`` at restart: an unmounted or wiped drive is never formatted anew, a dropped one goes offline."""

from __future__ import annotations

import shutil
import time

from apollo.meta.store import SqlStore


def _wait_state(store: SqlStore, drive_id: str, state: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        current = {r.drive_id: r.state for r in store.list_drives()}[drive_id]
        if current == state:
            return
        assert time.monotonic() < deadline, f"drive {drive_id} is {current}, not {state}"
        time.sleep(0.3)


def test_a_known_drive_that_lost_its_format_file_is_not_formatted_again(make_cluster):
    cluster = make_cluster(nodes=6)
    node = cluster.nodes[0]
    drive_dir = cluster.node_drives["node0"][0]
    store = SqlStore(cluster.database)
    before = next(r for r in store.list_drives() if r.node == "node0")
    node.stop()
    shutil.rmtree(drive_dir)
    drive_dir.mkdir()  # an empty mount point: the disk did not mount
    node.start()
    time.sleep(1)
    assert not list(drive_dir.iterdir()), "the empty mount point was formatted as a new drive"
    assert "lost its format file" in node.log_tail()
    assert [r.drive_id for r in store.list_drives() if r.node == "node0"] == [before.drive_id]
    _wait_state(store, before.drive_id, "offline")  # not served: no new shards, reads go around it
    store.close()


def test_a_drive_taken_off_the_command_line_goes_offline_and_a_missing_one_is_not_created(make_cluster):
    cluster = make_cluster(nodes=6, drives=2)
    node = cluster.nodes[1]
    kept, dropped = cluster.node_drives["node1"]
    store = SqlStore(cluster.database)
    dropped_id = next(r.drive_id for r in store.list_drives() if r.path == str(dropped.resolve()))
    node.stop()
    missing = dropped.parent / "not-mounted"
    node.args = [a for a in node.args if a != str(dropped)]
    node.args.insert(2, str(missing))
    node.start()
    _wait_state(store, dropped_id, "offline")
    assert not missing.exists() and "does not exist" in node.log_tail()
    store.close()
    s3 = cluster.s3()
    s3.create_bucket(Bucket="after")
    s3.put_object(Bucket="after", Key="k", Body=b"x" * 3_000_000)
    assert s3.get_object(Bucket="after", Key="k")["Body"].read() == b"x" * 3_000_000
    assert not list((dropped / "shards").rglob("*.[0-9]"))  # nothing new placed on the dropped drive
