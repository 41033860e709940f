"""What the seeded chaos run (test_chaos.py) found when it wiped drives, pinned down on its own: a drive
replaced at once, before the server's probe saw it wiped."""

from __future__ import annotations

import json
import random
import re
import shutil

import pytest
from shard_state import healing, missing_shards
from support import wait_until

from apollo.cluster.admin import replace_drive
from apollo.roles.server import open_store
from apollo.testing.workload import Workload


def test_a_drive_replaced_before_the_server_noticed_the_wipe_keeps_its_rebuilt_shards(make_server):
    server = make_server(drives=7)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(61)
    objects.write(s3, "data", 6)
    for n in range(30):
        s3.put_object(Bucket="data", Key=f"more-{n}", Body=random.Random(n).randbytes(300_000))

    # Wipe a drive and replace it at the same path within milliseconds, as a quick disk swap does: the server's
    # probe (every 2 s) never sees the drive gone. Retried on another drive if a probe fell in between after all.
    for victim in server.drives[:3]:
        old_id = json.loads((victim / "apollo-drive.json").read_text())["drive_id"]
        wiped = victim.with_name(f"{victim.name}-wiped")
        victim.rename(wiped)
        victim.mkdir()
        store = open_store(server.meta_dir)
        replace_drive(store, str(victim), None)
        store.close()
        shutil.rmtree(wiped)
        wait_until(lambda: healing(server).settled, 60, "the replaced drive's shards to be rebuilt")
        seen_wiped = re.search(rf"detached drive {old_id} \(.*\): its format file is gone", server.log_path.read_text())
        if not seen_wiped:  # the probe found the drive replaced, never wiped: the race ran
            break
    else:
        pytest.fail("a probe saw every wiped drive before its replacement: the race was never run")

    # Repair says it is done; every shard it rebuilt must be on the replacement.
    assert missing_shards(server) == []
    objects.verify(s3, "data")
