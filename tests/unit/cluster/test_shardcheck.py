"""The scrubber's and the repairer's shard check (``apollo.cluster.shardcheck.check_shard``) against shard files
held in memory: every kind of damage is named, never raised, and a healthy shard passes."""

from __future__ import annotations

import asyncio
import random

from apollo.client.context import ClientContext
from apollo.cluster.shardcheck import check_shard
from apollo.proto.layout import Scheme, SegmentLayout
from apollo.storage.geometry import ShardGeometry
from apollo.storage.shardfile import HEADER_BYTES, encode_footer, encode_header
from apollo.testing.layouts import DRIVES, segment_id
from apollo.testing.shardfiles import MemoryNode, footer_info, header_info, shard_files

LAYOUT = SegmentLayout(segment_id("check"), 0, 3 * 4096 + 100, Scheme.parse("4+2"), 1024, 9, DRIVES[:6])
DATA = random.Random(9).randbytes(LAYOUT.length)
INDEX = 2  # the shard under test
DRIVE = LAYOUT.drives[INDEX]


def check(file: bytes | None, deep: bool = True) -> str | None:
    files = {} if file is None else {(DRIVE, LAYOUT.shard(INDEX)): file}
    ctx = ClientContext(None, {DRIVE: MemoryNode(files)})  # type: ignore[arg-type]  # no metadata needed
    try:
        return asyncio.run(check_shard(ctx, LAYOUT, INDEX, DRIVE, deep=deep))
    finally:
        ctx.cpu.shutdown()


def healthy() -> bytes:
    return shard_files(LAYOUT, DATA)[INDEX]


def with_header(info: dict) -> bytes:
    return encode_header(info) + healthy()[HEADER_BYTES:]


def flipped(data: bytes, at: int, bit: int = 0) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 1 << bit
    return bytes(damaged)


def test_a_healthy_shard_passes_deep_and_shallow():
    assert check(healthy(), deep=True) is None
    assert check(healthy(), deep=False) is None


def test_a_flipped_cell_bit_is_found_by_a_deep_check_only():
    geometry = ShardGeometry(LAYOUT)
    damaged = flipped(healthy(), geometry.span(1, 2)[0] + 40)
    assert check(damaged, deep=True) == "cell CRC32C mismatch in stripe 1"
    assert check(damaged, deep=False) is None  # shallow: header, size and footer only


def test_damage_in_several_stripes_is_counted():
    geometry = ShardGeometry(LAYOUT)
    damaged = healthy()
    for stripe in (0, 2, 3):
        damaged = flipped(damaged, geometry.span(stripe, stripe + 1)[0] + 5)
    assert check(damaged) == "cell CRC32C mismatch in stripe 0 and 2 more"


def test_a_header_naming_another_shard_or_segment_is_reported():
    assert check(with_header({**header_info(LAYOUT, INDEX), "shard": 4})) == f"header names segment " \
        f"{LAYOUT.segment_id} shard 4"  # fmt: skip
    other = "b" * 32
    assert check(with_header({**header_info(LAYOUT, INDEX), "segment_id": other})) == f"header names segment " \
        f"{other} shard {INDEX}"  # fmt: skip


def test_header_damage_is_a_checksum_mismatch_and_dirty_padding_is_found_by_a_deep_check():
    assert check(flipped(healthy(), 30)) == "shard header CRC mismatch"
    assert check(flipped(healthy(), 0)).startswith("shard header magic missing")
    padded = flipped(healthy(), HEADER_BYTES - 10)
    assert check(padded, deep=True) == "header padding is not zero"
    assert check(padded, deep=False) is None


def test_a_truncated_shard_and_a_missing_one_are_reported():
    end = ShardGeometry(LAYOUT).records_end
    assert check(healthy()[:end]) == f"truncated: {end} bytes, cell records alone need {end}"
    assert check(healthy()[: end - 100]).startswith("truncated")
    assert check(None) == "shard file missing"


def test_a_footer_naming_another_length_or_a_damaged_footer_is_reported():
    end = ShardGeometry(LAYOUT).records_end
    wrong = healthy()[:end] + encode_footer({**footer_info(LAYOUT), "length": LAYOUT.length + 1})
    assert check(wrong) == f"footer names segment {LAYOUT.segment_id} length {LAYOUT.length + 1}"
    assert check(flipped(healthy(), end + 3)) == "shard footer CRC mismatch"
    assert check(healthy()[: end + 5]) == "shard footer magic missing"


def test_a_header_length_field_with_a_high_bit_flipped_is_reported_not_raised():
    """decode_header raised struct.error here, which check_shard let escape: the scrub pass step failed and
    retried the same page for ever."""
    assert "runs past its block" in check(flipped(healthy(), 15, 7))
    assert check(healthy()[:12]).startswith("shard header magic missing")  # a file cut inside the header


def test_a_footer_length_field_with_a_high_bit_flipped_is_reported():
    """decode_footer accepted it (the slice start went negative and was clamped to 0): a deep scrub passed it."""
    footer_length_field = len(healthy()) - 16
    assert "runs past" in check(flipped(healthy(), footer_length_field, 7))


def test_bytes_between_the_last_record_and_the_footer_are_reported():
    end = ShardGeometry(LAYOUT).records_end
    assert check(healthy()[:end] + b"junk bytes" + healthy()[end:]) is not None
