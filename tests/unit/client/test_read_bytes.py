"""What a batch counts a range as costing: the payload of the shard reads a reader will ask for, which
covers at least every cell holding a byte of the range (checked against a byte-by-byte count), or, for a
small range within a stripe, exactly its bytes as parts of cells."""

from __future__ import annotations

import random

from apollo.client.node_batches import read_bytes
from apollo.client.reader import SegmentReader, cell_parts, needed_shards, stripes_of
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
    """The bytes the reads ``SegmentReader.shard_reads`` names answer with: a part whole, a record less its
    header and CRC."""
    total = 0
    for segment in data.segments:
        lo, hi = max(start, segment.offset) - segment.offset, min(end, segment.offset + segment.length) - segment.offset
        if lo >= hi:
            continue
        reader = SegmentReader(None, segment)
        s0, s1 = stripes_of(segment, lo, hi)
        framing = sum(reader.geometry.record_bytes(s) - segment.cell_payload(s) for s in range(s0, s1))
        reads = reader.shard_reads(s0, s1, lo, hi)
        total += sum(read.answer_bytes if read.part else read.length - framing for read in reads)
    return total


def parts_read(data: ObjectData, start: int, end: int) -> bool:
    return any(read.part for segment in data.segments for read in _reads(segment, start, end))


def _reads(segment: SegmentLayout, start: int, end: int) -> list:
    lo, hi = max(start, segment.offset) - segment.offset, min(end, segment.offset + segment.length) - segment.offset
    if lo >= hi:
        return []
    return SegmentReader(None, segment).shard_reads(*stripes_of(segment, lo, hi), lo, hi)


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
        assert cost >= end - start
        if not parts_read(data, start, end):
            assert cost >= cells_touched(data, start, end)
    assert read_bytes(ObjectData(3, inline=b"abc"), 0, 3) == 0


def test_the_parts_of_cells_a_small_range_reads_are_its_bytes_in_order(seed):
    """``cell_parts`` against a stripe laid out byte by byte: the parts, cell after cell, are the range."""
    rng = random.Random(seed)
    seen_parts = 0
    for _ in range(200):
        k, cell = rng.choice([2, 4, 6]), rng.choice([1024, 4096])
        length = rng.randrange(1, 3 * k * cell)
        segment = SegmentLayout("0" * 32, 0, length, Scheme.parse(f"{k}+2"), cell, 0,
                                tuple(f"{d:016x}" for d in range(k + 2)))  # fmt: skip
        start = rng.randrange(length)
        end = min(length, start + rng.choice([1, 100, cell // 2, cell, 3 * cell]))
        s0, s1 = stripes_of(segment, start, end)
        parts = cell_parts(segment, s0, s1, start, end)
        if parts is None:
            continue
        seen_parts += 1
        base, payload = s0 * segment.stripe_bytes, segment.cell_payload(s0)
        cells = needed_shards(segment, s0, s1, start, end)
        covered = [base + index * payload + offset for index, (a, b) in zip(cells, parts, strict=True)
                   for offset in range(a, b)]  # fmt: skip
        assert covered == list(range(start, end)), (k, cell, length, start, end)
        assert 2 * (end - start) <= len(cells) * payload
    assert seen_parts > 20
