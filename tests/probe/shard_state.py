"""What the drives and the metadata say after damage: self-healing progress, and the shard files the
segments table refers to (missing, or not verifying on their own), read with the format's primitives."""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from support import query

from apollo.errors import ApolloError
from apollo.proto.layout import SegmentLayout
from apollo.storage.geometry import ShardGeometry
from apollo.storage.shardfile import HEADER_BYTES, decode_footer, decode_header, header_padding_is_zero


@dataclass
class Healing:
    """Self-healing progress, from one snapshot of the metadata."""

    backlog: int  # shards queued for repair (or moves)
    walking: int  # drive jobs still queueing a failed or draining drive's shards
    unretired: int  # failed or draining drives something still refers to
    scrubbed_at: float  # start of the last finished scrub pass (wall clock)

    @property
    def settled(self) -> bool:
        return self.backlog == self.walking == self.unretired == 0


def healing(server) -> Healing:
    (row,) = query(server, "SELECT (SELECT COUNT(*) FROM repair_queue), "
                           "(SELECT COUNT(*) FROM drive_jobs WHERE finished = 0), "
                           "(SELECT COUNT(*) FROM drives WHERE state IN ('failed', 'draining')), "
                           "(SELECT value FROM settings WHERE name = 'scrub.state')")  # fmt: skip
    last_scrub = json.loads(row[3] or "{}").get("last", {})
    return Healing(row[0], row[1], row[2], last_scrub.get("started", 0.0))


def drive_directories(server) -> dict[str, Path]:
    """Drive id -> directory, from the format file in each drive directory."""
    return {json.loads((d / "apollo-drive.json").read_text())["drive_id"]: d for d in server.drives}


def shard_path(directory: Path, pg: int, segment_id: str, index: int) -> Path:
    return directory / "shards" / f"{pg:04x}" / f"{segment_id}.{index}"


def referenced_shards(server) -> tuple[set[Path], list[str]]:
    """The shard files the segments table names, and the shards it names on no present drive."""
    directory = drive_directories(server)
    expected, unplaced = set(), []
    for (raw,) in query(server, "SELECT layout FROM segments"):
        layout = json.loads(raw)
        for index, drive_id in enumerate(layout["drives"]):
            if drive_id in directory:
                expected.add(shard_path(directory[drive_id], layout["pg"], layout["segment_id"], index))
            else:
                unplaced.append(f"{layout['segment_id']}.{index} on {drive_id or 'no drive'}")
    return expected, unplaced


def missing_shards(server) -> list[str]:
    """Referenced shard files not on their drive, in two looks a second apart (a move that commits between
    reading the layouts and looking at the files is no loss)."""

    def look() -> set[Path]:
        expected, _ = referenced_shards(server)
        return {path for path in expected if not path.exists()}

    first = look()
    time.sleep(1.0)
    return sorted(map(str, first & look()))


def damaged_shards(server) -> list[str]:
    """Referenced shard files that do not verify on their own: header naming the shard, zero padding, every cell
    record's CRC32C, footer. Read from the files with the format's primitives, not by asking the scrubber; a
    finding is confirmed by a second look (a move may commit between reading a layout and reading its file)."""
    first = _unverified_shards(server)
    if first:
        time.sleep(1.0)
        first &= _unverified_shards(server)
    return sorted(first)


def _unverified_shards(server) -> set[str]:
    directory = drive_directories(server)
    found = set()
    for (raw,) in query(server, "SELECT layout FROM segments"):
        layout = SegmentLayout.from_json(json.loads(raw))
        geometry = ShardGeometry(layout)
        for index, drive_id in enumerate(layout.drives):
            where = directory.get(drive_id)
            try:
                data = shard_path(where, layout.pg, layout.segment_id, index).read_bytes() if where else b""
                header, records, footer = data[:HEADER_BYTES], data[HEADER_BYTES:], data[geometry.records_end :]
                intact = (decode_header(header)["shard"] == index and header_padding_is_zero(header)
                          and decode_footer(footer)["length"] == layout.length
                          and None not in geometry.split(records, 0, layout.stripe_count))  # fmt: skip
            except (ApolloError, OSError, ValueError, KeyError, struct.error):  # a flipped length field, say
                intact = False
            if not intact:
                found.add(f"{layout.segment_id}.{index} on {drive_id}")
    return found
