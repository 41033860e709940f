"""A drive's shard writer: whatever pieces a node hands it, the file holds exactly those bytes."""

from __future__ import annotations

import os
import random

from apollo.proto.layout import ShardRef
from apollo.storage.drive import Drive, format_drive
from apollo.testing.layouts import segment_id


def test_more_pieces_than_one_writev_takes_are_written_in_order(tmp_path, seed):
    """A client streaming tiny chunks hands the node more buffers than IOV_MAX in one append."""
    format_drive(tmp_path, "deployment")
    drive = Drive(tmp_path, "deployment")
    rng = random.Random(seed)
    pieces = [rng.randbytes(rng.randint(1, 9)) for _ in range(3 * os.sysconf("SC_IOV_MAX") + 5)]
    shard = ShardRef(1, segment_id(), 0)
    writer = drive.open_writer(shard, b"H" * 16)
    writer.append(pieces)
    writer.finish(b"footer")
    assert drive.shard_path(shard).read_bytes() == b"H" * 16 + b"".join(pieces) + b"footer"
