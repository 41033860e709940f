"""Shard files built in memory, in the format the writer puts on drives, for tests of the code that reads them
(geometry, shard checks, repair) without a drive or a process.

    files = shard_files(layout, data)            # shard index -> the whole file's bytes
    node = MemoryNode({(drive, layout.shard(i)): files[i] for i, drive in enumerate(layout.drives)})
"""

from __future__ import annotations

from apollo.proto.layout import SegmentLayout, ShardRef
from apollo.storage.ec import codec_for
from apollo.storage.shardfile import encode_footer, encode_header, seal_record


def header_info(layout: SegmentLayout, index: int) -> dict:
    """The header fields the writer records for shard ``index`` (apollo.client.writer)."""
    return {"bucket": "bucket", "key": "key", "version_id": "v", "segment_id": layout.segment_id, "shard": index,
            "scheme": str(layout.scheme), "cell_size": layout.cell_size, "pg": layout.pg, "offset": layout.offset,
            "drive": layout.drives[index]}  # fmt: skip


def footer_info(layout: SegmentLayout) -> dict:
    return {"segment_id": layout.segment_id, "length": layout.length, "stripes": layout.stripe_count}


def cell_records(layout: SegmentLayout, data: bytes) -> dict[int, list[bytes]]:
    """Per shard index, its sealed cell records (fragment + CRC32C), one per stripe."""
    if len(data) != layout.length:
        raise ValueError(f"{len(data)} bytes for a segment of {layout.length}")
    codec = codec_for(layout.scheme)
    records: dict[int, list[bytes]] = {i: [] for i in range(layout.scheme.width)}
    for stripe in range(layout.stripe_count):
        start = stripe * layout.stripe_bytes
        fragments = codec.encode(data[start : start + layout.stripe_length(stripe)])
        for index, fragment in enumerate(fragments):
            records[index].append(seal_record(fragment))
    return records


def shard_files(layout: SegmentLayout, data: bytes) -> dict[int, bytes]:
    """Per shard index, the whole shard file: header block, cell records, footer."""
    footer = encode_footer(footer_info(layout))
    return {index: encode_header(header_info(layout, index)) + b"".join(records) + footer
            for index, records in cell_records(layout, data).items()}  # fmt: skip


class MemoryNode:
    """The read side of a ``StorageNode`` over shard files held in a dict; a missing one is FileNotFoundError."""

    def __init__(self, files: dict[tuple[str, ShardRef], bytes]) -> None:
        self.files = files
        self.reads: list[tuple[str, ShardRef, int, int]] = []

    def _file(self, drive_id: str, shard: ShardRef) -> bytes:
        try:
            return self.files[(drive_id, shard)]
        except KeyError:
            raise FileNotFoundError(f"{drive_id}/{shard}") from None

    async def size(self, drive_id: str, shard: ShardRef) -> int:
        return len(self._file(drive_id, shard))

    async def read(self, drive_id: str, shard: ShardRef, offset: int, length: int) -> bytes:
        self.reads.append((drive_id, shard, offset, length))
        return self._file(drive_id, shard)[offset : offset + length]

    async def read_tail(self, drive_id: str, shard: ShardRef, length: int) -> bytes:
        return self._file(drive_id, shard)[-length:]
