"""What a batch counts a range as costing: the payload of the shard reads a reader will ask for, which
covers at least every cell holding a byte of the range (checked against a byte-by-byte count)."""

from __future__ import annotations

import random

from apollo.client.node_batches import read_bytes
from apollo.client.reader import SegmentReader, stripes_of
from apollo.proto.layout import ObjectData, Scheme, SegmentLayout


def cells_touched(data: ObjectData, start: int, end: int) -> int:
    """Every byte of the range mapped to its (segment, stripe, cell), the distinct cells' payloads summed."""
    cells = {}
    for offset in range(start, end):
        segment = next(s for s in data.segments if s.offset <= offset < s.offset + s.length)
        within = offset - segment.offset
        stripe = within // segment.stripe_bytes
        payload = segment.cell_payload(stripe)
        cells[(segment.segment_id, stripe, (within - stripe * segment.stripe_bytes) // payload)] = payload
    return sum(cells.values())


def shard_read_payload(data: ObjectData, start: int, end: int) -> int:
    """The bytes of the reads ``SegmentReader.shard_reads`` names, less each record's header and CRC."""
    total = 0
    for segment in data.segments:
        lo, hi = max(start, segment.offset) - segment.offset, min(end, segment.offset + segment.length) - segment.offset
        if lo >= hi:
            continue
        reader = SegmentReader(None, segment)
        s0, s1 = stripes_of(segment, lo, hi)
        framing = sum(reader.geometry.record_bytes(s) - segment.cell_payload(s) for s in range(s0, s1))
        total += sum(read.length - framing for read in reader.shard_reads(s0, s1, lo, hi))
    return total


def test_a_range_costs_the_shard_reads_a_reader_makes(seed):
    rng = random.Random(seed)
    for _ in range(40):
        k, cell = rng.choice([2, 4, 6]), rng.choice([1024, 4096])
        lengths = [rng.randrange(1, 5 * k * cell) for _ in range(rng.randrange(1, 3))]
        segments, offset = [], 0
        for number, length in enumerate(lengths):
            segments.append(SegmentLayout(f"{number:032x}", offset, length, Scheme.parse(f"{k}+2"), cell, 0,
                                          tuple(f"{d:016x}" for d in range(k + 2))))  # fmt: skip
            offset += length
        data = ObjectData(offset, segments=segments)
        start = rng.randrange(offset)
        end = rng.randrange(start, offset) + 1
        cost = read_bytes(data, start, end)
        assert cost == shard_read_payload(data, start, end), (lengths, k, cell, start, end)
        assert cost >= cells_touched(data, start, end)
    assert read_bytes(ObjectData(3, inline=b"abc"), 0, 3) == 0
