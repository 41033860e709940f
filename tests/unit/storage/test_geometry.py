"""Where a segment's cell records lie in its shard files (``apollo.storage.geometry``), checked against shard
files built the way the writer builds them: spans, the short last stripe, batches, and ``split`` turning a
read into verified fragments (None for a damaged or missing one)."""

from __future__ import annotations

import random

import pytest

from apollo import limits
from apollo.proto.layout import Scheme, SegmentLayout
from apollo.storage.ec import codec_for
from apollo.storage.geometry import ShardGeometry
from apollo.storage.shardfile import CRC_BYTES, HEADER_BYTES, encode_footer
from apollo.testing.layouts import DRIVES, segment_id
from apollo.testing.shardfiles import cell_records, footer_info, shard_files

CELL = 1024


def make_layout(length: int, scheme: str = "4+2", cell_size: int = CELL) -> SegmentLayout:
    parsed = Scheme.parse(scheme)
    return SegmentLayout(segment_id("geometry"), 0, length, parsed, cell_size, 7, DRIVES[: parsed.width])


@pytest.fixture
def segment() -> tuple[SegmentLayout, bytes]:
    """4+2, 1 KiB cells: four whole stripes of 4 KiB and a last one of 1,000 bytes (250 per cell)."""
    layout = make_layout(4 * 4 * CELL + 1000)
    return layout, random.Random(5).randbytes(layout.length)


def test_records_follow_the_header_and_only_the_last_stripe_is_shorter(segment):
    layout, data = segment
    geometry = ShardGeometry(layout)
    header = codec_for(layout.scheme).header_bytes
    assert layout.stripe_count == 5
    assert geometry.full_record == header + CELL + CRC_BYTES
    assert [geometry.record_bytes(s) for s in range(5)] == [geometry.full_record] * 4 + [header + 250 + CRC_BYTES]
    assert geometry.span(0, 1) == (HEADER_BYTES, geometry.full_record)
    assert geometry.span(2, 5) == (HEADER_BYTES + 2 * geometry.full_record, 2 * geometry.full_record + header + 254)
    assert geometry.records_end == HEADER_BYTES + 4 * geometry.full_record + header + 250 + CRC_BYTES
    footer = encode_footer(footer_info(layout))
    for file in shard_files(layout, data).values():  # what the writer writes ends where the geometry says
        assert len(file) == geometry.records_end + len(footer)
        assert file[geometry.records_end :] == footer


def test_split_returns_each_stripe_s_verified_fragment(segment):
    layout, data = segment
    geometry = ShardGeometry(layout)
    records = cell_records(layout, data)
    for index, file in shard_files(layout, data).items():
        offset, length = geometry.span(1, 4)
        cells = geometry.split(file[offset : offset + length], 1, 4)
        assert [bytes(c) for c in cells] == [r[:-CRC_BYTES] for r in records[index][1:4]]
        assert all(isinstance(c, memoryview) and c.readonly for c in cells)
        assert geometry.split(bytearray(file[offset : offset + length]), 1, 4)[0] is not None  # a remote read's buffer


def test_a_damaged_record_is_none_and_its_neighbours_still_verify(segment):
    layout, data = segment
    geometry = ShardGeometry(layout)
    file = bytearray(shard_files(layout, data)[2])
    offset, length = geometry.span(0, layout.stripe_count)
    file[geometry.span(3, 4)[0] + 17] ^= 0x10  # one bit in stripe 3's cell
    cells = geometry.split(bytes(file[offset : offset + length]), 0, layout.stripe_count)
    assert [c is None for c in cells] == [False, False, False, True, False]


def test_a_short_read_leaves_the_missing_stripes_none(segment):
    layout, data = segment
    geometry = ShardGeometry(layout)
    file = shard_files(layout, data)[0]
    offset, length = geometry.span(0, 5)
    cells = geometry.split(file[offset : offset + 2 * geometry.full_record + 10], 0, 5)
    assert [c is None for c in cells] == [False, False, True, True, True]
    assert geometry.split(b"", 0, 5) == [None] * 5


def test_any_k_shards_read_through_the_geometry_give_back_the_segment(segment):
    layout, data = segment
    geometry = ShardGeometry(layout)
    files = shard_files(layout, data)
    offset, length = geometry.span(0, layout.stripe_count)
    cells = {i: geometry.split(files[i][offset : offset + length], 0, layout.stripe_count) for i in (1, 3, 4, 5)}
    rebuilt = b"".join(
        geometry.codec.decode({i: bytes(c[s]) for i, c in cells.items()}, layout.stripe_length(s))
        for s in range(layout.stripe_count)
    )
    assert rebuilt == data


def test_batches_cover_every_stripe_once_in_io_sized_runs():
    per_batch = limits.io_batch_bytes // (4 * CELL)
    layout = make_layout(2 * per_batch * 4 * CELL + 1)  # two whole batches and one byte
    geometry = ShardGeometry(layout)
    assert geometry.batch_stripes == per_batch
    assert geometry.batches() == [(0, per_batch), (per_batch, 2 * per_batch), (2 * per_batch, 2 * per_batch + 1)]
    small = ShardGeometry(make_layout(10))
    assert small.batches() == [(0, 1)]
    huge_cells = ShardGeometry(make_layout(100, scheme="8+4", cell_size=limits.cell_size_bytes_max))
    assert huge_cells.batch_stripes == 1  # a stripe bigger than a batch is still read whole
