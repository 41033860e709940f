"""What the seeded chaos run (test_chaos.py) found when it flipped bits in shard files, pinned down on its
own: a segment with m damaged shards and a third one being moved."""

from __future__ import annotations

import json

from shard_state import drive_directories, missing_shards, shard_path
from support import pause_repair, query, wait_until

from apollo.storage.shardfile import HEADER_BYTES
from apollo.testing.admin import admin
from apollo.testing.workload import Workload


def test_a_segment_with_m_damaged_shards_and_a_third_being_moved_is_repaired(make_server):
    """It stalled for ever ("only 3 good cells in a stripe, need 4") until moving shards counted as decode sources."""
    server = make_server(drives=7)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(71)
    objects.write(s3, "data", 6)
    pause_repair(server)

    # Flip a cell bit in two shards of one segment and let a scrub queue them; drain the drive of a third,
    # healthy shard, so its move is queued beside them.
    (raw,) = query(server, "SELECT layout FROM segments ORDER BY segment_id LIMIT 1")[0]
    layout = json.loads(raw)
    directory = drive_directories(server)
    for index in (0, 1):
        path = shard_path(directory[layout["drives"][index]], layout["pg"], layout["segment_id"], index)
        with open(path, "r+b") as shard:
            shard.seek(HEADER_BYTES + 100)
            flipped = shard.read(1)[0] ^ 1
            shard.seek(HEADER_BYTES + 100)
            shard.write(bytes([flipped]))
    admin("scrub", "--now", "--wait", meta_dir=server.meta_dir)
    admin("drive", "drain", str(directory[layout["drives"][2]]), meta_dir=server.meta_dir)

    def queued() -> int:
        return query(server, "SELECT COUNT(*) FROM repair_queue WHERE segment_id = ?", (layout["segment_id"],))[0][0]

    wait_until(lambda: queued() == 3, 30, "the drain walk to queue the move")

    # Four shards are readable, so the repair has all it needs: both damaged shards rebuilt, the third moved.
    admin("repair", "--resume", meta_dir=server.meta_dir)
    wait_until(lambda: queued() == 0, 20, "the segment to be repaired")
    assert missing_shards(server) == []
    objects.verify(s3, "data")
