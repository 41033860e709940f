"""The shard file format (``apollo.storage.shardfile``): header and footer round trips, a CRC32C over every
cell record, and damage refused wherever it is: a flipped bit, a truncated block, a missing magic."""

from __future__ import annotations

import struct

import crc32c
import pytest

from apollo.errors import ChecksumMismatch
from apollo.storage.shardfile import (
    CRC_BYTES,
    FOOTER_MAGIC,
    HEADER_BYTES,
    HEADER_MAGIC,
    decode_footer,
    decode_header,
    encode_footer,
    encode_header,
    footer_start,
    header_padding_is_zero,
    open_record,
    seal_record,
)

INFO = {"bucket": "b", "key": "dir/ключ ✓", "version_id": "v1", "segment_id": "a" * 32, "shard": 3,
        "scheme": "4+2", "cell_size": 262144}  # fmt: skip
FOOTER = {"segment_id": "a" * 32, "length": 9 * 1024**2 + 7, "stripes": 10}


def flipped(data: bytes, at: int, bit: int = 0) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 1 << bit
    return bytes(damaged)


def test_header_round_trips_in_one_zero_padded_block():
    block = encode_header(INFO)
    assert len(block) == HEADER_BYTES and block.startswith(HEADER_MAGIC)
    assert decode_header(block) == INFO
    assert header_padding_is_zero(block)


def test_every_flipped_bit_of_the_header_s_json_or_crc_is_a_checksum_mismatch():
    block = encode_header(INFO)
    (length,) = struct.unpack_from("<I", block, 12)
    for at in range(16, 16 + length + CRC_BYTES):  # the JSON and its CRC32C
        with pytest.raises(ChecksumMismatch, match="header CRC mismatch"):
            decode_header(flipped(block, at, at % 8))
    for at in range(len(HEADER_MAGIC)):
        with pytest.raises(ChecksumMismatch, match="magic missing"):
            decode_header(flipped(block, at))


def test_padding_is_outside_every_crc_so_scrub_looks_at_it_on_its_own():
    block = encode_header(INFO)
    damaged = flipped(block, HEADER_BYTES - 1)
    assert decode_header(damaged) == INFO  # the CRC cannot see it ...
    assert not header_padding_is_zero(damaged)  # ... this check does


def test_a_header_too_big_for_its_block_is_refused_when_written():
    with pytest.raises(ValueError, match="exceeds"):
        encode_header({**INFO, "key": "k" * HEADER_BYTES})


def test_a_truncated_header_is_refused_never_decoded():
    block = encode_header(INFO)
    end = 16 + struct.unpack_from("<I", block, 12)[0] + CRC_BYTES
    assert decode_header(block[:end]) == INFO  # the padding is not needed to decode
    for cut in range(end):
        with pytest.raises(ChecksumMismatch):
            decode_header(block[:cut])


@pytest.mark.parametrize("damage", ["cut-in-json", "length-high-bit"])
def test_a_damaged_header_length_is_a_checksum_mismatch(damage):
    """Not struct.error: check_shard and the repairer catch ChecksumMismatch (an ApolloError), and a scrub pass
    whose step raised anything else retried the same page for ever."""
    block = encode_header(INFO)
    damaged = block[:40] if damage == "cut-in-json" else flipped(block, 15, 7)
    with pytest.raises(ChecksumMismatch):
        decode_header(damaged)


def test_footer_round_trips_and_is_found_at_the_end_of_a_stream():
    footer = encode_footer(FOOTER)
    assert footer.endswith(FOOTER_MAGIC)
    assert decode_footer(footer) == FOOTER
    stream = b"cell records" * 100 + footer
    start = footer_start(stream)
    assert stream[start:] == footer
    assert decode_footer(stream[start:]) == FOOTER
    assert decode_footer(stream[-len(footer) - 5 :]) == FOOTER  # extra bytes in front do not matter


def test_every_flipped_bit_of_the_footer_s_json_or_crc_is_a_checksum_mismatch():
    footer = encode_footer(FOOTER)
    body = len(footer) - 16
    for at in [*range(body), *range(body + 4, body + 8)]:  # the JSON, then its CRC32C
        with pytest.raises(ChecksumMismatch):
            decode_footer(flipped(footer, at, at % 8))
    for at in range(len(footer) - len(FOOTER_MAGIC), len(footer)):
        with pytest.raises(ChecksumMismatch, match="magic missing"):
            decode_footer(flipped(footer, at))


def test_a_stream_without_a_whole_footer_has_none():
    footer = encode_footer(FOOTER)
    assert footer_start(b"") == -1
    assert footer_start(footer[:-1]) == -1  # the magic cut
    assert footer_start(footer[20:]) == -1  # the length names more bytes than there are
    assert footer_start(b"x" * 100) == -1
    for cut in range(len(footer)):  # a footer missing its first bytes is never decoded
        with pytest.raises(ChecksumMismatch):
            decode_footer(footer[cut + 1 :])


def test_a_flipped_bit_in_the_footer_length_field_is_a_checksum_mismatch():
    """A high bit flipped there made the slice start before the buffer; Python clamped it to 0 and the original
    JSON decoded, so a deep scrub passed the damaged shard."""
    footer = encode_footer(FOOTER)
    for bit in range(8, 32):  # any length past the bytes given
        with pytest.raises(ChecksumMismatch):
            decode_footer(flipped(footer, len(footer) - 16 + bit // 8, bit % 8))


def test_a_cell_record_is_its_fragment_and_a_crc32c_of_it():
    fragment = bytes(range(256)) * 5
    record = seal_record(fragment)
    assert record == fragment + crc32c.crc32c(fragment).to_bytes(4, "little")
    opened = open_record(record)
    assert isinstance(opened, memoryview) and bytes(opened) == fragment


def test_every_flipped_bit_of_a_cell_record_is_caught():
    record = seal_record(b"cell payload \x00\x01\x02" * 3)
    for at in range(len(record)):
        for bit in range(8):
            with pytest.raises(ChecksumMismatch, match="cell CRC32C mismatch"):
                open_record(flipped(record, at, bit))


def test_a_truncated_cell_record_is_refused():
    record = seal_record(b"x" * 100)
    for cut in range(1, len(record)):
        with pytest.raises(ChecksumMismatch):
            open_record(record[:cut])
    with pytest.raises(ChecksumMismatch, match="truncated"):
        open_record(record[:CRC_BYTES])


def test_crc32c_is_castagnoli_with_its_check_value():
    """The cell CRC is CRC-32C (iSCSI), so other tools can verify shard files: check value of "123456789"."""
    assert crc32c.crc32c(b"123456789") == 0xE3069283
    assert seal_record(b"123456789")[-4:] == (0xE3069283).to_bytes(4, "little")
