"""``apollo admin recover-metadata`` with a drive left off its command line: it says which, and where.

The operator's report: recovery read only the drives it was given and said nothing of the others the
metadata knew, whose shards were then queued to be rebuilt from parity though they sat on a drive
nobody had named. Drive directories also take the brace ranges ``apollo server`` takes.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time

from apollo.testing.admin import run_admin


def _checkpointed(server) -> bool:
    """A finished checkpoint is on a drive (``checkpoint-new.db`` is one being written)."""
    names = [p.name for d in server.drives for p in (d / "meta-journal").glob("checkpoint-*.db")]
    return any(re.fullmatch(r"checkpoint-\d+\.db", name) for name in names)


def test_recover_names_the_known_drives_it_was_not_given(make_server):
    server = make_server()  # drive1 ... drive6, 4+2: every segment has a shard on each
    client = server.s3()
    client.create_bucket(Bucket="kept")
    rng = random.Random(5)
    for n in range(3):
        client.put_object(Bucket="kept", Key=f"k{n}", Body=rng.randbytes(300_000))
    deadline = time.monotonic() + 30
    while not _checkpointed(server):  # the first one, taken at start, knows every drive
        assert time.monotonic() < deadline, "no checkpoint within 30 s"
        time.sleep(0.1)
    server.stop()
    for name in ("apollo.db", "apollo.db-wal", "apollo.db-shm"):
        (server.meta_dir / name).unlink(missing_ok=True)
    left_out = server.drives[-1]
    left_id = json.loads((left_out / "apollo-drive.json").read_text())["drive_id"]

    # One argument, no shell: Apollo expands the range, as `apollo server` does.
    done = run_admin("recover-metadata", "--meta-dir", server.meta_dir, server.root / "drive{1...5}", check=True)
    print(done.stdout)
    assert "from 5 drives" in done.stdout, done.stdout
    named = re.search(rf"NOT GIVEN +drive {left_id} at {re.escape(str(left_out))} \(online at the checkpoint\): "
                      r"(\d+) of its shards", done.stdout)  # fmt: skip
    assert named and int(named[1]) == 3, done.stdout
    assert "1 drive(s) the recovered metadata knows were not given" in done.stdout, done.stdout
    assert f"add to the command line: {left_out}" in done.stdout, done.stdout

    # Every drive given: none is named, no shard is missing.
    again = run_admin("recover-metadata", "--force", "--meta-dir", server.meta_dir, server.root / "drive{1...6}",
                      check=True)  # fmt: skip
    assert "NOT GIVEN" not in again.stdout and "not given" not in again.stdout, again.stdout
    assert "; 0 missing shards" in again.stdout, again.stdout

    # A drive given but wiped is reported as skipped, not as one left off the command line.
    shutil.rmtree(left_out)
    left_out.mkdir()
    wiped = run_admin("recover-metadata", "--force", "--meta-dir", server.meta_dir, server.root / "drive{1...6}",
                      check=True)  # fmt: skip
    assert f"skipped          {left_out}: no drive format file" in wiped.stdout, wiped.stdout
    assert "NOT GIVEN" not in wiped.stdout and "; 3 missing shards" in wiped.stdout, wiped.stdout
    server.start()
    assert [o["Key"] for o in server.s3().list_objects_v2(Bucket="kept")["Contents"]] == ["k0", "k1", "k2"]
